"""Issue 10: hostile inputs the pure codecs refuse (or survive), each as a byte vector.

Every case here crashed a daemon, or was accepted though it could not be sent back, before
the fix it names; the fuzz harness (ntma/fuzz) found or confirmed each. These are the
inputs that still mean the same in protocol v2 (DNS, the GN link's TCP, the replay
window); v2's own message limits (names, endpoints, counts) are in tests/test_messages_v2.py.
"""

from __future__ import annotations

import struct

import pytest
from dnslib import EDNS0, DNSRecord

from ntma.fuzz import seeds
from ntma.proto import dns
from ntma.proto.buffer import CodecError
from ntma.proto.ether import checksum, clamp_mss
from ntma.proto.fields_v2 import Status
from ntma.proto.replay import WINDOW_BITS, ReplayWindow
from ntma.proto.session import REPLAY_WINDOW

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
    assert WINDOW_BITS == REPLAY_WINDOW == 8192 >= 8000
    w = ReplayWindow()
    assert w.accept(8192)
    assert w.accept(1)  # 8191 behind: still inside
    assert not w.accept(0)  # 8192 behind: outside
    assert not w.accept(1)
