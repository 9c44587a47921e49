"""The Wireshark dissector (contrib/wireshark/ntma.lua) read by tshark.

Vectors: one datagram of every type, built by our own codec (ntma.proto: a real Noise
handshake, a cookie reply, sealed DATA and SIGNAL, a PUNCH, relay envelopes), put in a
pcap on the lab's ports and on ports nobody registered (the heuristic must find them),
plus malformed and truncated ones, which must be flagged with the dissector's expert
info rather than break the Lua; and UDP that is not ntma, which the heuristic must leave
alone. The lab test (a capture of every datagram type on the running lab) is in
tests/test_wireshark_lab.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntma.proto import envelope
from ntma.proto.bodies_v2 import Keepalive, Register, RegisterAck, TunnelAccept, TunnelInit
from ntma.proto.crypto import StaticKey
from ntma.proto.fields_v2 import dc_id_of
from ntma.proto.handshake import (
    build_cookie_reply,
    build_init,
    build_resp,
    open_init,
    parse_init,
)
from ntma.proto.messages_v2 import REPLY_MAX, MsgType, encode
from ntma.proto.noise import Initiator, tai64n
from ntma.proto.session import Keypair
from ntma.proto.tunnel import punch_datagram

from .wireshark_util import Decoded, ipv4_udp, tshark_decode, tshark_skip_reason, write_pcap

pytestmark = pytest.mark.skipif(tshark_skip_reason() is not None, reason=str(tshark_skip_reason()))

NODE = ("198.51.100.30", 7401)
PEER = ("198.51.100.31", 7401)
DC = ("198.51.100.10", 7400)
RS = ("198.51.100.60", 7500)
ODD_A, ODD_B = ("192.0.2.1", 40001), ("192.0.2.2", 50002)  # no ntma port: heuristic only
TUNNEL_ID = 0x1122334455667788


@dataclass
class Vector:
    name: str
    datagram: bytes
    src: tuple[str, int]
    dst: tuple[str, int]
    expect: dict[str, str | int] = field(default_factory=dict)
    inner: dict[str, str | int] = field(default_factory=dict)
    malformed: bool = False
    index_zero: bool = False


def _handshake(responder: StaticKey, body: bytes, reply: bytes, *, cookie: bytes | None = None):
    """(init, response, the initiator's keypair, the responder's) of one real handshake."""
    initiator_key = StaticKey.generate()
    initiator = Initiator(initiator_key, responder.public, X25519PrivateKey.generate())
    init = build_init(
        initiator,
        responder_public=responder.public,
        sender_index=0x0A0B0C0D,
        timestamp=tai64n(1_700_000_000.5),
        body=body,
        min_size=REPLY_MAX[MsgType(body[0])],
        cookie=cookie,
    )
    opened = open_init(parse_init(init), responder)
    resp, r_keys = build_resp(
        opened,
        X25519PrivateKey.generate(),
        sender_index=0x01020304,
        receiver_index=0x0A0B0C0D,
        body=reply,
    )
    _, i_keys = initiator.read_response(resp[12:-32])
    mine = Keypair(i_keys.send, i_keys.receive, 0x0A0B0C0D, 0x01020304, 0.0, True)
    theirs = Keypair(r_keys.send, r_keys.receive, 0x01020304, 0x0A0B0C0D, 0.0, False)
    return init, resp, mine, theirs


def _vectors() -> list[Vector]:
    dc_key, node_key = StaticKey.generate(), StaticKey.generate()
    dc_id = dc_id_of(dc_key.public)
    register = encode(Register(txid=7, boot_id=9, fqdn="mn.ntm.example"))
    ack = encode(
        RegisterAck(7, 0, "10.99.0.7", 16, "fd00:99::7", 64, NODE, 5, ("198.51.100.10", 7401))
    )
    init, resp, mine, theirs = _handshake(dc_key, register, ack)
    tunnel = encode(TunnelInit(dc_id, TUNNEL_ID, "mn.ntm.example", "cn.ntm.example"))
    accept = encode(TunnelAccept(dc_id, TUNNEL_ID, 0))
    t_init, t_resp, _, _ = _handshake(node_key, tunnel, accept, cookie=bytes(range(16)))
    cookie = build_cookie_reply(
        parse_init(init), responder_public=dc_key.public, nonce=bytes(24), cookie=bytes(16)
    )
    keepalive = mine.seal(5, encode(Keepalive(txid=1)))
    data = [mine.seal(4, b"\x45" + bytes(59)) for _ in range(3)]
    empty = theirs.seal(4, b"")
    ok = [
        Vector(
            "init",
            init,
            NODE,
            DC,
            {
                "ntma.type": 1,
                "ntma.sender_index": 0x0A0B0C0D,
                "ntma.has_mac2": 0,
                "ntma.session.kind": "node-DC",
                "ntma.encrypted.length": len(init) - 120,
            },
        ),
        Vector(
            "resp",
            resp,
            DC,
            NODE,
            {
                "ntma.type": 2,
                "ntma.sender_index": 0x01020304,
                "ntma.receiver_index": 0x0A0B0C0D,
                "ntma.session.init_frame": 1,
                "ntma.body_length": len(ack),
            },
        ),
        Vector(
            "cookie",
            cookie,
            DC,
            NODE,
            {"ntma.type": 3, "ntma.receiver_index": 0x0A0B0C0D},
        ),
        Vector(
            "signal",
            keepalive,
            NODE,
            DC,
            {
                "ntma.type": 5,
                "ntma.receiver_index": 0x01020304,
                "ntma.counter": 0,
                "ntma.plaintext_length": len(encode(Keepalive(txid=1))),
                "ntma.session.init_frame": 1,
                "ntma.session.resp_frame": 2,
                "ntma.session.direction": "initiator to responder",
            },
        ),
        *(
            Vector(
                f"data{i}",
                d,
                ODD_A,
                ODD_B,
                {
                    "ntma.type": 4,
                    "ntma.counter": i,
                    "ntma.plaintext_length": 60,
                    "ntma.session.direction": "initiator to responder",
                },
            )
            for i, d in enumerate(data)
        ),
        Vector(
            "keepalive",
            empty,
            ODD_B,
            ODD_A,
            {
                "ntma.type": 4,
                "ntma.keepalive": 1,
                "ntma.receiver_index": 0x0A0B0C0D,
                "ntma.session.direction": "responder to initiator",
            },
        ),
        Vector("punch", punch_datagram(), ODD_A, ODD_B, {"ntma.type": 4, "ntma.punch": 1}),
        Vector(
            "envelope",
            envelope.wrap(dc_id, TUNNEL_ID, t_init),
            NODE,
            RS,
            {"ntma.type": 6, "ntma.tunnel_id": hex(TUNNEL_ID), "ntma.dc_id": dc_id.hex(":")},
            {"ntma.type": 1, "ntma.has_mac2": 1, "ntma.session.kind": "tunnel (through the RS)"},
        ),
        Vector(
            "envelope-resp",
            envelope.wrap(dc_id, TUNNEL_ID, t_resp),
            ODD_B,
            ODD_A,
            {"ntma.type": 6},
            {"ntma.type": 2, "ntma.receiver_index": 0x0A0B0C0D},
        ),
    ]
    bad = [
        ("reserved", b"\x02\x04\x00\x01" + data[0][4:], DC),
        ("version1", b"\x01" + data[0][1:], DC),
        ("type7", b"\x02\x07" + data[0][2:], DC),
        ("header3", b"\x02\x01\x00", DC),
        ("init-truncated", init[:149], DC),
        ("resp-mac2", resp[:-1] + b"\x01", NODE),
        ("resp-truncated", resp[:60], NODE),
        ("cookie-63", cookie[:63], NODE),
        ("data-31", data[0][:31], PEER),
        ("envelope-data", envelope.wrap(dc_id, TUNNEL_ID, init)[:20] + data[0], RS),
        ("envelope-tunnel0", b"\x02\x06\x00\x00" + dc_id + bytes(8) + t_init, RS),
        ("envelope-short", b"\x02\x06\x00\x00" + dc_id + bytes(4), RS),
        ("envelope-truncated-init", envelope.wrap(dc_id, TUNNEL_ID, t_init)[:100], RS),
    ]
    zero = [  # index 0 is never allocated, but the parsers accept it: a warning
        ("init-index0", init[:4] + bytes(4) + init[8:], DC),
        ("data-index0", b"\x02\x04\x00\x00" + bytes(4) + data[0][8:], PEER),
        ("signal-index0", b"\x02\x05\x00\x00" + bytes(4) + keepalive[8:], DC),
    ]
    return (
        ok
        + [Vector(name, d, ODD_A, dst, malformed=True) for name, d, dst in bad]
        + [Vector(name, d, ODD_A, dst, index_zero=True) for name, d, dst in zero]
    )


NOT_NTMA = [  # on ports nobody registered: the heuristic must not claim them
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01",
    b"\x02\x04\x00\x00" + bytes(20),  # DATA header, too short
    b"\x02\x01\x00\x00" + bytes(100),  # INIT header, too short
    b"\x02\x03\x00\x00" + bytes(61),  # COOKIE_REPLY header, wrong size
    b"\x02\x02\x00\x00" + bytes(92) + b"\x01" * 16,  # RESP with a mac2
    b"\x02\x09\x00\x00" + bytes(40),
    b"\x01\x04\x00\x00" + bytes(40),
    b"\x02\x05\x00\x00" + bytes(40),  # SIGNAL to index 0
    b"\x02\x04\x00\x00" + bytes(40),  # DATA to index 0, not a PUNCH
]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> tuple[list[Vector], list[Decoded]]:
    vectors = _vectors()
    packets = [ipv4_udp(v.src, v.dst, v.datagram) for v in vectors]
    packets += [ipv4_udp(ODD_A, ODD_B, payload) for payload in NOT_NTMA]
    pcap = tmp_path_factory.mktemp("wireshark") / "vectors.pcap"
    write_pcap(pcap, packets)
    got = tshark_decode(pcap)
    assert len(got) == len(packets)
    return vectors, got


def _check(vector: Vector, got: Decoded) -> None:
    for expect, inner in ((vector.expect, False), (vector.inner, True)):
        for name, value in expect.items():
            have = got.get(name, inner)
            assert have is not None, f"{vector.name}: no {name} in {got}"
            if isinstance(value, int):
                assert int(have, 0) == value, f"{vector.name}: {name}={have}"
            else:
                assert have == value, f"{vector.name}: {name}={have!r}"


def test_every_datagram_type_decodes(decoded) -> None:
    vectors, got = decoded
    seen = set()
    for vector, result in zip(vectors, got, strict=False):
        if vector.malformed or vector.index_zero:
            continue
        assert not result.lua_error and not result.malformed, (vector.name, result.experts)
        _check(vector, result)
        seen.add(result.type)
        if result.inner:
            seen.add(result.int("ntma.type", inner=True))
    assert seen == {1, 2, 3, 4, 5, 6}


def test_clear_fields_are_the_codecs_bytes(decoded) -> None:
    vectors, got = decoded
    init = next(r for v, r in zip(vectors, got, strict=False) if v.name == "init")
    datagram = vectors[0].datagram
    assert init.get("ntma.ephemeral") == datagram[8:40].hex(":")
    assert init.get("ntma.mac1") == datagram[-32:-16].hex(":")
    assert init.get("ntma.mac2") == bytes(16).hex(":")
    # the init's payload: length u16, timestamp, body, padding (to REGISTER's reply_max)
    assert init.int("ntma.body_length") == len(datagram) - 150


def test_heuristic_finds_ntma_on_any_port(decoded) -> None:
    vectors, got = decoded
    odd = [(v, r) for v, r in zip(vectors, got, strict=False) if v.dst == ODD_B and not v.malformed]
    assert len(odd) >= 4
    for vector, result in odd:
        assert result.fields.get("ntma.type") is not None, vector.name


def test_counters_increase_and_the_session_is_linked(decoded) -> None:
    vectors, got = decoded
    data = [r for v, r in zip(vectors, got, strict=False) if v.name in ("data0", "data1", "data2")]
    counters = [r.int("ntma.counter") for r in data]
    assert counters == sorted(counters) == [0, 1, 2]
    assert {r.int("ntma.session.init_frame") for r in data} == {1}


def test_malformed_datagrams_are_flagged_not_errors(decoded) -> None:
    vectors, got = decoded
    for vector, result in zip(vectors, got, strict=False):
        if vector.malformed:
            assert not result.lua_error, vector.name
            assert result.malformed, f"{vector.name}: not flagged: {result}"
        if vector.index_zero:
            assert not result.lua_error and not result.malformed, vector.name
            assert any(e.startswith("ntma.index_zero") for e in result.experts), result


def _minimum(datagram: bytes) -> int:
    """The least size a datagram of its type can have (an envelope: with what it carries)."""
    least = {1: 150, 2: 94, 3: 64, 4: 32, 5: 32}
    if datagram[1] == 6:
        return 20 + least[datagram[21]]
    return least[datagram[1]]


def test_every_truncation_is_flagged_or_still_valid(tmp_path) -> None:
    """Each datagram cut short at many lengths, on the DC's port (so the dissector, not the
    heuristic, reads it): never a Lua error, and malformed whenever it is cut below its
    type's least size. (A cut above it still parses, as it does in ntma/proto: mac1 or the
    AEAD tag is what then fails, and the dissector cannot check those.)"""
    cuts = []
    for vector in _vectors()[:11]:  # the valid ones
        for length in range(1, len(vector.datagram), 3):
            cuts.append((vector, vector.datagram[:length]))
    pcap = tmp_path / "cuts.pcap"
    write_pcap(pcap, [ipv4_udp(ODD_A, DC, cut) for _, cut in cuts])
    got = tshark_decode(pcap)
    assert len(got) == len(cuts)
    for (vector, cut), result in zip(cuts, got, strict=True):
        assert not result.lua_error, (vector.name, len(cut))
        if len(cut) < _minimum(vector.datagram):
            assert result.malformed, (vector.name, len(cut), result)


def test_other_udp_is_left_alone(decoded) -> None:
    vectors, got = decoded
    for result in got[len(vectors) :]:
        assert "ntma.type" not in result.fields and not result.experts, result
