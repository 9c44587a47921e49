"""The handover benchmark's markdown section: one table of every scenario (ntma's and
wireguard-go's rows together), the targets' legend, the runs that failed, the notes."""

from __future__ import annotations

from typing import Any

from .settings import TARGETS


def fmt_seconds(value: float | None, missing: str = "–") -> str:
    """12 ms, 0.4 ms, 1.25 s; `missing` for None."""
    if value is None:
        return missing
    if value >= 1.0:
        return f"{value:.2f} s"
    ms = value * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _stat(summary: dict[str, Any], key: str, missing: str) -> str:
    if not summary.get("n"):
        return "–"
    return fmt_seconds(summary.get(key), missing)


def _verdict(check: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "–"}[check]


def _cell(text: object) -> str:
    return str(text).replace("|", "/")


HEADER = [
    "| scenario | what | tool | runs | gap median | gap p99 | gap target "
    "| after link up p99 | re-registration median | re-registration p99 | TCP survived |",
    "|---|---|---|--:|--:|--:|---|--:|--:|--:|---|",
]


def scenario_row(name: str, entry: dict[str, Any]) -> str:
    head = [name, _cell(entry.get("what", "")), entry.get("tool", "")]
    if "error" in entry or "skipped" in entry:
        why = entry.get("error") or f"skipped: {entry['skipped']}"
        return "| " + " | ".join([*head, _cell(why)]) + " |" + " |" * 7
    s, target = entry["summary"], entry["target"]
    gap, rereg, checks = s["gap_s"], s["reregistration_s"], s["checks"]
    runs = str(s["runs"]) if s["measured"] == s["runs"] else f"{s['measured']} of {s['runs']}"
    if checks.get("gap_judged_on") == "after_link_up":
        limit = target.get("after_link_up_s")
        goal = f"after link up ≤ {fmt_seconds(limit)} ({target['class']})" if limit else "–"
    else:
        limit = target.get("gap_s")
        goal = f"≤ {fmt_seconds(limit)} ({target['class']})" if limit is not None else "–"
    no_dc = entry.get("tool") != "ntma"
    cells = [
        runs,
        _stat(gap, "median", "no recovery"),
        _stat(gap, "p99", "no recovery"),
        f"{goal}: {_verdict(checks['gap'])}",
        _stat(s.get("after_link_up_s", {}), "p99", "no recovery"),
        "n/a (no DC)" if no_dc else _stat(rereg, "median", "none"),
        "n/a (no DC)" if no_dc else _stat(rereg, "p99", "none"),
        f"{s['tcp_survived']}/{s['measured']}: {_verdict(checks['tcp'])}",
    ]
    return "| " + " | ".join([*head, *cells]) + " |"


def _failed_runs(scenarios: dict[str, Any]) -> list[str]:
    lines = []
    for name, entry in scenarios.items():
        for run in entry.get("runs", []):
            tcp = run.get("tcp", {})
            if "error" in run:
                lines.append(f"- {name} run {run['run']}: {run['error']}")
            elif tcp and not tcp.get("survived"):
                lines.append(f"- {name} run {run['run']}: TCP {tcp.get('why', 'failed')}")
            if "return_error" in run:
                lines.append(f"- {name} after run {run['run']}: {run['return_error']}")
    return lines


def format_handover_report(result: dict[str, Any]) -> str:
    params = result.get("parameters", {})
    versions = result.get("versions", {})
    scenarios = result.get("scenarios", {})
    window = params.get("window_s", "?")
    lines = [
        "## Handover: moves, restarts and NAT resets under traffic",
        "",
        f"{params.get('runs', '?')} runs per scenario, each on a lab of its own; a "
        f"{params.get('pps', 100):g} pps UDP echo stream and a TCP download across every "
        f"event; no recovery = no echo within {window} s of the event (break-before-make: "
        f"plus twice the {params.get('down_for_s', '?')} s without a network). p99 is the "
        "worst run (nearest rank, fewer than 100 runs). Kernel "
        f"{versions.get('kernel', '?')}, {versions.get('cpus', '?')} CPUs, wireguard-go "
        f"{versions.get('wireguard-go') or '?'}.",
        "",
        *HEADER,
        *(scenario_row(name, entry) for name, entry in scenarios.items()),
        "",
        "Gap targets: "
        + "; ".join(
            f"{label}: {why}" + (f" (≤ {fmt_seconds(limit)})" if limit else "")
            for limit, label, why in TARGETS.values()
        )
        + ". Moves are judged on the silence after the new link is up (the lab's own link "
        "switch, tearing the old link down and building the new one with `ip`, is the "
        "network's time, not ntma's; the gap from the move's start is beside it); restarts "
        "and NAT resets on the whole gap. TCP: survives every run.",
    ]
    failed = _failed_runs(scenarios)
    if failed:
        lines += ["", "Runs that failed:", "", *failed]
    lines += ["", *(f"- {n}" for n in result.get("notes", []))]
    return "\n".join(lines).rstrip() + "\n"
