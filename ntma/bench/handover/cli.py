"""The `ntma bench` options of the handover benchmark, their checks, and what it writes."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .scenarios import SCENARIO_NAMES
from .settings import DEFAULT_DOWN_FOR_S, DEFAULT_RUN_DIR, DEFAULT_RUNS

#: Options that only mean something with --handover (dest -> the flag).
ONLY_WITH_HANDOVER = {
    "runs": "--runs",
    "scenarios": "--scenarios",
    "down_for": "--down-for",
    "json": "--json",
    "markdown": "--markdown",
}


def scenario_list(text: str) -> list[str]:
    """ "a,b" -> ["a", "b"]; an unknown name is an argparse error naming the choices."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if not names or unknown:
        what = f"unknown scenario {unknown[0]!r}" if unknown else "no scenario named"
        raise argparse.ArgumentTypeError(f"{what}; choose from {', '.join(SCENARIO_NAMES)}")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 600:
        raise argparse.ArgumentTypeError("must be 0 to 600 seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("handover (--handover, on the namespace lab, root)")
    group.add_argument(
        "--handover",
        action="store_true",
        help="measure handovers instead: moves, restarts and NAT resets under traffic",
    )
    group.add_argument(
        "--runs", type=_positive_int, default=None, help=f"runs per scenario ({DEFAULT_RUNS})"
    )
    group.add_argument(
        "--scenarios",
        type=scenario_list,
        default=None,
        metavar="A,B,...",
        help="scenarios to run, comma-separated (default all): " + ", ".join(SCENARIO_NAMES),
    )
    group.add_argument(
        "--down-for",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=f"break-before-make: seconds without a network ({DEFAULT_DOWN_FOR_S:g})",
    )
    group.add_argument("--json", type=Path, default=None, help="JSON file (<out>/handover.json)")
    group.add_argument(
        "--markdown", type=Path, default=None, help="markdown file (<out>/handover.md)"
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Handover options without --handover, or --handover with --lab, are errors; the
    defaults are filled in."""
    if not args.handover:
        given = [flag for dest, flag in ONLY_WITH_HANDOVER.items() if getattr(args, dest)]
        if given:
            parser.error(f"{given[0]} needs --handover")
        return
    if args.lab:
        parser.error("--handover and --lab are separate runs (both build the lab)")
    args.runs = args.runs or DEFAULT_RUNS
    args.down_for = DEFAULT_DOWN_FOR_S if args.down_for is None else args.down_for
    args.json = args.json or args.out / "handover.json"
    args.markdown = args.markdown or args.out / "handover.md"
    args.run_dir = args.run_dir or DEFAULT_RUN_DIR


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def run_from_args(args: argparse.Namespace) -> int:
    from .markdown import format_handover_report
    from .run import run_handover_bench

    if os.geteuid() != 0:
        print("ntma bench: error: --handover builds the lab; run as root", file=sys.stderr)
        return 2
    result = run_handover_bench(
        args.run_dir, runs=args.runs, scenarios=args.scenarios, down_for=args.down_for
    )
    md = "# ntma handover benchmark\n\n" + format_handover_report(result)
    for path in (args.json, args.markdown):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine(), "handover": result}, indent=2) + "\n")
    args.markdown.write_text(md)
    print(md)
    print(f"written: {args.json}, {args.markdown} ({result['elapsed_s']:.0f} s)")
    return 0
