"""Per-stage timing spans and counters, summarised per interval (never per packet).

Each stage owns one StageStats. Time in stage is recorded once per batch as
ns per packet, into a bounded ring, so p50/p99 cost O(1) memory.
"""

from __future__ import annotations

import time
from collections import Counter

import structlog
import trio
from trio_util import periodic

RING = 4096


class StageStats:
    __slots__ = ("name", "packets", "bytes", "batches", "drops", "counters", "_ring", "_pos")

    def __init__(self, name: str) -> None:
        self.name = name
        self.packets = 0
        self.bytes = 0
        self.batches = 0
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()  # notable events that are not drops
        self._ring: list[int] = []
        self._pos = 0

    def record(self, packets: int, nbytes: int, started_ns: int, ended_ns: int = 0) -> None:
        """One batch done: packets and bytes through, between two perf_counter_ns() stamps
        (ended_ns defaults to now). Stages pass ended_ns and call this after handing the
        batch on; a hand-off does not yield, so at light load this still runs before the
        next stage does, and it is kept to a few additions."""
        if packets <= 0:
            return
        self.packets += packets
        self.bytes += nbytes
        self.batches += 1
        per_packet = ((ended_ns or time.perf_counter_ns()) - started_ns) // packets
        if len(self._ring) < RING:
            self._ring.append(per_packet)
        else:
            self._ring[self._pos] = per_packet
            self._pos = (self._pos + 1) % RING

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] += n

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] += n

    def samples_ns(self) -> list[int]:
        return list(self._ring)

    def summary(self) -> dict:
        return {
            "stage": self.name,
            "packets": self.packets,
            "bytes": self.bytes,
            "batches": self.batches,
            "drops": dict(self.drops),
            "counters": dict(self.counters),
            "p50_ns": _quantile(self._ring, 0.50),
            "p99_ns": _quantile(self._ring, 0.99),
        }


class PathStats:
    """Latency along a path of several stages (e.g. GN frame in -> handed to the tunnel),
    from a batch's arrival stamp to the moment the path's last stage is done with it.
    Paths that end in a send also keep the time spent in that final send call (the
    kernel's share: on a lab of namespaces it includes the receiving side's stack)."""

    __slots__ = ("name", "count", "total_ns", "_ring", "_send_ring", "_pos")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.total_ns = 0
        self._ring: list[int] = []
        self._send_ring: list[int] = []
        self._pos = 0

    def record(self, latency_ns: int, packets: int = 1, send_ns: int = -1) -> None:
        """packets that shared one batch share its latency (one ring sample); send_ns is
        the time in the path's final send call, -1 for a path that ends elsewhere."""
        self.count += packets
        self.total_ns += latency_ns * packets
        if len(self._ring) < RING:
            self._ring.append(latency_ns)
            self._send_ring.append(send_ns)
        else:
            self._ring[self._pos] = latency_ns
            self._send_ring[self._pos] = send_ns
            self._pos = (self._pos + 1) % RING

    def samples_ns(self) -> list[int]:
        return list(self._ring)

    def summary(self) -> dict:
        out = {
            "path": self.name,
            "count": self.count,
            "mean_ns": self.total_ns // self.count if self.count else 0,
            "p50_ns": _quantile(self._ring, 0.50),
            "p99_ns": _quantile(self._ring, 0.99),
        }
        sends = [ns for ns in self._send_ring if ns >= 0]
        if sends:
            out["send_p50_ns"] = _quantile(sends, 0.50)
        return out


def _quantile(samples: list[int], q: float) -> int:
    if not samples:
        return 0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Spans:
    """All stages' stats and all paths' latencies for one pipeline, by name."""

    def __init__(self) -> None:
        self.stages: dict[str, StageStats] = {}
        self.paths: dict[str, PathStats] = {}

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats(name))

    def path(self, name: str) -> PathStats:
        return self.paths.setdefault(name, PathStats(name))

    def summaries(self) -> list[dict]:
        return [s.summary() for s in self.stages.values()]

    def log_summaries(self, log: structlog.typing.FilteringBoundLogger, event: str) -> None:
        for summary in self.summaries():
            log.info(event, **summary)
        path_event = "path_stats_final" if event.endswith("_final") else "path_stats"
        for path in self.paths.values():
            if path.count:
                log.info(path_event, **path.summary())


async def run_stats_logger(
    spans: Spans, interval_s: float, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    log = structlog.get_logger().bind(task="stats")
    task_status.started()
    # periodic() keeps a fixed rate (the time spent logging does not stretch the interval)
    # and yields once at the start, when there is nothing to summarise yet.
    async for elapsed, _ in periodic(interval_s):
        if elapsed:
            spans.log_summaries(log, "stage_stats")
