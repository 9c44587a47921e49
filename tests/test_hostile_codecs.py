"""Issue 10: hostile inputs the pure codecs refuse (or survive), each as a byte vector.

Every case here crashed a daemon, or was accepted though it could not be sent back, before
the fix it names; the fuzz harness (ntma/fuzz) found or confirmed each.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from dnslib import DNSRecord

from ntma.dc.coordinator import Coordinator
from ntma.dc.store import NodeStore
from ntma.fuzz import seeds
from ntma.proto import dns
from ntma.proto.buffer import CodecError, Reader, Writer
from ntma.proto.ether import checksum, clamp_mss
from ntma.proto.messages import (
    MAX_LOCAL_ENDPOINTS,
    MAX_NAME_BYTES,
    Direction,
    DirectionRequest,
    MsgType,
    Register,
    Role,
    Route,
    RouteDirection,
    Status,
    decode_body,
    encode_body,
    sendable_endpoint,
    sendable_endpoints,
)
from ntma.proto.packet import SIG_HEADER, VERSION
from ntma.proto.replay import WINDOW_BITS, ReplayWindow

TXID_TS = "00000001 0000018bcfe56800"  # txid 1, timestamp 1_700_000_000_000 ms
EP = "04 0a0a0102 1ce9"  # 10.10.1.2:7401


def _name_field(size: int) -> str:
    return f"{size:04x}" + "61" * size


# --- names: at most 253 bytes where they enter ----------------------------------------------


@pytest.mark.parametrize("size", [1, 63, MAX_NAME_BYTES])
def test_register_name_up_to_253_bytes_decodes(size):
    body = bytes.fromhex(TXID_TS + _name_field(size) + "00")
    msg = decode_body(MsgType.REGISTER, body)
    assert len(msg.fqdn) == size and encode_body(msg) == body


@pytest.mark.parametrize(
    ("msg_type", "tail"), [(MsgType.REGISTER, "00"), (MsgType.DIRECTION_REQUEST, "")]
)
@pytest.mark.parametrize("size", [MAX_NAME_BYTES + 1, 0xFFFF])
def test_names_over_253_bytes_are_refused(msg_type, tail, size):
    body = bytes.fromhex(TXID_TS + _name_field(size) + tail)
    with pytest.raises(CodecError, match="over its limit of 253"):
        decode_body(msg_type, body)


def test_names_over_253_bytes_do_not_encode():
    with pytest.raises(CodecError):
        encode_body(Register(1, 0, "a" * 254, []))
    with pytest.raises(CodecError):
        encode_body(DirectionRequest(1, 0, "a" * 254))
    direction = Direction(1, Route.DIRECT, Role.RESPOND, "a" * 254, "10.99.0.5", bytes(32), [])
    with pytest.raises(CodecError):
        encode_body(RouteDirection(1, direction))


def test_direction_peer_name_over_253_bytes_is_refused():
    body = bytes.fromhex(
        "00000005 11223344 01 02" + _name_field(254) + " 0a630005" + "42" * 32 + " 00"
    )
    with pytest.raises(CodecError, match="over its limit"):
        decode_body(MsgType.ROUTE_DIRECTION, body)


# --- endpoints: at most 16 in a Register, 255 in a Direction ----------------------------------


def test_register_with_16_endpoints_decodes_17_is_refused():
    ok = bytes.fromhex(TXID_TS + "0001 61 10" + EP * 16)
    assert len(decode_body(MsgType.REGISTER, ok).local_endpoints) == MAX_LOCAL_ENDPOINTS == 16
    too_many = bytes.fromhex(TXID_TS + "0001 61 11" + EP * 17)
    with pytest.raises(CodecError, match="more than the limit of 16"):
        decode_body(MsgType.REGISTER, too_many)
    with pytest.raises(CodecError):
        encode_body(Register(1, 0, "a", [("10.10.1.2", 7401)] * 17))


def test_register_with_255_endpoints_is_refused_before_reading_them():
    """Before issue 10 this decoded, and every Direction naming the node (255 + its mapped
    endpoint) failed to encode inside the DC."""
    body = bytes.fromhex(TXID_TS + "0001 61 ff" + EP * 255)
    with pytest.raises(CodecError, match="255 endpoints"):
        decode_body(MsgType.REGISTER, body)


def test_direction_naming_255_endpoints_still_encodes():
    endpoints = [(f"10.0.{i // 250}.{i % 250 + 1}", 7401) for i in range(255)]
    direction = Direction(7, Route.DIRECT, Role.INITIATE, "cn", "10.99.0.6", bytes(32), endpoints)
    body = encode_body(RouteDirection(1, direction))
    assert decode_body(MsgType.ROUTE_DIRECTION, body).direction.peer_endpoints == endpoints


@pytest.mark.parametrize(
    ("endpoint", "sendable"),
    [
        (("198.51.100.30", 7401), True),
        (("10.20.0.2", 1), True),
        (("127.0.0.1", 7401), True),  # the lab and tests run roles on one host
        (("198.51.100.30", 0), False),
        (("0.0.0.0", 7401), False),
        (("255.255.255.255", 7401), False),
        (("224.0.0.1", 7401), False),
        (("240.0.0.1", 7401), False),
        (("2001:db8::1", 7401), False),  # our sockets are IPv4
        (("not an address", 7401), False),
    ],
)
def test_sendable_endpoint(endpoint, sendable):
    assert sendable_endpoint(endpoint) is sendable


def test_sendable_endpoints_keeps_order_and_drops_duplicates():
    eps = [("2001:db8::1", 1), ("192.0.2.1", 1), ("0.0.0.0", 1), ("192.0.2.2", 2), ("192.0.2.1", 1)]
    assert sendable_endpoints(eps) == [("192.0.2.1", 1), ("192.0.2.2", 2)]


def test_reader_writer_limits():
    assert Reader(bytes.fromhex("0003 616263")).text(3) == "abc"
    with pytest.raises(CodecError):
        Reader(bytes.fromhex("0004 61626364")).text(3)
    with pytest.raises(CodecError):
        Writer().blob(b"abcd", 3)
    with pytest.raises(CodecError):
        Reader(bytes.fromhex("02" + EP * 2)).endpoints(1)
    assert Writer().endpoints([("10.10.1.2", 7401)], 1).getvalue() == bytes.fromhex("01" + EP)


# --- the DC survives what used to stop it --------------------------------------------------


def _dc() -> Coordinator:
    return Coordinator(
        static=seeds.key("dc"),
        store=NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16")),
        zone="ntm.example",
        admission={"mn.ntm.example": seeds.key("mn").public},
        keepalive_s=15,
        keepalive_misses=3,
        epoch_offset=seeds.EPOCH_MS / 1000,
    )


def _sealed_body(body: bytes, msg_type: int, sender: str) -> bytes:
    from ntma.proto.crypto import SignalBox

    header = SIG_HEADER.pack(VERSION, msg_type, 0, seeds.key(sender).public, seeds.NONCE)
    box = SignalBox(seeds.key(sender), seeds.key("dc").public)
    return header + box.seal(seeds.NONCE, body, header)


def test_dc_drops_a_register_whose_refusal_could_not_be_encoded():
    """Issue 10: a stranger's REGISTER for a long name outside the zone made the REFUSED
    reason (which echoes the name, lower-cased: U+0130 grows from 2 to 3 bytes) longer than
    its u16 field, and the encode raised out of Coordinator.receive."""
    name = ("\u0130" * 32_000).encode()
    body = bytes.fromhex(TXID_TS) + len(name).to_bytes(2, "big") + name + b"\0"
    dc = _dc()
    dc.receive(_sealed_body(body, MsgType.REGISTER, "stranger"), ("203.0.113.9", 4444), 0.0)
    assert dc.datagrams_to_send() == [] and sum(dc.drops.values()) == 1


def test_dc_refuses_the_longest_name_with_a_reply_that_encodes():
    name = ("\u0130" * 126).encode()  # 252 bytes, 378 once lower-cased
    body = bytes.fromhex(TXID_TS) + len(name).to_bytes(2, "big") + name + b"\0"
    dc = _dc()
    dc.receive(_sealed_body(body, MsgType.REGISTER, "stranger"), ("203.0.113.9", 4444), 0.0)
    assert len(dc.datagrams_to_send()) == 1
    assert [e.reason for e in dc.events()][0].startswith("name ")


# --- DNS: parse_query walks the message itself --------------------------------------------


HEADER = "abcd 0100 0001 0000 0000 0000"  # id, RD, one question
QTAIL = "0001 0001"  # A, IN


@pytest.mark.parametrize(
    ("hex_query", "match"),
    [
        (HEADER + " 64" + "61" * 100 + " 00" + QTAIL, "label type or length 0x64"),
        (HEADER + (" 3f" + "61" * 63) * 4 + " 00" + QTAIL, "longer than 255"),
        (HEADER + " c00c" + QTAIL, "label type or length 0xc0"),  # a pointer in the question
        (HEADER + " 4161 00" + QTAIL, "label type or length 0x41"),  # extended label type
        (HEADER + " 0161", "truncated name"),
        (HEADER + " 00 0001", "truncated question"),
        ("abcd 0100 0001 0000 0000 0001 00" + QTAIL + " 00 0029", "truncated record"),
        ("abcd 0100 0001 0000 0000 0001 00" + QTAIL + " 00 0029 1000 0000 0000 0005 00", "data"),
        ("abcd 0100 0002 0000 0000 0000 00" + QTAIL + " 00" + QTAIL, "single-question"),
        ("abcd 8100 0001 0000 0000 0000 00" + QTAIL, "single-question"),  # QR set
        ("abcd 0100 0001", "shorter than the header"),
    ],
)
def test_malformed_queries_are_refused(hex_query, match):
    with pytest.raises(CodecError, match=match):
        dns.parse_query(bytes.fromhex(hex_query))


def test_pointer_chain_no_longer_reaches_dnslib():
    """1,500 chained compression pointers in another section made dnslib recurse past
    Python's limit (RecursionError out of the DNS stage)."""
    chain = seeds.dns_hostile()[2]
    with pytest.raises(RecursionError):
        DNSRecord.parse(chain)  # the library itself, unchanged
    query = dns.parse_query(chain)  # the question is fine; the rest is skipped by length
    assert query.name == "" and len(dns.refused(query)) <= dns.MAX_REPLY


