"""Wire codec: hand-written byte vectors (h11 style) and Hypothesis properties.

The expected hex below was written by hand from the layout in ntma/proto/buffer.py and
ntma/proto/messages.py, field by field, never produced with the encoder:

    u8/u16/u32/u64      big endian
    text                u16 byte length + UTF-8
    endpoint            family u8 (4 | 6) + 4 or 16 address bytes + u16 port
    endpoint list       u8 count + endpoints
    ipv4                4 raw bytes
    key                 32 raw bytes
    Direction           tunnel_id u32, route u8, role u8, peer_fqdn text, peer_vip ipv4,
                        peer_public_key key, peer_endpoints endpoint list
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ntma.proto.buffer import CodecError, Reader, Writer
from ntma.proto.crypto import SignalBox, StaticKey
from ntma.proto.messages import (
    MESSAGE_TYPES,
    Deregister,
    DeregisterAck,
    Direction,
    DirectionRequest,
    DirectionResponse,
    Keepalive,
    KeepaliveAck,
    MsgType,
    Probe,
    ProbeAck,
    Punch,
    Register,
    RegisterAck,
    RelayBind,
    RelayBound,
    RelayInfo,
    Role,
    Route,
    RouteDirection,
    RouteDirectionAck,
    Status,
    TunnelRequest,
    TunnelResponse,
    decode_body,
    encode_body,
    message_type,
)
from ntma.proto.packet import (
    DATA_OVERHEAD,
    SIG_HEADER,
    TAG_LEN,
    VERSION,
    UnknownPeer,
    is_data,
    open_message,
    pack_data_header,
    seal_message,
    unpack_data_header,
)

KEY_00_1F = bytes(range(32))  # 000102...1f

DIRECTION_TO_CN = Direction(
    tunnel_id=0x11223344,
    route=Route.DIRECT,
    role=Role.INITIATE,
    peer_fqdn="cn.ntm.example",
    peer_vip="10.99.0.6",
    peer_public_key=KEY_00_1F,
    peer_endpoints=[("198.51.100.30", 7401), ("2001:db8:1::30", 7401)],
)

DIRECTION_TO_MN = Direction(
    tunnel_id=0x11223344,
    route=Route.DIRECT,
    role=Role.RESPOND,
    peer_fqdn="mn.ntm.example",
    peer_vip="10.99.0.5",
    peer_public_key=b"\x42" * 32,
    peer_endpoints=[],
)

# (message, body hex); whitespace in the hex separates fields and is ignored.
VECTORS = [
    pytest.param(
        Register(
            txid=0x01020304,
            timestamp_ms=1_700_000_000_000,
            fqdn="mn.ntm.example",
            local_endpoints=[("10.10.1.2", 7401), ("2001:db8::1", 7401)],
        ),
        "01020304"  # txid
        " 0000018bcfe56800"  # timestamp 1_700_000_000_000 ms
        " 000e 6d6e2e6e746d2e6578616d706c65"  # "mn.ntm.example", 14 bytes
        " 02"  # two endpoints
        " 04 0a0a0102 1ce9"  # 10.10.1.2:7401
        " 06 20010db8000000000000000000000001 1ce9",  # [2001:db8::1]:7401
        id="register",
    ),
    pytest.param(
        Register(txid=0, timestamp_ms=0, fqdn="bücher.example", local_endpoints=[]),
        "00000000 0000000000000000"
        " 000f 62c3bc636865722e6578616d706c65"  # 14 characters but 15 UTF-8 bytes
        " 00",  # no endpoints
        id="register-utf8-no-endpoints",
    ),
    pytest.param(
        RegisterAck(
            txid=0x01020304,
            status=Status.OK,
            vip="10.99.0.5",
            prefix_len=16,
            observed=("198.51.100.41", 7401),
            keepalive_s=15,
            reason="",
        ),
        "01020304 00"  # txid, OK
        " 0a630005 10"  # vip 10.99.0.5, /16
        " 04 c6336429 1ce9"  # observed 198.51.100.41:7401
        " 000f"  # keepalive 15 s
        " 0000",  # empty reason
        id="register-ack-ok",
    ),
    pytest.param(
        RegisterAck(txid=7, status=Status.REFUSED, reason="key not admitted"),
        "00000007 05"  # txid, REFUSED
        " 00000000 00"  # default vip 0.0.0.0, prefix 0
        " 04 00000000 0000"  # default observed 0.0.0.0:0
        " 0000"  # keepalive 0
        " 0010 6b6579206e6f742061646d6974746564",  # "key not admitted"
        id="register-ack-refused",
    ),
    pytest.param(
        Keepalive(txid=1, timestamp_ms=2**64 - 1),
        "00000001 ffffffffffffffff",
        id="keepalive",
    ),
    pytest.param(
        KeepaliveAck(txid=0xDEADBEEF, status=Status.OK, observed=("2001:db8::41", 65535)),
        "deadbeef 00 06 20010db8000000000000000000000041 ffff",
        id="keepalive-ack-v6",
    ),
    pytest.param(
        KeepaliveAck(txid=2, status=Status.REREGISTER, observed=("192.0.2.1", 1)),
        "00000002 06 04 c0000201 0001",
        id="keepalive-ack-reregister",
    ),
    pytest.param(
        DirectionRequest(txid=0x0A0B0C0D, timestamp_ms=1_700_000_000_000, fqdn="cn.ntm.example"),
        "0a0b0c0d 0000018bcfe56800 000e 636e2e6e746d2e6578616d706c65",
        id="direction-request",
    ),
    pytest.param(
        DirectionResponse(txid=0x0A0B0C0D, status=Status.OK, direction=DIRECTION_TO_CN),
        "0a0b0c0d 00"  # txid, OK
        " 11223344 01 01"  # tunnel id, DIRECT, INITIATE
        " 000e 636e2e6e746d2e6578616d706c65"  # "cn.ntm.example"
        " 0a630006"  # peer vip 10.99.0.6
        " 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"  # peer key
        " 02"  # two endpoints
        " 04 c633641e 1ce9"  # 198.51.100.30:7401
        " 06 20010db8000100000000000000000030 1ce9",  # [2001:db8:1::30]:7401
        id="direction-response-ok",
    ),
    pytest.param(
        DirectionResponse(txid=0x0A0B0C0D, status=Status.NOT_NTM),
        "0a0b0c0d 01",  # no direction follows
        id="direction-response-not-ntm",
    ),
    pytest.param(
        RouteDirection(txid=5, direction=DIRECTION_TO_MN),
        "00000005"
        " 11223344 01 02"  # tunnel id, DIRECT, RESPOND
        " 000e 6d6e2e6e746d2e6578616d706c65"  # "mn.ntm.example"
        " 0a630005"  # peer vip 10.99.0.5
        " 4242424242424242424242424242424242424242424242424242424242424242"  # peer key
        " 00",  # no endpoints
        id="route-direction",
    ),
    pytest.param(
        RouteDirectionAck(txid=5, tunnel_id=0x11223344),
        "00000005 11223344",
        id="route-direction-ack",
    ),
    pytest.param(
        Deregister(txid=9, timestamp_ms=0),
        "00000009 0000000000000000",
        id="deregister",
    ),
    pytest.param(DeregisterAck(txid=9), "00000009", id="deregister-ack"),
    pytest.param(
        TunnelRequest(
            txid=0x01020304,
            tunnel_id=0x11223344,
            timestamp_ms=0x0102030405060708,
            ephemeral=b"\xaa" * 32,
            vip="10.99.0.5",
        ),
        "01020304 11223344 0102030405060708"
        " aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"  # ephemeral
        " 0a630005",  # initiator's vip
        id="tunnel-request",
    ),
    pytest.param(
        TunnelResponse(
            txid=0x01020304, tunnel_id=0x11223344, ephemeral=b"\xbb" * 32, vip="10.99.0.6"
        ),
        "01020304 11223344"
        " bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"  # ephemeral
        " 0a630006",  # responder's vip
        id="tunnel-response",
    ),
]


def _type_and_body(message, hex_body: str) -> tuple[MsgType, bytes]:
    return message_type(message), bytes.fromhex(hex_body)


@pytest.mark.parametrize(("message", "hex_body"), VECTORS)
def test_vector_encode(message, hex_body):
    assert encode_body(message).hex() == bytes.fromhex(hex_body).hex()


@pytest.mark.parametrize(("message", "hex_body"), VECTORS)
def test_vector_decode(message, hex_body):
    msg_type, body = _type_and_body(message, hex_body)
    decoded = decode_body(msg_type, body)
    assert decoded == message
    assert type(decoded) is type(message)


@pytest.mark.parametrize(("message", "hex_body"), VECTORS)
def test_vector_truncated_at_every_position(message, hex_body):
    msg_type, body = _type_and_body(message, hex_body)
    for cut in range(len(body)):
        with pytest.raises(CodecError):
            decode_body(msg_type, body[:cut])


@pytest.mark.parametrize(("message", "hex_body"), VECTORS)
@pytest.mark.parametrize("extra", [b"\x00", b"\xff\xff", bytes(40)])
def test_vector_trailing_bytes(message, hex_body, extra):
    msg_type, body = _type_and_body(message, hex_body)
    with pytest.raises(CodecError):  # "trailing", or a malformed optional trailing field
        decode_body(msg_type, body + extra)


GRANT = bytes(range(92))

# Messages whose last field is optional: truncating exactly before it gives a valid
# shorter message, so they are checked apart from VECTORS.
OPTIONAL_VECTORS = [
    pytest.param(
        RegisterAck(
            0x01020304,
            Status.OK,
            "10.99.0.5",
            16,
            ("198.51.100.41", 7401),
            15,
            "",
            probe=("198.51.100.10", 7401),
        ),
        "01020304 00 0a630005 10 04 c6336429 1ce9 000f 0000"
        " 04 c633640a 1ce9",  # probe endpoint 198.51.100.10:7401
        id="register-ack-with-probe",
    ),
    pytest.param(
        RouteDirection(
            0x00000005,
            Direction(
                0x11223344,
                Route.RELAY,
                Role.INITIATE,
                "cn",
                "10.99.0.3",
                b"\x42" * 32,
                [],
                RelayInfo(("198.51.100.60", 7500), b"\x24" * 32, GRANT),
            ),
        ),
        "00000005 11223344 03 01 0002 636e 0a630003" + "42" * 32 + " 00"
        " 01"  # relay present
        " 04 c633643c 1d4c" + "24" * 32 + GRANT.hex(),
        id="route-direction-with-relay",
    ),
]

NEW_VECTORS = [
    pytest.param(Probe(0x01020304, 1_700_000_000_000), "01020304 0000018bcfe56800", id="probe"),
    pytest.param(
        ProbeAck(0x01020304, ("198.51.100.41", 1234)), "01020304 04 c6336429 04d2", id="probe-ack"
    ),
    pytest.param(Punch(0x11223344), "11223344", id="punch"),
    pytest.param(
        RelayBind(7, 1_700_000_000_000, GRANT),
        "00000007 0000018bcfe56800" + GRANT.hex(),
        id="relay-bind",
    ),
    pytest.param(
        RelayBound(7, 0x11223344, ("198.51.100.51", 7401)),
        "00000007 11223344 04 c6336433 1ce9",
        id="relay-bound",
    ),
]


@pytest.mark.parametrize(("message", "hex_body"), NEW_VECTORS + OPTIONAL_VECTORS)
def test_new_vectors_both_ways(message, hex_body):
    body = bytes.fromhex(hex_body)
    assert encode_body(message) == body
    assert decode_body(message_type(message), body) == message
    with pytest.raises(CodecError):
        decode_body(message_type(message), body + b"\x07")


@pytest.mark.parametrize(("message", "hex_body"), NEW_VECTORS)
def test_new_vectors_truncated_at_every_position(message, hex_body):
    body = bytes.fromhex(hex_body)
    for cut in range(len(body)):
        with pytest.raises(CodecError):
            decode_body(message_type(message), body[:cut])


@pytest.mark.parametrize(("message", "hex_body"), OPTIONAL_VECTORS)
def test_optional_field_truncated_is_refused_or_the_shorter_message(message, hex_body):
    body = bytes.fromhex(hex_body)
    for cut in range(len(body)):
        try:
            decoded = decode_body(message_type(message), body[:cut])
        except CodecError:
            continue
        assert decoded != message and encode_body(decoded) == body[:cut]


def test_vectors_cover_every_message_type():
    covered = {message_type(p.values[0]) for p in VECTORS + NEW_VECTORS}
    assert covered == set(MESSAGE_TYPES)


def test_message_type_numbers():
    # The type byte of the outer header; fixed by the protocol.
    assert {t.name: int(t) for t in MsgType} == {
        "REGISTER": 0x01,
        "REGISTER_ACK": 0x02,
        "KEEPALIVE": 0x03,
        "KEEPALIVE_ACK": 0x04,
        "DIRECTION_REQUEST": 0x05,
        "DIRECTION_RESPONSE": 0x06,
        "ROUTE_DIRECTION": 0x07,
        "ROUTE_DIRECTION_ACK": 0x08,
        "DEREGISTER": 0x09,
        "DEREGISTER_ACK": 0x0A,
        "PROBE": 0x0B,
        "PROBE_ACK": 0x0C,
        "TUNNEL_REQUEST": 0x20,
        "TUNNEL_RESPONSE": 0x21,
        "PUNCH": 0x22,
        "DATA": 0x30,
        "RELAY_BIND": 0x40,
        "RELAY_BOUND": 0x41,
        "RELAY_ENVELOPE": 0x42,
    }


# --- specific malformed bodies --------------------------------------------------------


@pytest.mark.parametrize(
    ("msg_type", "hex_body", "match"),
    [
        (MsgType.KEEPALIVE_ACK, "00000001 00 05 c0000201 0001", "address family 5"),
        (MsgType.KEEPALIVE_ACK, "00000001 00 00 c0000201 0001", "address family 0"),
        (MsgType.KEEPALIVE_ACK, "00000001 09 04 c0000201 0001", "unknown Status 9"),
        (MsgType.DIRECTION_REQUEST, "00000001 0000000000000000 0002 c328", "UTF-8"),
        (MsgType.DIRECTION_REQUEST, "00000001 0000000000000000 0003 6162", "truncated"),
        (
            MsgType.ROUTE_DIRECTION,
            "00000005 11223344 04 01 0000 0a630005" + "42" * 32 + "00",
            "unknown Route 4",
        ),
        (
            MsgType.ROUTE_DIRECTION,
            "00000005 11223344 01 00 0000 0a630005" + "42" * 32 + "00",
            "unknown Role 0",
        ),
        # A count of 2 endpoints with only one present.
        (MsgType.REGISTER, "00000001 0000000000000000 0000 02 04 c0000201 0001", "truncated"),
        # NOT_NTM followed by a direction: the direction is trailing garbage.
        (MsgType.DIRECTION_RESPONSE, "0a0b0c0d 01 11223344", "trailing"),
        # OK without a direction.
        (MsgType.DIRECTION_RESPONSE, "0a0b0c0d 00", "truncated"),
        (MsgType.DATA, "", "unknown signalling type"),
        (0x00, "", "unknown signalling type"),
        (0xFF, "00000001", "unknown signalling type"),
        (0x1234, "00000001", "unknown signalling type"),
    ],
)
def test_malformed_body(msg_type, hex_body, match):
    with pytest.raises(CodecError, match=match):
        decode_body(msg_type, bytes.fromhex(hex_body))


@pytest.mark.parametrize(
    "message",
    [
        DirectionResponse(txid=1, status=Status.OK, direction=None),
        DirectionResponse(txid=1, status=Status.UNKNOWN, direction=DIRECTION_TO_CN),
        TunnelRequest(1, 2, 3, b"short", "10.99.0.5"),
        TunnelResponse(1, 2, b"\x00" * 33, "10.99.0.5"),
        TunnelResponse(1, 2, b"\x00" * 32, "2001:db8::1"),  # vip must be IPv4
        RegisterAck(1, Status.OK, vip="not an address"),
        RegisterAck(1, Status.OK, prefix_len=256),  # u8 out of range
        Register(1, 0, "a", [("not an address", 1)]),
        Register(1, 0, "a", [("192.0.2.1", 1)] * 256),  # count is a u8
        Register(1, 0, "x" * 65536, []),  # text length is a u16
        Register(1, 0, "\ud800", []),  # lone surrogate is not UTF-8
        RouteDirection(1, Direction(1, Route.DIRECT, Role.RESPOND, "a", "192.0.2.1", b"", [])),
    ],
)
def test_encode_refuses_invalid_messages(message):
    with pytest.raises(CodecError):
        encode_body(message)


@pytest.mark.parametrize(
    "message",
    [
        Register(2**32, 0, "a", []),  # txid is a u32
        Register(-1, 0, "a", []),
        Keepalive(1, 2**64),  # timestamp is a u64
        KeepaliveAck(1, Status.OK, ("192.0.2.1", 65536)),  # port is a u16
        RouteDirectionAck(1, -1),
    ],
)
def test_encode_out_of_range_integer_raises_codec_error(message):
    with pytest.raises(CodecError):
        encode_body(message)


# --- buffer primitives ----------------------------------------------------------------


def test_writer_reader_primitives_by_hand():
    w = Writer().u8(0xAB).u16(0x0102).u32(0x03040506).u64(0x0708090A0B0C0D0E)
    w.text("é").blob(b"").endpoint(("::", 0)).ipv4("255.255.255.255").endpoints([])
    expected = bytes.fromhex(
        "ab 0102 03040506 0708090a0b0c0d0e"
        " 0002 c3a9"
        " 0000"
        " 06 00000000000000000000000000000000 0000"
        " ffffffff"
        " 00"
    )
    assert w.getvalue() == expected
    r = Reader(memoryview(expected))
    assert r.u8() == 0xAB
    assert r.u16() == 0x0102
    assert r.u32() == 0x03040506
    assert r.u64() == 0x0708090A0B0C0D0E
    assert r.text() == "é"
    assert r.blob() == b""
    assert r.endpoint() == ("::", 0)
    assert r.ipv4() == "255.255.255.255"
    assert r.endpoints() == []
    r.expect_end()
    assert r.rest() == b""
    with pytest.raises(CodecError, match="truncated"):
        r.u8()


def test_reader_rest_and_raw():
    r = Reader(b"\x01\x02\x03\x04")
    assert r.raw(0) == b""
    assert r.raw(1) == b"\x01"
    with pytest.raises(CodecError):
        r.raw(4)
    assert r.rest() == b"\x02\x03\x04"  # the failed read consumed nothing
    r.expect_end()


# --- packet headers -------------------------------------------------------------------


def test_data_header_by_hand():
    header = pack_data_header(0x11223344, 5)
    assert header == bytes.fromhex("01 30 0000 11223344 0000000000000005")
    datagram = header + bytes(TAG_LEN)
    assert len(datagram) == DATA_OVERHEAD == 32
    assert is_data(datagram)
    assert unpack_data_header(datagram) == (0x11223344, 5)
    assert unpack_data_header(pack_data_header(2**32 - 1, 2**64 - 1) + bytes(16)) == (
        2**32 - 1,
        2**64 - 1,
    )


@pytest.mark.parametrize(
    ("hex_datagram", "match"),
    [
        ("", "shorter than the common header"),
        ("01", "shorter than the common header"),
        ("02 30 0000 11223344 0000000000000005" + "00" * 16, "version 2"),
        ("01 30 0000 11223344 0000000000000005" + "00" * 15, "too short"),
        ("01 03 0000 11223344 0000000000000005" + "00" * 16, "not a data packet"),
    ],
)
def test_data_header_malformed(hex_datagram, match):
    with pytest.raises(CodecError, match=match):
        unpack_data_header(bytes.fromhex(hex_datagram))


def test_signalling_header_layout_by_hand():
    a, b = StaticKey.generate(), StaticKey.generate()
    nonce = bytes.fromhex("000102030405060708090a0b")
    msg = DeregisterAck(txid=9)
    sealed = seal_message(msg, SignalBox(a, b.public), a.public, nonce)
    assert sealed[:4] == bytes.fromhex("01 0a 0000")  # version 1, DEREGISTER_ACK, reserved
    assert sealed[4:36] == a.public
    assert sealed[36:48] == nonce
    assert len(sealed) == SIG_HEADER.size + 4 + TAG_LEN == 48 + 4 + 16
    assert not is_data(sealed)
    assert open_message(sealed, {a.public: SignalBox(b, a.public)}.get) == (a.public, msg)


# --- Hypothesis: strategies -----------------------------------------------------------

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
texts = st.text(st.characters(codec="utf-8"), max_size=40)
fqdns = st.one_of(
    texts,
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,4}", fullmatch=True),
)
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str)
endpoints = st.tuples(st.one_of(ipv4s, ipv6s), u16)
endpoint_lists = st.lists(endpoints, max_size=6)
keys = st.binary(min_size=32, max_size=32)
statuses = st.sampled_from(Status)

grants = st.binary(min_size=92, max_size=92)
relays = st.one_of(st.none(), st.builds(RelayInfo, endpoints, keys, grants))
directions = st.builds(
    Direction,
    tunnel_id=u32,
    route=st.sampled_from(Route),
    role=st.sampled_from(Role),
    peer_fqdn=fqdns,
    peer_vip=ipv4s,
    peer_public_key=keys,
    peer_endpoints=endpoint_lists,
    relay=relays,
)

MESSAGE_STRATEGIES = {
    MsgType.REGISTER: st.builds(Register, u32, u64, fqdns, endpoint_lists),
    MsgType.REGISTER_ACK: st.builds(
        RegisterAck, u32, statuses, ipv4s, u8, endpoints, u16, texts, st.none() | endpoints
    ),
    MsgType.KEEPALIVE: st.builds(Keepalive, u32, u64),
    MsgType.KEEPALIVE_ACK: st.builds(KeepaliveAck, u32, statuses, endpoints),
    MsgType.DIRECTION_REQUEST: st.builds(DirectionRequest, u32, u64, fqdns),
    MsgType.DIRECTION_RESPONSE: st.one_of(
        st.builds(DirectionResponse, u32, st.just(Status.OK), directions),
        st.builds(DirectionResponse, u32, statuses.filter(lambda s: s != Status.OK), st.none()),
    ),
    MsgType.ROUTE_DIRECTION: st.builds(RouteDirection, u32, directions),
    MsgType.ROUTE_DIRECTION_ACK: st.builds(RouteDirectionAck, u32, u32),
    MsgType.DEREGISTER: st.builds(Deregister, u32, u64),
    MsgType.DEREGISTER_ACK: st.builds(DeregisterAck, u32),
    MsgType.TUNNEL_REQUEST: st.builds(TunnelRequest, u32, u32, u64, keys, ipv4s),
    MsgType.TUNNEL_RESPONSE: st.builds(TunnelResponse, u32, u32, keys, ipv4s),
    MsgType.PROBE: st.builds(Probe, u32, u64),
    MsgType.PROBE_ACK: st.builds(ProbeAck, u32, endpoints),
    MsgType.PUNCH: st.builds(Punch, u32),
    MsgType.RELAY_BIND: st.builds(RelayBind, u32, u64, grants),
    MsgType.RELAY_BOUND: st.builds(RelayBound, u32, u32, endpoints),
}
any_message = st.one_of(*MESSAGE_STRATEGIES.values())


def test_strategies_cover_every_message_type():
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_TYPES)


# --- Hypothesis: properties -----------------------------------------------------------


@pytest.mark.parametrize("msg_type", sorted(MESSAGE_STRATEGIES), ids=lambda t: t.name)
@given(data=st.data())
def test_round_trip_is_identity(msg_type, data):
    message = data.draw(MESSAGE_STRATEGIES[msg_type])
    assert message_type(message) == msg_type
    body = encode_body(message)
    decoded = decode_body(msg_type, body)
    assert decoded == message
    assert encode_body(decoded) == body


@given(message=any_message)
def test_truncated_or_extended_body_is_refused(message):
    msg_type = message_type(message)
    body = encode_body(message)
    for cut in range(len(body)):
        try:
            shorter = decode_body(msg_type, body[:cut])
        except CodecError:
            continue
        # Only a message whose optional trailing field was cut off decodes, and then
        # as exactly the shorter message.
        assert shorter != message and encode_body(shorter) == body[:cut]
    with pytest.raises(CodecError):
        decode_body(msg_type, body + b"\x00")


@given(msg_type=st.integers(0, 255), data=st.binary(max_size=300))
@example(msg_type=MsgType.REGISTER, data=bytes.fromhex("00000000 0000000000000000 0000 00"))
@example(msg_type=MsgType.DATA, data=b"")
def test_decode_arbitrary_bytes_raises_only_codec_error(msg_type, data):
    try:
        message = decode_body(msg_type, data)
    except CodecError:
        return
    # Whatever decodes is a well-formed message that re-encodes to the same bytes.
    assert message_type(message) == msg_type
    assert encode_body(message) == data


@given(message=any_message, data=st.data())
def test_decode_mutated_body_raises_only_codec_error(message, data):
    """Mutations of valid bodies reach deeper into the decoders than random bytes."""
    msg_type = message_type(message)
    body = bytearray(encode_body(message))
    for _ in range(data.draw(st.integers(1, 4))):
        if body and data.draw(st.booleans()):
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(u8)
        else:
            at = data.draw(st.integers(0, len(body)))
            del body[at : at + data.draw(st.integers(0, 3))]
    other_type = data.draw(st.one_of(st.just(msg_type), st.sampled_from(MsgType)))
    try:
        decoded = decode_body(other_type, bytes(body))
    except CodecError:
        return
    assert encode_body(decoded) == bytes(body)


_LOCAL = StaticKey.generate()
_PEER = StaticKey.generate()
_PEER_BOX = SignalBox(_LOCAL, _PEER.public)


def _box_for(sender: bytes):
    return _PEER_BOX if sender == _PEER.public else None


datagram_like = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda version, kind, reserved, sender, nonce, rest: (
            SIG_HEADER.pack(version, kind, reserved, sender, nonce) + rest
        ),
        st.sampled_from([VERSION, 0, 2, 255]),
        u8,
        u16,
        st.one_of(st.just(_PEER.public), keys),
        st.binary(min_size=12, max_size=12),
        st.binary(max_size=120),
    ),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(datagram=datagram_like)
def test_open_message_arbitrary_bytes_raises_only_codec_error(datagram):
    try:
        open_message(datagram, _box_for)
    except UnknownPeer:
        assert datagram[4:36] != _PEER.public
    except CodecError:
        pass
    else:  # pragma: no cover - forging AES-GCM by chance
        raise AssertionError("random bytes authenticated")


@given(kind=u8, body=st.binary(max_size=120), nonce=st.binary(min_size=12, max_size=12))
def test_open_message_authenticated_garbage_raises_only_codec_error(kind, body, nonce):
    """A peer holding the key can send any body under any type: still only CodecError."""
    header = SIG_HEADER.pack(VERSION, kind, 0, _PEER.public, nonce)
    datagram = header + SignalBox(_PEER, _LOCAL.public).seal(nonce, body, header)
    try:
        sender, message = open_message(datagram, _box_for)
    except CodecError:
        return
    assert sender == _PEER.public
    assert message_type(message) == kind
    assert encode_body(message) == body


@given(message=any_message, nonce=st.binary(min_size=12, max_size=12))
def test_sealed_round_trip(message, nonce):
    sealed = seal_message(message, SignalBox(_PEER, _LOCAL.public), _PEER.public, nonce)
    assert open_message(sealed, _box_for) == (_PEER.public, message)


@given(
    datagram=st.one_of(
        st.binary(max_size=80),
        st.binary(min_size=2).map(lambda b: bytes([VERSION, MsgType.DATA]) + b),
    )
)
def test_unpack_data_header_arbitrary_bytes_raises_only_codec_error(datagram):
    try:
        tunnel_id, counter = unpack_data_header(datagram)
    except CodecError:
        return
    assert datagram[0] == VERSION and datagram[1] == MsgType.DATA
    assert len(datagram) >= DATA_OVERHEAD
    expected = pack_data_header(tunnel_id, counter)
    # The reserved u16 is not checked here (it is authenticated as AAD by Tunnel.open).
    assert datagram[:2] + datagram[4:16] == expected[:2] + expected[4:16]


@given(tunnel_id=u32, counter=u64)
def test_data_header_round_trip(tunnel_id, counter):
    datagram = pack_data_header(tunnel_id, counter) + bytes(TAG_LEN)
    assert is_data(datagram)
    assert unpack_data_header(datagram) == (tunnel_id, counter)


@given(address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), port=u16)
def test_endpoint_round_trip_matches_layout(address, port):
    raw = Writer().endpoint((str(address), port)).getvalue()
    family = 4 if isinstance(address, ipaddress.IPv4Address) else 6
    assert raw == bytes([family]) + address.packed + port.to_bytes(2, "big")
    r = Reader(raw)
    assert r.endpoint() == (str(address), port)
    r.expect_end()


# --- issue 10: limits where fields enter ----------------------------------------------


@given(size=st.integers(0, 600), count=st.integers(0, 40))
def test_register_decodes_exactly_within_the_name_and_endpoint_limits(size, count):
    from ntma.proto.messages import MAX_LOCAL_ENDPOINTS, MAX_NAME_BYTES

    body = (
        Writer().u32(1).u64(0).blob(b"a" * size).u8(count).getvalue()
        + Writer().endpoint(("192.0.2.1", 7401)).getvalue() * count
    )
    if size <= MAX_NAME_BYTES and count <= MAX_LOCAL_ENDPOINTS:
        assert encode_body(decode_body(MsgType.REGISTER, body)) == body
    else:
        with pytest.raises(CodecError, match="limit"):
            decode_body(MsgType.REGISTER, body)
