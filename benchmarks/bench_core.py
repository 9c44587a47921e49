"""Micro-benchmarks of the pure data path (no sockets): run with
`python -m pytest benchmarks/bench_core.py --benchmark-only` (pytest-benchmark)."""

from __future__ import annotations

import ipaddress
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntma.proto.crypto import StaticKey, derive_tunnel_keys
from ntma.proto.messages import DirectionRequest, decode_body, encode_body
from ntma.proto.packet import unpack_data_header
from ntma.proto.tunnel import Tunnel, TunnelTable
from ntma.stages.receive import decapsulate_datagrams
from ntma.stages.send import classify_packets, encapsulate_packets
from ntma.stages.spans import StageStats

A_VIP, B_VIP = "10.99.0.2", "10.99.0.3"


def _tunnels() -> tuple[Tunnel, Tunnel]:
    a, b = StaticKey.generate(), StaticKey.generate()
    ea, eb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    pub = lambda k: k.public_key().public_bytes_raw()  # noqa: E731
    ka = derive_tunnel_keys(
        tunnel_id=7,
        initiator=True,
        static=a,
        peer_static=b.public,
        ephemeral=ea,
        peer_ephemeral=pub(eb),
    )
    kb = derive_tunnel_keys(
        tunnel_id=7,
        initiator=False,
        static=b,
        peer_static=a.public,
        ephemeral=eb,
        peer_ephemeral=pub(ea),
    )
    return (
        Tunnel(7, "b", B_VIP, ("192.0.2.2", 7401), ka, 0.0),
        Tunnel(7, "a", A_VIP, ("192.0.2.1", 7401), kb, 0.0),
    )


def _packet(size: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        size,
        0,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(A_VIP).packed,
        ipaddress.IPv4Address(B_VIP).packed,
    )
    return header + bytes(size - 20)


def test_signalling_codec_round_trip(benchmark):
    msg = DirectionRequest(1, 1_700_000_000_000, "cn.ntm.example")
    benchmark(lambda: decode_body(0x05, encode_body(msg)))


def test_classify_batch_of_64(benchmark):
    a, _ = _tunnels()
    table = TunnelTable()
    table.install(a)
    batch = [_packet(1400)] * 64
    benchmark(classify_packets, batch, table, StageStats("classify"))


def test_encapsulate_batch_of_64(benchmark):
    a, _ = _tunnels()
    batch = [(a, _packet(1400))] * 64
    benchmark(encapsulate_packets, batch, StageStats("encapsulate"))


def test_seal_then_decapsulate_batch_of_64(benchmark):
    a, b = _tunnels()
    table = TunnelTable()
    table.install(b)

    def run():
        datagrams = [(a.seal(_packet(1400)), ("192.0.2.1", 7401)) for _ in range(64)]
        return decapsulate_datagrams(datagrams, table, StageStats("decapsulate"), 0.0)

    benchmark(run)
    assert unpack_data_header(a.seal(b"x" * 20))[0] == 7
