"""The Prometheus collectors (observe/metrics.py): what a scrape reads from the spans, the
tunnel table, the gate and the machines, checked by parsing the text exposition back with
prometheus_client's own parser. The whole pipeline runs in process on the autojump clock."""

from __future__ import annotations

from types import SimpleNamespace

import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from ntma.io.fake import FakeNetwork
from ntma.observe.metrics import (
    SpansCollector,
    registry_for_dc,
    registry_for_node,
    registry_for_relay,
)
from ntma.observe.spans import Histogram, Spans
from ntma.proto.ether import build_udp, ip_packed
from ntma.proto.fields_v2 import Status
from ntma.proto.handshake import T_DATA
from ntma.proto.node.session import SessionState
from ntma.testing.world import CN_ENDPOINT, MN_ENDPOINT, FakeDc, FakeNode, wait_registered

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry) -> Samples:
    """Every sample of a scrape, by (name, labels); the text must parse."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def registry_of(*collectors) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def test_histogram_buckets_by_bit_length_and_reports_them_cumulative():
    hist = Histogram()
    for ns in (0, 1023, 1024, 2047, 5_000, 2**30):
        hist.observe(ns)
    cumulative = dict(hist.cumulative())
    assert cumulative[1023 / 1e9] == 2  # 0 and 1023: at or below 2**10 - 1 ns
    assert cumulative[2047 / 1e9] == 4
    assert cumulative[(2**24 - 1) / 1e9] == 5  # 2**30 ns is past the last exported bound
    assert cumulative[float("inf")] == 6 and hist.sum_ns == 0 + 1023 + 1024 + 2047 + 5000 + 2**30


def test_stage_counters_drops_events_and_latency_come_from_the_spans():
    spans = Spans()
    encap = spans.stage("encapsulate")
    encap.record(4, 400, started_ns=0, ended_ns=8_000)  # 2 us per packet
    encap.record(1, 100, started_ns=0, ended_ns=3_000)  # 3 us
    encap.drop("no_tunnel", 3)
    encap.count("keepalive_sent", 2)
    spans.stage("signalling").events["tunnel_up"] += 1
    spans.path("tunnel_send").record(5_000, packets=5)
    samples = scrape(registry_of(SpansCollector(spans, "node")))
    stage = {"role": "node", "stage": "encapsulate"}
    assert value(samples, "ntma_stage_packets_total", **stage) == 5
    assert value(samples, "ntma_stage_bytes_total", **stage) == 500
    assert value(samples, "ntma_stage_batches_total", **stage) == 2
    assert value(samples, "ntma_stage_drops_total", **stage, reason="no_tunnel") == 3
    assert value(samples, "ntma_stage_events_total", **stage, event="keepalive_sent") == 2
    signalling = {"role": "node", "stage": "signalling"}
    assert value(samples, "ntma_stage_events_total", **signalling, event="tunnel_up") == 1
    bucket = "ntma_stage_latency_seconds_bucket"
    assert value(samples, bucket, **stage, le="1.023e-06") == 0
    assert value(samples, bucket, **stage, le="2.047e-06") == 1  # the 2 us batch
    assert value(samples, bucket, **stage, le="4.095e-06") == 2
    assert value(samples, bucket, **stage, le="+Inf") == 2
    assert value(samples, "ntma_stage_latency_seconds_count", **stage) == 2
    assert abs(value(samples, "ntma_stage_latency_seconds_sum", **stage) - 5e-6) < 1e-12
    window = "ntma_stage_latency_window_seconds"
    assert value(samples, window, **stage, quantile="0.99") == 3e-6  # as the log's p99_ns
    path = {"role": "node", "path": "tunnel_send"}
    assert value(samples, "ntma_path_packets_total", **path) == 5
    assert value(samples, "ntma_path_latency_seconds_count", **path) == 1


def test_the_relays_levels_are_gauges_not_counters():
    spans = Spans()
    stats = spans.stage("relay")
    stats.counters.update({"forwarded": 3, "relays": 1})  # as serve.run_machine copies them
    relay = SimpleNamespace(
        entries={"a": 1, "b": 2},
        forwarded=3,
        forwarded_bytes=300,
        gate=SimpleNamespace(responses=2, cookies_sent=0),
    )
    samples = scrape(registry_for_relay(relay, spans))
    assert not [k for k in samples if k[0] == "ntma_stage_events_total"]
    assert value(samples, "ntma_relay_entries", role="relay") == 2
    assert value(samples, "ntma_relay_forwarded_datagrams_total", role="relay") == 3
    assert value(samples, "ntma_relay_forwarded_bytes_total", role="relay") == 300
    assert value(samples, "ntma_handshakes_total", role="relay") == 2


class FakeTable(list):
    """The TunnelTable as the collector reads it: its tunnels, and its ups and downs."""

    ups, downs = 3, 2


def test_registration_state_tunnels_by_route_and_transitions():
    spans = Spans()
    sm = SimpleNamespace(
        session=SimpleNamespace(state=SessionState.REGISTERED),
        tunnels=FakeTable([SimpleNamespace(route="direct"), SimpleNamespace(route="relay")]),
        wire=SimpleNamespace(gate=SimpleNamespace(responses=0, cookies_sent=4)),
    )
    samples = scrape(registry_for_node(sm, spans, "adapter"))
    state = "ntma_registration_state"
    assert value(samples, state, role="adapter", state="registered") == 1
    assert value(samples, state, role="adapter", state="registering") == 0
    assert value(samples, "ntma_tunnels", role="adapter", route="direct") == 1
    assert value(samples, "ntma_tunnels", role="adapter", route="punch") == 0
    assert value(samples, "ntma_tunnels", role="adapter", route="relay") == 1
    transitions = "ntma_tunnel_transitions_total"
    assert value(samples, transitions, role="adapter", direction="up") == 3
    assert value(samples, transitions, role="adapter", direction="down") == 2
    assert value(samples, "ntma_handshake_cookies_total", role="adapter") == 4


def _udp(src: str, dst: str, payload: bytes) -> bytes:
    return build_udp(ip_packed(src), ip_packed(dst), 5000, 6000, payload)


async def test_a_tunnel_between_two_nodes_shows_in_every_registry(nursery, autojump_clock):
    """The real machines: the DC's node table and registrations, each node's tunnel and
    handshakes, and the data stages' counters, from one registry per daemon (in one
    process: they must not clash)."""
    net = FakeNetwork(depth=64)
    dc = FakeDc(["mn", "cn"])
    await dc.start(nursery, net, 5)
    mn, cn = (FakeNode(net, dc, n, ep, 64) for n, ep in (("mn", MN_ENDPOINT), ("cn", CN_ENDPOINT)))
    for node in (mn, cn):
        await node.start(nursery)
    await wait_registered(mn, cn)
    with trio.fail_after(10):
        assert (await mn.pipe.broker.resolve("cn.ntm.example")).status == Status.OK
    await mn.tun.inject([_udp(mn.vip, cn.vip, b"ping %d" % i) for i in range(20)])
    with trio.fail_after(5):
        got: list[bytes] = []
        while len(got) < 20:
            got.extend(await cn.tun.written.receive())

    assert dc.coordinator is not None
    at_dc = scrape(registry_for_dc(dc.coordinator, dc.spans))
    assert value(at_dc, "ntma_dc_nodes", role="dc", state="online") == 2
    assert value(at_dc, "ntma_dc_registrations_total", role="dc") == 2
    assert value(at_dc, "ntma_handshakes_total", role="dc") >= 2
    assert value(at_dc, "ntma_dc_pending_registrations", role="dc") == 0
    dc_stage = {"role": "dc", "stage": "dc_signalling"}
    assert value(at_dc, "ntma_stage_events_total", **dc_stage, event="node_registered") == 2

    at_mn = scrape(registry_for_node(mn.sm, mn.pipe.spans, "node"))
    at_cn = scrape(registry_for_node(cn.sm, cn.pipe.spans, "node"))
    assert value(at_mn, "ntma_registration_state", role="node", state="registered") == 1
    assert value(at_mn, "ntma_tunnels", role="node", route="direct") == 1
    assert value(at_mn, "ntma_tunnel_transitions_total", role="node", direction="up") == 1
    assert value(at_cn, "ntma_handshakes_total", role="node") == 1  # cn answered mn's init
    encap = {"role": "node", "stage": "encapsulate"}
    assert value(at_mn, "ntma_stage_packets_total", **encap) == 20
    assert value(at_mn, "ntma_stage_latency_seconds_count", **encap) >= 1
    decap = {"role": "node", "stage": "decapsulate"}
    assert value(at_cn, "ntma_stage_packets_total", **decap) >= 20


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist():
    """contrib/grafana/ntma.json is valid JSON, and every ntma_* name in its queries is a
    sample name some role's registry exposes."""
    import json
    import re
    from pathlib import Path

    spans = Spans()
    spans.stage("encapsulate").record(1, 1, 0, 1)
    spans.stage("encapsulate").drop("no_tunnel")  # families without samples are left out
    spans.path("tunnel_send").record(1)
    gate = SimpleNamespace(responses=0, cookies_sent=0)
    sm = SimpleNamespace(
        session=SimpleNamespace(state=SessionState.REGISTERED),
        tunnels=FakeTable(),
        wire=SimpleNamespace(gate=gate),
    )
    dc = SimpleNamespace(sessions={}, table=SimpleNamespace(pending={}), gate=gate)
    relay = SimpleNamespace(entries={}, forwarded=0, forwarded_bytes=0, gate=gate)
    exposed = set()
    for registry in (
        registry_for_node(sm, spans, "node"),
        registry_for_dc(dc, spans),
        registry_for_relay(relay, spans),
    ):
        exposed |= {name for name, _ in scrape(registry)}
    path = Path(__file__).parent.parent / "contrib" / "grafana" / "ntma.json"
    dashboard = json.loads(path.read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"ntma_[a-z0-9_]+", target["expr"])
    }
    assert asked and asked <= exposed, asked - exposed
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("throughput", "drops", "latency", "tunnels", "registration"):
        assert topic in titles


