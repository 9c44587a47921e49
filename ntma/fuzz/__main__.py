"""python -m ntma.fuzz [--target NAME ...] [--inputs N] [--seed S] [--seconds T]

Prints one row per target (inputs, distinct crashes, slowest input) and then each crash
with a command that reproduces it. Exit status 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from .catalog import all_targets, smoke_targets
from .runner import format_crashes, format_table, replay, run_target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ntma.fuzz", description="Fuzz ntma's decoders and machines in process."
    )
    parser.add_argument("--target", action="append", help="a target name or prefix (repeatable)")
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=0, help="mutation engine seed")
    parser.add_argument("--seconds", type=float, help="time limit per target")
    parser.add_argument("--smoke", action="store_true", help="only the targets CI runs")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument(
        "--repro",
        nargs="+",
        metavar="ARG",
        help="TARGET HEX [HEX ...]: feed the inputs, in order, to a fresh target",
    )
    args = parser.parse_args(argv)
    targets = smoke_targets() if args.smoke else all_targets()
    if args.list:
        for t in targets.values():
            print(f"{t.name:32} {'smoke' if t.smoke else '     '}  {t.doc}")
        return 0
    if args.repro:
        if len(args.repro) < 2:
            parser.error("--repro takes a target and at least one hex input")
        inputs = [bytes.fromhex(text) for text in args.repro[1:]]
        exc = replay(all_targets()[args.repro[0]], inputs)
        if exc is None:
            print("no crash")
            return 0
        traceback.print_exception(exc)
        return 1
    if args.target:
        targets = {n: t for n, t in targets.items() if any(n.startswith(p) for p in args.target)}
        if not targets:
            parser.error(f"no target matches {args.target}; see --list")
    results = []
    for t in targets.values():
        results.append(run_target(t, inputs=args.inputs, seed=args.seed, seconds=args.seconds))
        print(
            f"{t.name}: {results[-1].inputs} inputs, {len(results[-1].crashes)} crashes",
            file=sys.stderr,
            flush=True,
        )
    print(format_table(results))
    crashes = format_crashes(results)
    if crashes:
        print("\n" + crashes)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