def test_longest_name_parses_and_every_reply_fits():
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 bytes: 255 on the wire
    query = dns.parse_query(DNSRecord.question(name, "A").pack())
    assert query.name == name
    for reply in (
        dns.answer_for_status(query, Status.OK, "10.99.0.6"),
        dns.zone_answer(query, "10.99.0.6", True),
        dns.servfail(query),
        dns.refused(query),
    ):
        assert len(reply) <= dns.MAX_REPLY
        DNSRecord.parse(reply)


def test_label_with_a_dot_inside_answers_with_the_question_labels():
    """The text form of the label b"a.b" reads back as two labels (as before issue 10); a
    63-byte label of escaped bytes does not pack back from text at all, so the answer then
    names the question's own labels."""
    query = dns.parse_query(bytes.fromhex(HEADER + " 03 612e62 03 636f6d 00" + QTAIL))
    reply = DNSRecord.parse(dns.answer_for_status(query, Status.OK, "10.99.0.6"))
    assert reply.rr[0].rname.label == (b"a", b"b", b"com")  # IDNA splits on the dot
    escaped = dns.parse_query(bytes.fromhex(HEADER + " 3f" + "01" * 63 + " 00" + QTAIL))
    reply = DNSRecord.parse(dns.zone_answer(escaped, "10.99.0.6", True))
    assert reply.rr[0].rname.label == (b"\x01" * 63,)