async def test_an_expired_tunnel_is_a_transition_down(nursery, autojump_clock):
    """TunnelTable counts its ups and downs itself: here the keep-alive stage's expiry."""
    net = FakeNetwork(depth=64)
    dc = FakeDc(["mn", "cn"])
    await dc.start(nursery, net, 5)
    mn, cn = (FakeNode(net, dc, n, ep, 64) for n, ep in (("mn", MN_ENDPOINT), ("cn", CN_ENDPOINT)))
    for node in (mn, cn):
        await node.start(nursery)
    await wait_registered(mn, cn)
    with trio.fail_after(10):
        assert (await mn.pipe.broker.resolve("cn.ntm.example")).status == Status.OK
    net.drop = lambda datagram, src, dst: src == CN_ENDPOINT and datagram[1] == T_DATA
    await trio.sleep(200)  # cn's tunnel packets are lost: mn expires the tunnel
    at_mn = scrape(registry_for_node(mn.sm, mn.pipe.spans, "node"))
    transitions = "ntma_tunnel_transitions_total"
    assert value(at_mn, transitions, role="node", direction="up") == 1
    assert value(at_mn, transitions, role="node", direction="down") == 1
    assert value(at_mn, "ntma_tunnels", role="node", route="direct") == 0
    keepalive = {"role": "node", "stage": "keepalive"}
    assert value(at_mn, "ntma_stage_events_total", **keepalive, event="tunnel_expired") == 1
