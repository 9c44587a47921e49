"""The v2 data stages with fake I/O: udp_receive sorts by byte 1, encapsulate ->
udp_send -> udp_receive -> decapsulate carries packets on the ring, expired keys are a
counted drop, keep-alive sends empty DATA and expiry queues the tunnel for the
handshake part. Runs on the autojump clock; no DC, no signalling machine."""

from __future__ import annotations

import trio

from ntma.io.fake import FakeNetwork
from ntma.observe.spans import StageStats
from ntma.proto.session import REJECT_AFTER_TIME
from ntma.proto.tunnel import TunnelTable, open_data, punch_datagram
from ntma.stages.channels import Batch
from ntma.stages.keepalive import EXPIRE_S, KEEPALIVE_S, keepalive_round
from ntma.stages.receive import run_decapsulate, run_udp_receive
from ntma.stages.send import encapsulate_packets, run_encapsulate, run_udp_send
from ntma.testing.traffic import GN_VIP, PEER_VIP, udp_packet
from ntma.testing.tunnels import tunnel_pair

GN_SIDE, PEER_SIDE = ("198.51.100.51", 7401), ("198.51.100.30", 7401)


class _Log:
    def __init__(self) -> None:
        self.lines: list = []

    def info(self, name, **fields) -> None:
        self.lines.append((name, fields))


async def test_datagrams_are_sorted_by_byte_1_and_data_crosses_the_ring(autojump_clock):
    net = FakeNetwork()
    gn_udp, peer_udp = net.attach(GN_SIDE), net.attach(PEER_SIDE)
    a, b = tunnel_pair()  # a: the GN side's tunnel to the peer (endpoint PEER_SIDE)
    table = TunnelTable()
    table.install(b)
    stats = {n: StageStats(n) for n in ("encap", "send", "recv", "decap")}
    to_encap_s, to_encap_r = trio.open_memory_channel(4)
    to_send_s, to_send_r = trio.open_memory_channel(4)
    data_s, data_r = trio.open_memory_channel(4)
    signal_s, signal_r = trio.open_memory_channel(4)
    out_s, out_r = trio.open_memory_channel(4)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_udp_send, to_send_r, gn_udp, stats["send"])
        await nursery.start(run_encapsulate, to_encap_r, to_send_s, stats["encap"])
        await nursery.start(run_decapsulate, data_r, out_s, table, stats["decap"])
        await nursery.start(run_udp_receive, peer_udp, data_s, signal_s, stats["recv"])
        packets = [udp_packet(GN_VIP, PEER_VIP, 100 + n) for n in range(5)]
        await to_encap_s.send(Batch([(a, p) for p in packets]))
        with trio.fail_after(5):
            got = await out_r.receive()
        assert list(got) == packets
        net.deliver(GN_SIDE, [(bytes((2, 1, 0, 0)) + bytes(150), PEER_SIDE)])
        net.deliver(GN_SIDE, [(bytes((2, 5, 0, 0)) + bytes(40), PEER_SIDE)])
        net.deliver(GN_SIDE, [(punch_datagram(), PEER_SIDE)])
        sig: list[int] = []
        with trio.fail_after(5):
            while len(sig) < 2:
                sig += [datagram[1] for datagram, _ in await signal_r.receive()]
        assert sig == [1, 5]  # init and SIGNAL to signalling; the PUNCH to the data path
        await trio.sleep(1)
        assert stats["decap"].drops["punch"] == 1
        assert b.endpoint == GN_SIDE and b.packets_in == 5
        nursery.cancel_scope.cancel()


def test_expired_keys_are_a_counted_drop_and_mark_a_rekey():
    a, _ = tunnel_pair()
    stats = StageStats("encapsulate")
    packet = udp_packet(GN_VIP, PEER_VIP, 10)
    assert len(encapsulate_packets([(a, packet)], stats, 1.0)) == 1
    assert encapsulate_packets([(a, packet)], stats, REJECT_AFTER_TIME) == []
    assert stats.drops["expired_keys"] == 1 and a.rekey_wanted


def test_keepalive_round_sends_empty_data_to_idle_tunnels_and_expires_silent_ones():
    a, b = tunnel_pair()
    table, peer = TunnelTable(), TunnelTable()
    table.install(a)
    peer.install(b)
    stats, log, sent_before = StageStats("keepalive"), _Log(), {}
    assert keepalive_round(table, sent_before, KEEPALIVE_S, stats, log) == []  # first look
    ((datagram, dst),) = keepalive_round(table, sent_before, 2 * KEEPALIVE_S, stats, log)
    assert dst == PEER_SIDE and stats.counters["keepalive_sent"] == 1
    assert open_data(peer, datagram, GN_SIDE, 2 * KEEPALIVE_S) == (b, b"")
    assert keepalive_round(table, sent_before, EXPIRE_S + 1, stats, log) == []
    assert len(table) == 0 and table.removed == [a] and not sent_before
    assert log.lines == [("tunnel_expired", {"tunnel": a.tunnel_id, "peer": a.peer_fqdn})]
