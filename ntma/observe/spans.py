"""Per-stage timing spans and counters, summarised per interval (never per packet).

Each stage owns one StageStats. Time in stage is recorded once per batch as
ns per packet, into a bounded ring, so p50/p99 cost O(1) memory, and into a fixed-bucket
histogram that only grows, which is what Prometheus scrapes (observe/metrics.py): a
bit_length, an index and two additions per batch (~70 ns), never per packet.
"""

from __future__ import annotations

import time
from collections import Counter

import structlog
import trio
from trio_util import periodic

RING = 4096
# Latency histograms count by bit length: bucket b holds the ns values in [2**(b-1), 2**b),
# so adding one is an int.bit_length() and an index (~40 ns; a bisect over chosen bounds
# costs twice that). Scrapes report bounds 2**b - 1 ns for b in EXPORTED_BITS: 1 us .. 17 ms.
HISTOGRAM_SLOTS = 64  # every non-negative int64 fits
EXPORTED_BITS = range(10, 25)


class Histogram:
    """Counts per power-of-two bucket of ns, and their sum, since the start (a Prometheus
    histogram's raw numbers: observe/metrics.py makes them cumulative at scrape time)."""

    __slots__ = ("buckets", "sum_ns")

    def __init__(self) -> None:
        self.buckets = [0] * HISTOGRAM_SLOTS
        self.sum_ns = 0

    def observe(self, ns: int) -> None:
        self.buckets[ns.bit_length()] += 1
        self.sum_ns += ns

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, observations at or below it) for EXPORTED_BITS, then
        (inf, all of them)."""
        out, below = [], sum(self.buckets[: EXPORTED_BITS[0]])
        for bits in EXPORTED_BITS:
            below += self.buckets[bits]
            out.append(((2**bits - 1) / 1e9, below))
        return [*out, (float("inf"), sum(self.buckets))]


class StageStats:
    __slots__ = (
        "name",
        "packets",
        "bytes",
        "batches",
        "drops",
        "counters",
        "events",
        "latency",
        "_ring",
        "_pos",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.packets = 0
        self.bytes = 0
        self.batches = 0
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()  # notable events that are not drops
        self.events: Counter[str] = Counter()  # its machine's events, by the name they log
        self.latency = Histogram()  # ns per packet, one observation per batch
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
        latency = self.latency  # Histogram.observe, inlined: this runs once per batch
        latency.buckets[per_packet.bit_length()] += 1
        latency.sum_ns += per_packet
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
        out = {
            "stage": self.name,
            "packets": self.packets,
            "bytes": self.bytes,
            "batches": self.batches,
            "drops": dict(self.drops),
            "counters": dict(self.counters),
            "p50_ns": _quantile(self._ring, 0.50),
            "p99_ns": _quantile(self._ring, 0.99),
        }
        if self.events:
            out["events"] = dict(self.events)
        return out


class PathStats:
    """Latency along a path of several stages (e.g. GN frame in -> handed to the tunnel),
    from a batch's arrival stamp to the moment the path's last stage is done with it.
    Paths that end in a send also keep the time spent in that final send call (the
    kernel's share: on a lab of namespaces it includes the receiving side's stack)."""

    __slots__ = ("name", "count", "total_ns", "latency", "_ring", "_send_ring", "_pos")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.total_ns = 0
        self.latency = Histogram()  # one observation per batch
        self._ring: list[int] = []
        self._send_ring: list[int] = []
        self._pos = 0

    def record(self, latency_ns: int, packets: int = 1, send_ns: int = -1) -> None:
        """packets that shared one batch share its latency (one ring sample); send_ns is
        the time in the path's final send call, -1 for a path that ends elsewhere."""
        self.count += packets
        self.total_ns += latency_ns * packets
        self.latency.observe(latency_ns)
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
    return quantiles(samples, (q,))[0]


def quantiles(samples: list[int], qs: tuple[float, ...]) -> list[int]:
    """The samples at each quantile in qs (0 when there are none), sorting once."""
    if not samples:
        return [0] * len(qs)
    ordered = sorted(samples)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs]


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
