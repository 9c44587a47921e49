"""Prometheus metrics, read at scrape time from what the daemons already count.

Nothing here runs per packet: each collector's collect() reads the Spans (the same
StageStats and PathStats the stats log lines print), the tunnel table, the handshake gate
and the machines' own totals when a scrape asks, and builds metric families from them.
Each daemon has its own CollectorRegistry (`registry_for_*`), not prometheus_client's
global one, so several daemons in one process (the tests) do not clash.

Names are `ntma_*` with units in them; every series has the label `role` (dc, node,
adapter, relay), stage series `stage`, drops `reason`. The HTTP side is metrics_http.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from .spans import Histogram, Spans, quantiles

if TYPE_CHECKING:
    from ..dc.coordinator import Coordinator
    from ..proto.gate import HandshakeGate
    from ..proto.node import NodeSignalling
    from ..relay.relay import Relay

ROUTES = ("direct", "punch", "relay")  # Tunnel.route
WINDOW_QUANTILES = (0.5, 0.99)  # the stats log lines' p50_ns and p99_ns


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    buckets = [(floatToGoString(bound), count) for bound, count in hist.cumulative()]
    family.add_metric(labels, buckets, hist.sum_ns / 1e9)


class SpansCollector:
    """Per-stage packets, bytes, batches, drops, events and latency; per-path latency.
    `gauges` names stage counters that are levels, not totals (the relay's number of
    entries, which serve.run_machine copies in): left to a role's own collector."""

    def __init__(self, spans: Spans, role: str, gauges: Iterable[str] = ()) -> None:
        self.spans, self.role, self.gauges = spans, role, frozenset(gauges)

    def collect(self) -> Iterator[Metric]:
        role, stages = self.role, list(self.spans.stages.values())
        per_stage = ["role", "stage"]
        packets = CounterMetricFamily(
            "ntma_stage_packets_total", "Packets through each stage.", labels=per_stage
        )
        nbytes = CounterMetricFamily(
            "ntma_stage_bytes_total", "Bytes through each stage.", labels=per_stage
        )
        batches = CounterMetricFamily(
            "ntma_stage_batches_total", "Batches through each stage.", labels=per_stage
        )
        drops = CounterMetricFamily(
            "ntma_stage_drops_total",
            "Inputs each stage dropped, by reason.",
            labels=[*per_stage, "reason"],
        )
        events = CounterMetricFamily(
            "ntma_stage_events_total",
            "Notable events each stage counted (its machine's events by log name, and "
            "counters that are not drops).",
            labels=[*per_stage, "event"],
        )
        latency = HistogramMetricFamily(
            "ntma_stage_latency_seconds",
            "Time in stage per packet; one observation per batch.",
            labels=per_stage,
        )
        window = GaugeMetricFamily(
            "ntma_stage_latency_window_seconds",
            "Quantiles of time in stage per packet over the last batches (the stats log "
            "lines' p50 and p99).",
            labels=[*per_stage, "quantile"],
        )
        for stats in stages:
            labels = [role, stats.name]
            packets.add_metric(labels, stats.packets)
            nbytes.add_metric(labels, stats.bytes)
            batches.add_metric(labels, stats.batches)
            for reason, n in sorted(stats.drops.items()):
                drops.add_metric([*labels, reason], n)
            counted = Counter(stats.events)
            counted.update({k: v for k, v in stats.counters.items() if k not in self.gauges})
            for event, n in sorted(counted.items()):
                events.add_metric([*labels, event], n)
            _histogram(latency, labels, stats.latency)
            window_ns = quantiles(stats.samples_ns(), WINDOW_QUANTILES)
            for q, ns in zip(WINDOW_QUANTILES, window_ns, strict=True):
                window.add_metric([*labels, str(q)], ns / 1e9)
        yield from (packets, nbytes, batches, drops, events, latency, window)
        yield from self._paths()

    def _paths(self) -> Iterator[Metric]:
        paths = list(self.spans.paths.values())
        packets = CounterMetricFamily(
            "ntma_path_packets_total",
            "Packets along each multi-stage path.",
            labels=["role", "path"],
        )
        latency = HistogramMetricFamily(
            "ntma_path_latency_seconds",
            "Latency along each multi-stage path, from a batch's arrival to the path's end.",
            labels=["role", "path"],
        )
        for path in paths:
            packets.add_metric([self.role, path.name], path.count)
            _histogram(latency, [self.role, path.name], path.latency)
        yield from (packets, latency)


