"""`ntma bench`: run the benchmarks, write JSON, a markdown table and a PNG plot.

In process (always): one benchmark per stage, and the whole pipeline with fake I/O.
With --lab: the end-to-end measurements on the namespace lab (needs root), including
the paper's Table 2 and the userspace tunnels a user would pick instead. With --handover
(instead): moves, restarts and NAT resets under traffic on the lab (`bench/handover/`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from ..observe.log import configure_logging
from .handover.cli import add_arguments as add_handover_arguments
from .handover.cli import check_arguments as check_handover_arguments
from .handover.cli import run_from_args as run_handover
from .handover.settings import DEFAULT_RUN_DIR as HANDOVER_RUN_DIR
from .lab.settings import SETUPS as LAB_SETUPS
from .pipeline import run_pipeline_benchmark
from .stages import StageResult, run_stage_benchmarks

LAB_RUN_DIR = Path("/run/ntma-bench-lab")


def stage_table(results: list[dict]) -> str:
    lines = [
        "| stage | what | median ns/packet | p99 ns/packet | packets/s (one core) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['stage']} | {r['what']} | {r['median_ns']:,} | {r['p99_ns']:,} | "
            f"{r['pps_one_core']:,} |"
        )
    return "\n".join(lines)


def pipeline_table(p: dict) -> str:
    light, sat = p["light_load"], p["saturation"]
    hops = p["channel_hop_ns"] * p["hops_on_data_path"]
    return "\n".join(
        [
            "| measure | value |",
            "|---|---:|",
            f"| light load: latency median (one packet in flight) | "
            f"{light['latency_median_ns'] / 1000:.1f} us |",
            f"| light load: latency p99 | {light['latency_p99_ns'] / 1000:.1f} us |",
            f"| saturation: packets/s ({sat['packet_bytes']} B, batches of {sat['batch']}) | "
            f"{sat['packets_per_s']:,} ({sat['packets_per_s'] * sat['packet_bytes'] * 8 / 1e9:.2f}"
            " Gbit/s) |",
            f"| one stage-to-stage hop, light load (ntma.stages.hop) | "
            f"{p['channel_hop_ns'] / 1000:.1f} us |",
            f"| the same hop through trio.open_memory_channel | "
            f"{p['trio_memory_channel_hop_ns'] / 1000:.1f} us |",
            f"| one pass of Trio's run loop (bare checkpoint: the floor of a hop) | "
            f"{p['scheduler_pass_ns'] / 1000:.1f} us |",
            f"| hops on the data path x hop cost (one packet per batch) | {hops / 1000:.1f} us |",
            f"| channel sizes | data {p['channel_sizes']['data_batches']} batches, signalling "
            f"{p['channel_sizes']['signalling_batches']}, batch up to "
            f"{p['channel_sizes']['batch_max']} |",
        ]
    )


def lab_setup_list(text: str) -> list[str]:
    """ "ntma,ntma-v6" -> ["ntma", "ntma-v6"]; an unknown name is an argparse error naming
    the choices."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in LAB_SETUPS]
    if not names or unknown:
        what = f"unknown setup {unknown[0]!r}" if unknown else "no setup named"
        raise argparse.ArgumentTypeError(f"{what}; choose from {', '.join(LAB_SETUPS)}")
    return names


def plot_stage_latencies(results: list[StageResult], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r.stage}\n{r.what[:28]}" for r in results]
    ax.boxplot([[s / 1000 for s in r.samples_ns] for r in results], showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("us per packet (log)")
    ax.set_title("ntma: per-stage cost per packet, in process (box: quartiles, whiskers 1.5 IQR)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntma bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="folder for bench.json, bench.md, stages.png",
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="time per benchmark")
    parser.add_argument(
        "--lab", action="store_true", help="also measure end to end on the namespace lab (root)"
    )
    parser.add_argument(
        "--setups",
        type=lab_setup_list,
        default=None,
        metavar="A,B,...",
        help="with --lab: the setups to measure, comma-separated (default all; run in their "
        "own order): " + ", ".join(LAB_SETUPS),
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help=f"the lab's run directory ({LAB_RUN_DIR}; --handover: one per scenario under "
        f"{HANDOVER_RUN_DIR})",
    )
    add_handover_arguments(parser)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.setups is not None and not args.lab:
        parser.error("--setups needs --lab")
    check_handover_arguments(parser, args)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.handover:
        configure_logging("warning", json=True)
        return run_handover(args)
    configure_logging("warning", json=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stage_results = run_stage_benchmarks(args.seconds)
    stages = [r.summary() for r in stage_results]
    pipeline = run_pipeline_benchmark(max(1.0, args.seconds * 2))
    report = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "stages": stages,
        "pipeline": pipeline,
    }
    md = [
        "# ntma benchmark",
        "",
        "## Per stage, in process",
        "",
        stage_table(stages),
        "",
        "## Whole pipeline, in process (fake TUN and UDP)",
        "",
        pipeline_table(pipeline),
    ]
    if plot_stage_latencies(stage_results, args.out / "stages.png"):
        md += ["", "![per-stage latency](stages.png)"]
    if args.lab:
        from .lab import format_lab_report, run_lab_bench

        seconds = max(3.0, args.seconds * 5)
        report["lab"] = run_lab_bench(
            args.run_dir or LAB_RUN_DIR, seconds=seconds, setups=args.setups
        )
        md += ["", format_lab_report(report["lab"])]
    (args.out / "bench.json").write_text(json.dumps(report, indent=2))
    (args.out / "bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"\nwritten: {args.out / 'bench.json'}, {args.out / 'bench.md'}")
    return 0
