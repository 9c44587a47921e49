"""What the runs give, per scenario: order statistics, the targets and their checks, and
the end of a handover gap. Pure functions over numbers and result dicts (tested without
root).

A value of None is a run that never got there (no echo after the event: "no recovery";
no re-registration seen). Order statistics count such a run as larger than any figure, so
a median or p99 that lands on one is None too, with `missing` saying how many there were.
p99 is the nearest-rank 99th percentile: with fewer than 100 runs, the largest value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ...lab import gap_after
from .scenarios import Scenario
from .settings import TARGETS


def _order(values: Sequence[float | None]) -> list[float]:
    return sorted(math.inf if v is None else float(v) for v in values)


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def median(values: Sequence[float | None]) -> float | None:
    ordered = _order(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return _finite(ordered[mid])
    return _finite((ordered[mid - 1] + ordered[mid]) / 2)


def nearest_rank(values: Sequence[float | None], q: float) -> float | None:
    """The q-th percentile by nearest rank (the ceil(q/100 * n)-th smallest)."""
    ordered = _order(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return _finite(ordered[rank - 1])


def summarise(values: Sequence[float | None]) -> dict[str, Any]:
    return {
        "n": len(values),
        "missing": sum(v is None for v in values),
        "median": _round(median(values)),
        "p99": _round(nearest_rank(values, 99)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def gap_target(scenario: Scenario, down_for: float, keepalive_s: float | None) -> dict[str, Any]:
    """The gap limit that applies to `scenario` (seconds, None when unknown) and why."""
    limit, label, why = TARGETS[scenario.target]
    if scenario.target == "rebinding":
        limit = keepalive_s
        why = f"{why}: {keepalive_s:g} s on this lab" if keepalive_s else why
    after_link_up = limit  # a move is judged on the silence after its new link is up
    if scenario.break_before_make and limit is not None:
        limit = round(limit + down_for, 4)
        why = f"{why}, after {down_for:g} s without a network"
    return {"gap_s": limit, "after_link_up_s": after_link_up, "class": label, "why": why}


def check_gap(summary: dict[str, Any], limit: float | None) -> bool | None:
    """Every run recovered and the worst (p99) within the limit; None without a limit or
    without a run."""
    if limit is None or not summary["n"]:
        return None
    return summary["missing"] == 0 and summary["p99"] is not None and summary["p99"] <= limit


def check_tcp(survived: int, runs: int) -> bool | None:
    """The TCP transfer survived in every run."""
    return None if not runs else survived == runs


def handover_gap(replies: Sequence[float], t: float, end: float, interval: float) -> float | None:
    """`gap_after(replies, t)`, or None when the stream never resumed: when its longest
    silence is the one still running at `end` (the stream stopped), even if a few echoes
    came back after t before the path broke. A trailing silence up to a few intervals is
    the stream stopping, not an outage."""
    gap = gap_after(replies, t)
    trailing = end - max(replies[-1] if replies else t, t)
    if gap is None or (trailing > gap and trailing > 5 * interval):
        return None
    return gap


def resumed_at(replies: Sequence[float], t: float) -> float | None:
    """When the silence `gap_after(replies, t)` measures ended: the first echo after it."""
    gap = gap_after(replies, t)
    if gap is None:
        return None
    previous = t
    for r in replies:
        if r > t and math.isclose(r - previous, gap, abs_tol=1e-9):
            return r
        previous = r
    return None


def summarise_scenario(
    scenario: Scenario, runs: list[dict[str, Any]], target: dict[str, Any]
) -> dict[str, Any]:
    """Statistics of the measured runs (those without an error) and the targets' checks."""
    measured = [r for r in runs if "error" not in r]
    gaps = summarise([r["gap_s"] for r in measured])
    rereg = summarise([r.get("reregistration_s") for r in measured])
    moved = [r for r in measured if "resumed_after_link_up_s" in r]
    after_up = summarise([r["resumed_after_link_up_s"] for r in moved])
    survived = sum(bool(r.get("tcp", {}).get("survived")) for r in measured)
    return {
        "runs": len(runs),
        "measured": len(measured),
        "gap_s": gaps,
        "after_link_up_s": after_up,
        "reregistration_s": rereg,
        "tcp_survived": survived,
        "checks": {
            # A move's own link switch (the lab's `ip` commands tearing the old link down
            # and building the new one) is the network's time, not ntma's: moves are
            # judged on the silence after the new link is up; the rest on the whole gap.
            "gap": check_gap(after_up, target.get("after_link_up_s"))
            if moved
            else check_gap(gaps, target["gap_s"]),
            "gap_judged_on": "after_link_up" if moved else "gap",
            "tcp": check_tcp(survived, len(measured)),
        },
    }