def test_query_with_edns_still_parses_and_answers_in_lower_case():
    record = DNSRecord.question("Cn.NTM.example", "A")
    from dnslib import EDNS0

    record.add_ar(EDNS0(udp_len=1232))
    query = dns.parse_query(record.pack())
    assert query.name == "cn.ntm.example"
    reply = DNSRecord.parse(dns.answer_for_status(query, Status.OK, "10.99.0.6"))
    assert str(reply.rr[0].rname) == "cn.ntm.example." and str(reply.rr[0].rdata) == "10.99.0.6"
    assert reply.header.id == record.header.id


# --- clamp_mss: the checksum when the MSS option sits at an odd offset ------------------------


def _tcp_checksum_ok(packet: bytes) -> bool:
    segment = packet[20:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(segment))
    return checksum(pseudo + segment) == 0


def test_clamp_mss_at_an_odd_offset_keeps_the_checksum_right():
    # 10.99.0.23:40000 -> 10.99.0.2:80 SYN; options NOP, MSS 1460 (at TCP offset 21), EOL.
    syn = bytes.fromhex(
        "4500003000004000400625ea0a6300170a630002"
        "9c40005000000001000000007002ffff25630000"
        "01020405b4000000"
    )
    clamped = bytes.fromhex(
        "4500003000004000400625ea0a6300170a630002"
        "9c40005000000001000000007002ffff89630000"
        "0102040550000000"  # MSS 1360
    )
    assert _tcp_checksum_ok(syn)
    assert clamp_mss(syn, 1360) == clamped
    assert _tcp_checksum_ok(clamped)


@pytest.mark.parametrize("pad", [0, 1, 2, 3])
def test_clamp_mss_checksum_at_every_alignment(pad):
    syn = seeds.tcp_syn(b"\x01" * pad + b"\x02\x04\x05\xb4")
    clamped = clamp_mss(syn, 1360)
    assert clamped != syn and _tcp_checksum_ok(clamped)
    assert clamped[20 + 20 + pad + 2 : 20 + 20 + pad + 4] == (1360).to_bytes(2, "big")


# --- replay window -----------------------------------------------------------------------


def test_replay_window_holds_8192_counters():
    assert WINDOW_BITS == 8192 >= 8000
    w = ReplayWindow()
    assert w.accept(8192)
    assert w.accept(1)  # 8191 behind: still inside
    assert not w.accept(0)  # 8192 behind: outside
    assert not w.accept(1)
