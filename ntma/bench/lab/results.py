"""What a run gives: Table 2 from the adapter's path spans, the ratios between setups, the
tools' versions. Pure functions over logs and result dicts (tested without root).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
from pathlib import Path
from typing import Any

from ...lab import LabError, LogEvent, events_named, run
from ..paper import PAPER_TABLE_2_US, TABLE2_PATHS
from .settings import PEERS, TOOLS


def latest_paths(log: Path, offset: int = 0) -> dict[str, LogEvent]:
    """The adapter's last path_stats (or path_stats_final) event per Table 2 path, logged
    after `offset` (complete lines only)."""
    latest: dict[str, LogEvent] = {}
    for event in events_named(log, "path_stats", "path_stats_final", offset=offset):
        if event.get("path") in TABLE2_PATHS:
            latest[event["path"]] = event
    return latest


def read_table2(log: Path, offset: int = 0) -> dict[str, Any]:
    """The adapter's last path_stats event per path (logged after `offset`), in
    microseconds, beside the paper. p50/p99 are over the path's last 4096 samples (batches),
    the mean over every packet so far."""
    latest = latest_paths(log, offset)
    paths: dict[str, Any] = {}
    for name in TABLE2_PATHS:
        event = latest.get(name)
        ours = None
        if event is not None:
            ours = {
                "count": event.get("count"),
                "mean_us": _us(event.get("mean_ns")),
                "median_us": _us(event.get("p50_ns")),
                "p99_us": _us(event.get("p99_ns")),
            }
            if event.get("send_p50_ns") is not None:  # the path ends in a send call
                ours["send_median_us"] = _us(event["send_p50_ns"])
        paths[name] = {"paper_us": PAPER_TABLE_2_US[name], "ours": ours}
    out: dict[str, Any] = {"paths": paths, "log": str(log)}
    missing = [n for n in TABLE2_PATHS if latest.get(n) is None]
    if len(missing) == len(TABLE2_PATHS):
        out["note"] = "the adapter logged no path_stats events"
    elif missing:
        out["note"] = f"no path_stats for {', '.join(missing)}"
    return out


TABLE2_WINDOWS = (
    "ours: the adapter's final path_stats (at shutdown: mean over every packet of the run, "
    "p50/p99 over each path's last 4096 batches, i.e. mostly under iperf3 load); "
    "ours_before_bulk: its path_stats logged after the RTT probe and the ARP requests, "
    "before iperf3 (one packet at a time)"
)


def merge_light(table2: dict[str, Any], light: dict[str, Any] | None) -> None:
    """Put the before-bulk snapshot beside the final figures, path by path."""
    for name, row in table2["paths"].items():
        row["ours_before_bulk"] = (light or {}).get("paths", {}).get(name, {}).get("ours")
    table2["windows"] = TABLE2_WINDOWS


def _us(ns: Any) -> float | None:
    return round(ns / 1000, 1) if isinstance(ns, int | float) else None


def _measured(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and "error" not in entry and "skipped" not in entry and "tcp_bps" in entry


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b > 0:
        return round(a / b, 3)
    return None


def compute_ratios(setups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each measured setup gets `ratios`; returns the best peer per measure and the plain
    reference. Throughput ratios are this / plain and this / best peer (max of PEERS); RTT
    overhead is median - plain median, compared with the best (smallest) peer overhead."""
    plain = setups.get("plain") if _measured(setups.get("plain")) else None
    peers = {n: setups[n] for n in PEERS if _measured(setups.get(n))}
    best: dict[str, Any] = {}
    for direction in ("forward", "reverse"):
        values = {n: e["tcp_bps"][direction] for n, e in peers.items()}
        values = {n: v for n, v in values.items() if v}
        if values:
            name = max(values, key=lambda n: values[n])
            best[f"tcp_{direction}"] = {"setup": name, "bps": values[name]}
    plain_median = plain["rtt_us"]["median"] if plain else None
    overheads = {}
    for name, entry in setups.items():
        if _measured(entry) and plain_median is not None and entry["rtt_us"]["median"]:
            overheads[name] = round(entry["rtt_us"]["median"] - plain_median, 1)
    peer_overheads = {n: overheads[n] for n in peers if n in overheads}
    if peer_overheads:
        name = min(peer_overheads, key=lambda n: peer_overheads[n])
        best["rtt_overhead"] = {"setup": name, "us": peer_overheads[name]}
    for name, entry in setups.items():
        if not _measured(entry):
            continue
        tcp = entry["tcp_bps"]
        best_overhead = best.get("rtt_overhead", {}).get("us")
        entry["ratios"] = {
            "tcp_vs_plain": {
                d: _ratio(tcp[d], plain["tcp_bps"][d] if plain else None)
                for d in ("forward", "reverse")
            },
            "tcp_vs_best_peer": {
                d: _ratio(tcp[d], best.get(f"tcp_{d}", {}).get("bps"))
                for d in ("forward", "reverse")
            },
            "rtt_overhead_us": overheads.get(name),
            "best_peer_rtt_overhead_us": best_overhead,
            "rtt_overhead_vs_best_peer": _ratio(overheads.get(name), best_overhead),
        }
    return {"best_peer": best, "peers": list(PEERS), "plain_rtt_median_us": plain_median}


def tool_version(*cmd: str) -> str | None:
    """The version number in the first line `cmd` prints ("1.0.36"), None if not installed."""
    if shutil.which(cmd[0]) is None:
        return None
    with contextlib.suppress(LabError):
        proc = run(*cmd, check=False, timeout=10)
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        first = lines[0].strip() if lines else ""
        found = re.search(r"\bv?(\d+(?:\.\d+)+)", first)
        return found.group(1) if found else first or None
    return None


def tool_versions() -> dict[str, Any]:
    return {
        "tinc": tool_version("tincd", "--version"),
        "wireguard-go": tool_version("wireguard-go", "--version"),
        "wireguard-tools": tool_version("wg", "--version"),
        "openvpn": tool_version("openvpn", "--version"),
        "iperf3": tool_version("iperf3", "--version"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpus_used": sorted(os.sched_getaffinity(0)),  # e.g. [1] under `taskset -c 1`
    }


def missing_tools(setup: str) -> list[str]:
    return [t for t in TOOLS[setup] if shutil.which(t) is None]
