"""Micro-benchmarks of the pure data path (no sockets): run with
`python -m pytest benchmarks/bench_core.py --benchmark-only` (pytest-benchmark).

Each times the function a stage's run_<stage> calls on every batch, on a batch of 64."""

from __future__ import annotations

from ntma.observe.spans import StageStats
from ntma.proto.bodies_v2 import DirectionRequest
from ntma.proto.handshake import T_DATA
from ntma.proto.messages_v2 import decode, encode
from ntma.proto.session import parse_transport
from ntma.proto.tunnel import Tunnel, TunnelTable
from ntma.stages.ethernet import frame_packets, sort_frames
from ntma.stages.neighbours import answer_arps
from ntma.stages.receive import decapsulate_datagrams
from ntma.stages.send import classify_packets, encapsulate_packets
from ntma.testing.traffic import (
    GN_VIP,
    PEER_VIP,
    arp_request_frame,
    data_frames,
    gn_link,
    udp_packet,
)
from ntma.testing.tunnels import tunnel_pair

A_VIP, B_VIP = GN_VIP, PEER_VIP


def _tunnels() -> tuple[Tunnel, Tunnel]:
    return tunnel_pair()


def _packet(size: int) -> bytes:
    return udp_packet(A_VIP, B_VIP, size - 28)


def test_signalling_codec_round_trip(benchmark):
    msg = DirectionRequest(1, "mn.ntm.example", "cn.ntm.example")
    benchmark(lambda: decode(encode(msg)))


def test_classify_batch_of_64(benchmark):
    a, _ = _tunnels()
    table = TunnelTable()
    table.install(a)
    batch = [_packet(1400)] * 64
    benchmark(classify_packets, batch, table, StageStats("classify"))


def test_classify_frames_batch_of_64(benchmark):
    a, _ = _tunnels()
    table = TunnelTable()
    table.install(a)
    benchmark(sort_frames, data_frames(), gn_link(), table, 1400, StageStats("classify"))


def test_arp_batch_of_64(benchmark):
    benchmark(answer_arps, [arp_request_frame()] * 64, gn_link(), StageStats("arp"))


def test_inject_framing_batch_of_64(benchmark):
    packets = [udp_packet(B_VIP, A_VIP, 1372)] * 64
    benchmark(frame_packets, packets, gn_link(), StageStats("inject"))


def test_encapsulate_batch_of_64(benchmark):
    a, _ = _tunnels()
    batch = [(a, _packet(1400))] * 64
    benchmark(encapsulate_packets, batch, StageStats("encapsulate"), 0.0)


def test_seal_then_decapsulate_batch_of_64(benchmark):
    a, b = _tunnels()
    table = TunnelTable()
    table.install(b)

    def run():
        datagrams = [(a.seal(_packet(1400), 0.0), ("192.0.2.1", 7401)) for _ in range(64)]
        return decapsulate_datagrams(datagrams, table, StageStats("decapsulate"), 0.0)

    benchmark(run)
    assert parse_transport(a.seal(b"x" * 20, 0.0))[0] == T_DATA