class GateCollector:
    """The handshake gate's totals: responses to fresh inits, cookie replies (under load)."""

    def __init__(self, gate: HandshakeGate, role: str) -> None:
        self.gate, self.role = gate, role

    def collect(self) -> Iterator[Metric]:
        labels = [self.role]
        handshakes = CounterMetricFamily(
            "ntma_handshakes_total",
            "Handshake responses sent to fresh, admitted initiations.",
            labels=["role"],
        )
        handshakes.add_metric(labels, self.gate.responses)
        cookies = CounterMetricFamily(
            "ntma_handshake_cookies_total",
            "Cookie replies sent instead of a handshake (under load, 4.5).",
            labels=["role"],
        )
        cookies.add_metric(labels, self.gate.cookies_sent)
        yield from (handshakes, cookies)


class NodeCollector:
    """A node's or an adapter's registration state and its tunnels by route."""

    def __init__(self, sm: NodeSignalling, role: str) -> None:
        self.sm, self.role = sm, role

    def collect(self) -> Iterator[Metric]:
        role = self.role
        state = GaugeMetricFamily(
            "ntma_registration_state",
            "1 for the registration state the node is in with its DC, 0 for the others.",
            labels=["role", "state"],
        )
        current = self.sm.session.state
        for value in type(current):
            state.add_metric([role, value.value], 1.0 if value is current else 0.0)
        by_route = Counter(t.route for t in self.sm.tunnels)
        tunnels = GaugeMetricFamily(
            "ntma_tunnels", "Live tunnels by the route they took.", labels=["role", "route"]
        )
        for route in sorted(set(ROUTES) | set(by_route)):
            tunnels.add_metric([role, route], by_route[route])
        transitions = CounterMetricFamily(
            "ntma_tunnel_transitions_total",
            "Tunnels installed (up) and removed (down: peer gone or closed, keep-alive "
            "expiry, replaced by a new one to the same peer).",
            labels=["role", "direction"],
        )
        transitions.add_metric([role, "up"], self.sm.tunnels.ups)
        transitions.add_metric([role, "down"], self.sm.tunnels.downs)
        yield from (state, tunnels, transitions)


class DcCollector:
    """The DC's node table: sessions online and offline, pending registrations, and the
    registrations it committed."""

    def __init__(self, dc: Coordinator, spans: Spans) -> None:
        self.dc, self.spans = dc, spans

    def collect(self) -> Iterator[Metric]:
        sessions = list(self.dc.sessions.values())
        online = sum(1 for s in sessions if s.online)
        nodes = GaugeMetricFamily(
            "ntma_dc_nodes",
            "Registered nodes (committed sessions), by whether they keep alive.",
            labels=["role", "state"],
        )
        nodes.add_metric(["dc", "online"], online)
        nodes.add_metric(["dc", "offline"], len(sessions) - online)
        pending = GaugeMetricFamily(
            "ntma_dc_pending_registrations",
            "Registrations answered but not yet confirmed by the node's first SIGNAL.",
            labels=["role"],
        )
        pending.add_metric(["dc"], len(self.dc.table.pending))
        registrations = CounterMetricFamily(
            "ntma_dc_registrations_total",
            "Registrations committed (node_registered events).",
            labels=["role"],
        )
        stats = self.spans.stages.get("dc_signalling")  # serve.py counts its events
        registrations.add_metric(["dc"], stats.events["node_registered"] if stats else 0)
        yield from (nodes, pending, registrations)


class RelayCollector:
    """The RS's relay entries and what it forwarded."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self) -> Iterator[Metric]:
        entries = GaugeMetricFamily(
            "ntma_relay_entries", "Relay entries (tunnels relayed).", labels=["role"]
        )
        entries.add_metric(["relay"], len(self.relay.entries))
        datagrams = CounterMetricFamily(
            "ntma_relay_forwarded_datagrams_total",
            "Datagrams forwarded between the ends of relay entries.",
            labels=["role"],
        )
        datagrams.add_metric(["relay"], self.relay.forwarded)
        nbytes = CounterMetricFamily(
            "ntma_relay_forwarded_bytes_total",
            "Bytes forwarded between the ends of relay entries.",
            labels=["role"],
        )
        nbytes.add_metric(["relay"], self.relay.forwarded_bytes)
        yield from (entries, datagrams, nbytes)


def _registry(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def registry_for_node(sm: NodeSignalling, spans: Spans, role: str) -> CollectorRegistry:
    """A node's (role "node") or an adapter's (role "adapter") metrics."""
    return _registry(
        SpansCollector(spans, role),
        GateCollector(sm.wire.gate, role),
        NodeCollector(sm, role),
    )


def registry_for_dc(dc: Coordinator, spans: Spans) -> CollectorRegistry:
    return _registry(
        SpansCollector(spans, "dc"), GateCollector(dc.gate, "dc"), DcCollector(dc, spans)
    )


def registry_for_relay(relay: Relay, spans: Spans) -> CollectorRegistry:
    return _registry(
        SpansCollector(spans, "relay", gauges=("forwarded", "relays")),
        GateCollector(relay.gate, "relay"),
        RelayCollector(relay),
    )
