"""The whole node pipeline and the DC server in one process, with fake TUN and UDP
(channel-backed, wireguard-go tuntest/bindtest style). Runs on the autojump clock."""

from __future__ import annotations

import pytest
import trio

from ntma.proto.ether import build_udp, ip_packed
from ntma.proto.fields_v2 import Status
from ntma.proto.handshake import T_DATA, T_INIT
from ntma.proto.tunnel import punch_datagram
from ntma.testing.world import CN_ENDPOINT, start_fake_world


def ipv4_udp(src: str, dst: str, payload: bytes) -> bytes:
    return build_udp(ip_packed(src), ip_packed(dst), 5000, 6000, payload)


@pytest.fixture
async def world(nursery):
    return await start_fake_world(nursery, keepalive_s=5)


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
    relay = cn.pipe.spans.path("response_relay").summary()
    assert 0 < relay["send_p50_ns"] <= relay["p50_ns"]  # the final write is part of the path
    send = mn.pipe.spans.path("tunnel_send").summary()
    assert 0 < send["send_p50_ns"] <= send["p50_ns"]


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
    inits = [d for d, dst in mn.udp.sent if dst == CN_ENDPOINT and d[1] == T_INIT]
    assert len(set(inits)) == 1  # one handshake (its resends are the same bytes)


async def test_unroutable_and_garbage_input_is_counted(world, autojump_clock):
    net, nodes = world
    mn, cn = nodes["mn"], nodes["cn"]
    await mn.tun.inject(
        [b"", b"\x45" * 10, b"\x60" + bytes(39), ipv4_udp(mn.vip, "10.99.9.9", b"x")]
    )
    net.deliver(
        ("203.0.113.9", 9),
        [
            (b"\x02\x04\x00\x00garbage-data-packet-long-enough-xx", ("198.51.100.30", 7401)),
            (b"\x02\x04\x00\x00\x00\x00\x00\x09" + bytes(40), ("198.51.100.30", 7401)),
            (punch_datagram(), ("198.51.100.30", 7401)),
            (b"\x01\x30v1-data", ("198.51.100.30", 7401)),
            (b"\x07\x01", ("198.51.100.30", 7401)),
            (b"", ("198.51.100.30", 7401)),
        ],
    )
    await trio.sleep(1)
    classify = mn.pipe.spans.stage("classify").drops
    # the IPv6 packet has no tunnel of its VIP pair (mn has no IPv6 VIP): no_tunnel too
    assert classify["malformed"] == 2 and classify["no_tunnel"] == 2
    decapsulate = cn.pipe.spans.stage("decapsulate").drops
    assert decapsulate["unknown_index"] == 2 and decapsulate["punch"] == 1
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
    net.drop = lambda datagram, src, dst: src == cn_endpoint and datagram[1] == T_DATA
    await trio.sleep(200)  # cn's tunnel packets are lost: mn expires the tunnel
    assert len(mn.pipe.table) == 0
    assert mn.pipe.spans.stage("keepalive").counters["tunnel_expired"] == 1
    net.drop = lambda datagram, src, dst: False
    with trio.fail_after(15):  # and a new query builds a new tunnel
        assert (await mn.pipe.broker.resolve("cn.ntm.example")).status == Status.OK
    assert len(mn.pipe.table) == 1
