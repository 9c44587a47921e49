"""The whole node pipeline and the DC server in one process, with fake TUN and UDP
(channel-backed, wireguard-go tuntest/bindtest style). Runs on the autojump clock."""

from __future__ import annotations

import ipaddress
import struct

import pytest
import trio

from ntma.dc.coordinator import Coordinator
from ntma.dc.server import run_signalling_server
from ntma.dc.store import NodeStore
from ntma.io.fake import FakeNetwork, FakePackets
from ntma.proto.crypto import StaticKey
from ntma.proto.messages import Status
from ntma.proto.node_sm import NodeSignalling
from ntma.stages.pipeline import NodePipeline, start_node_pipeline
from ntma.stages.spans import Spans

DC_EP = ("198.51.100.10", 7400)


def ipv4_udp(src: str, dst: str, payload: bytes) -> bytes:
    total = 20 + 8 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        1,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + struct.pack("!HHHH", 5000, 6000, 8 + len(payload), 0) + payload


class Node:
    def __init__(self, net, name, endpoint, dc_key, static):
        self.udp = net.attach(endpoint)
        self.tun = FakePackets()
        self.sm = NodeSignalling(
            fqdn=f"{name}.ntm.example",
            static=static,
            dc_public=dc_key.public,
            dc_endpoint=DC_EP,
            local_endpoints=lambda: [endpoint],
            epoch_offset=1.7e9,
        )
        self.pipe = NodePipeline(self.sm)
        self.vip: str | None = None

    async def on_registered(self, event):
        self.vip = event.vip


@pytest.fixture
async def world(nursery):
    net = FakeNetwork()
    dc_key = StaticKey.generate()
    keys = {n: StaticKey.generate() for n in ("mn", "cn")}
    store = NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16"))
    dc = Coordinator(
        static=dc_key,
        store=store,
        zone="ntm.example",
        admission={f"{n}.ntm.example": k.public for n, k in keys.items()},
        keepalive_s=5,
        keepalive_misses=3,
        epoch_offset=1.7e9,
    )
    await nursery.start(run_signalling_server, dc, net.attach(DC_EP), Spans())
    nodes = {
        "mn": Node(net, "mn", ("198.51.100.41", 7401), dc_key, keys["mn"]),
        "cn": Node(net, "cn", ("198.51.100.30", 7401), dc_key, keys["cn"]),
    }
    for node in nodes.values():
        await start_node_pipeline(nursery, node.pipe, node.tun, node.udp, node.on_registered)
    await trio.sleep(1)
    return net, nodes


async def test_packet_crosses_the_tunnel_and_back(world, autojump_clock):
    net, nodes = world
    mn, cn = nodes["mn"], nodes["cn"]
    assert mn.vip and cn.vip
    with trio.fail_after(10):
        result = await mn.pipe.broker.resolve("cn.ntm.example")
    assert result.status == Status.OK and result.vip == cn.vip
    await mn.tun.inject([ipv4_udp(mn.vip, cn.vip, b"ping %d" % i) for i in range(50)])
    got: list[bytes] = []
    with trio.fail_after(5):
        while len(got) < 50:
            got.extend(await cn.tun.written.receive())
    assert got[0][28:] == b"ping 0" and got[-1][28:] == b"ping 49"
    await cn.tun.inject([ipv4_udp(cn.vip, mn.vip, b"pong")])
    with trio.fail_after(5):
        back = await mn.tun.written.receive()
    assert back[0][28:] == b"pong"
    spans = {s["stage"]: s for s in mn.pipe.spans.summaries()}
    assert spans["encapsulate"]["packets"] == 50 and spans["decapsulate"]["packets"] == 1
    # The paths of the paper's Table 2 are measured end to end, per packet.
    assert mn.pipe.spans.path("tunnel_send").count == 50
    assert cn.pipe.spans.path("response_relay").count == 50
    assert cn.pipe.spans.path("response_relay").summary()["p50_ns"] > 0


async def test_concurrent_queries_share_one_exchange(world, autojump_clock):
    _, nodes = world
    mn = nodes["mn"]
    results = []

    async def ask():
        results.append(await mn.pipe.broker.resolve("cn.ntm.example"))

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            for _ in range(5):
                n.start_soon(ask)
    assert {r.status for r in results} == {Status.OK}
    requests = [d for d, dst in mn.udp.sent if dst == DC_EP and d[1] == 0x05]
    assert len(requests) == 1


async def test_unroutable_and_garbage_input_is_counted(world, autojump_clock):
    net, nodes = world
    mn, cn = nodes["mn"], nodes["cn"]
    await mn.tun.inject(
        [b"", b"\x45" * 10, b"\x60" + bytes(39), ipv4_udp(mn.vip, "10.99.9.9", b"x")]
    )
    net.deliver(
        ("203.0.113.9", 9),
        [
            (b"\x01\x30garbage-data-packet-long-enough-xx", ("198.51.100.30", 7401)),
            (b"\x07\x01", ("198.51.100.30", 7401)),
            (b"", ("198.51.100.30", 7401)),
        ],
    )
    await trio.sleep(1)
    classify = mn.pipe.spans.stage("classify").drops
    assert classify["malformed"] == 2 and classify["not_ipv4"] == 1 and classify["no_tunnel"] == 1
    assert (
        cn.pipe.spans.stage("decapsulate").drops["malformed"]
        + cn.pipe.spans.stage("decapsulate").drops["unknown_tunnel"]
        >= 1
    )
    assert cn.pipe.spans.stage("signalling").drops  # garbage signalling counted, not raised
    # Still serving:
    with trio.fail_after(10):
        assert (await mn.pipe.broker.resolve("cn.ntm.example")).status == Status.OK


async def test_idle_tunnels_keep_alive_and_silent_ones_expire(world, autojump_clock):
    net, nodes = world
    mn, cn = nodes["mn"], nodes["cn"]
    with trio.fail_after(10):
        assert (await mn.pipe.broker.resolve("cn.ntm.example")).status == Status.OK
    await trio.sleep(60)  # idle: both ends send keep-alives, nobody expires
    assert mn.pipe.spans.stage("keepalive").counters["keepalive_sent"] >= 4
    assert cn.pipe.spans.stage("decapsulate").counters["keepalive_received"] >= 4
    assert len(mn.pipe.table) == 1 and len(cn.pipe.table) == 1
    cn_endpoint = ("198.51.100.30", 7401)
    net.drop = lambda datagram, src, dst: src == cn_endpoint and datagram[1] == 0x30
    await trio.sleep(200)  # cn's tunnel packets are lost: mn expires the tunnel
    assert len(mn.pipe.table) == 0
    assert mn.pipe.spans.stage("keepalive").counters["tunnel_expired"] == 1
    net.drop = lambda datagram, src, dst: False
    with trio.fail_after(15):  # and a new query builds a new tunnel
        assert (await mn.pipe.broker.resolve("cn.ntm.example")).status == Status.OK
    assert len(mn.pipe.table) == 1
