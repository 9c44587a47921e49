"""ether6: the IPv6 header, the pseudo-header checksum, UDP over IPv6, ICMPv6 errors and
the MSS clamp of IPv6 SYNs. Checksums are checked against `ref_checksum` below, a plain
word-by-word sum written apart from ntma's."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntma.proto import ether, ether6
from ntma.proto.buffer import CodecError
from ntma.proto.ether6 import (
    ICMP6_ADDR_UNREACH,
    ICMP6_DEST_UNREACH,
    ICMP6_NO_ROUTE,
    ICMP6_PACKET_TOO_BIG,
    IPV6_HEADER,
    IPV6_MIN_MTU,
    PROTO_ICMPV6,
    build_icmp6_error,
    build_ipv6,
    build_udp6,
    clamp_mss6,
    parse_udp6,
    pseudo_checksum,
)


def ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


GN = ip6("fd00:99::b")
PEER = ip6("fd00:98::2")
ROUTER = ip6("fe80::ff:fe00:1")


def ref_checksum(src: bytes, dst: bytes, next_header: int, segment: bytes) -> int:
    """RFC 8200 8.1 done the long way: pseudo-header fields, 16-bit words, end-around carry."""
    data = src + dst + len(segment).to_bytes(4, "big") + bytes(3) + bytes([next_header])
    data += segment + b"\0" * (len(segment) % 2)
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] * 256 + data[i + 1]
        if total > 0xFFFF:
            total -= 0xFFFF
    return 0xFFFF - total


def test_constants_are_the_rfcs_and_ether_ones():
    assert ether6.ETH_P_IPV6 is ether.ETH_P_IPV6 and ether6.ETH_P_IPV6 == 0x86DD
    assert (PROTO_ICMPV6, IPV6_HEADER, IPV6_MIN_MTU) == (58, 40, 1280)
    assert (ICMP6_DEST_UNREACH, ICMP6_NO_ROUTE, ICMP6_ADDR_UNREACH) == (1, 0, 3)
    assert ICMP6_PACKET_TOO_BIG == 2


def test_build_ipv6_lays_out_the_fixed_header():
    packet = build_ipv6(GN, PEER, 17, b"abcd", hop_limit=7)
    # version 6, class and label 0; length 4; UDP; hop limit 7; source; destination; payload
    assert packet.hex() == "".join(
        (
            "6000000000041107",
            "fd00009900000000000000000000000b",
            "fd000098000000000000000000000002",
            "61626364",
        )
    )
    assert build_ipv6(GN, PEER, 6, b"")[7] == 64


def test_pseudo_checksum_of_a_known_segment():
    # An ICMPv6 echo request fe80::1 -> fe80::2, id 0x1234 seq 1, payload "hi": by hand,
    # pseudo-header words fe80+0001+fe80+0002+0000+000a+0000+003a = 0x1fd47 -> 0xfd48;
    # message words 8000+0000+1234+0001+6869 = 0xfa9e; 0xfd48+0xfa9e = 0x1f7e6 -> 0xf7e7.
    src, dst = ip6("fe80::1"), ip6("fe80::2")
    echo = bytes.fromhex("8000 0000 1234 0001 6869")
    assert pseudo_checksum(src, dst, PROTO_ICMPV6, echo) == 0xFFFF - 0xF7E7 == 0x0818
    assert ref_checksum(src, dst, PROTO_ICMPV6, echo) == 0x0818
    fixed = echo[:2] + (0x0818).to_bytes(2, "big") + echo[4:]
    assert pseudo_checksum(src, dst, PROTO_ICMPV6, fixed) == 0


@given(
    src=st.binary(min_size=16, max_size=16),
    dst=st.binary(min_size=16, max_size=16),
    next_header=st.integers(0, 255),
    segment=st.binary(max_size=300),
)
def test_pseudo_checksum_is_the_reference_sum(src, dst, next_header, segment):
    assert pseudo_checksum(src, dst, next_header, segment) == ref_checksum(
        src, dst, next_header, segment
    )


# --- UDP -----------------------------------------------------------------------------------


def test_build_udp6_vector():
    packet = build_udp6(GN, PEER, 40000, 53, b"xy")
    assert packet[:8] == bytes.fromhex("60000000000a1140")
    assert packet[40:46] == bytes.fromhex("9c400035000a")
    csum = int.from_bytes(packet[46:48], "big")
    assert csum == ref_checksum(GN, PEER, 17, packet[40:46] + b"\0\0" + b"xy")
    assert ref_checksum(GN, PEER, 17, packet[40:]) == 0
    assert parse_udp6(packet) == (40000, 53, b"xy")


def test_build_udp6_never_sends_a_zero_checksum():
    """A payload chosen so the sum comes to 0: it goes out as 0xFFFF (RFC 8200 8.1)."""
    first = build_udp6(GN, PEER, 1, 2, b"\0\0")
    payload = first[46:48]  # the sum with a zero payload word: adding it makes 0
    packet = build_udp6(GN, PEER, 1, 2, payload)
    assert packet[46:48] == b"\xff\xff"
    assert parse_udp6(packet) == (1, 2, payload)


@given(
    sport=st.integers(0, 0xFFFF),
    dport=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=1400),
    padding=st.binary(max_size=20),
)
def test_udp6_round_trip_with_checksum_and_link_padding(sport, dport, payload, padding):
    packet = build_udp6(GN, PEER, sport, dport, payload)
    assert ref_checksum(GN, PEER, 17, packet[40:]) == 0
    assert packet[46:48] != b"\0\0"
    assert parse_udp6(packet + padding) == (sport, dport, payload)


def _udp(payload_length: int | None = None, udp_length: int | None = None, csum=b"\x12\x34"):
    segment = struct.pack("!HHH", 5, 6, udp_length or 12) + csum + b"data"
    packet = build_ipv6(GN, PEER, 17, segment)
    if payload_length is not None:
        packet = packet[:4] + payload_length.to_bytes(2, "big") + packet[6:]
    return packet


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (b"", "empty"),
        (_udp()[:39], "shorter than the fixed header"),
        (b"\x40" + _udp()[1:], "version 4"),
        (_udp(payload_length=13), "payload length past the end"),
        (_udp(payload_length=7)[:47], "UDP header cut off"),
        (build_ipv6(GN, PEER, 0, b"\x11\0" + bytes(6) + _udp()[40:]), "hop-by-hop first"),
        (build_ipv6(GN, PEER, 6, _udp()[40:]), "TCP"),
        (_udp(udp_length=7), "UDP length under 8"),
        (_udp(udp_length=13), "UDP length past the payload"),
        (_udp(csum=b"\0\0"), "zero checksum"),
    ],
)
def test_parse_udp6_refuses(packet, why):
    with pytest.raises(CodecError):
        parse_udp6(packet)


def test_parse_udp6_reads_the_udp_length_not_the_padding():
    assert parse_udp6(_udp()) == (5, 6, b"data")
    assert parse_udp6(_udp(udp_length=10)) == (5, 6, b"da")
    assert parse_udp6(_udp() + bytes(8)) == (5, 6, b"data")


@given(st.binary(max_size=120))
def test_parse_udp6_raises_only_codec_error(data):
    for packet in (data, b"\x60" + data[1:], build_ipv6(GN, PEER, 17, data)):
        with contextlib.suppress(CodecError):
            parse_udp6(packet)


# --- ICMPv6 errors -------------------------------------------------------------------------


def echo_request(src=GN, dst=PEER, size=8, icmp_type=128) -> bytes:
    body = bytes([icmp_type, 0, 0, 0]) + bytes(range(256)) * (size // 256) + bytes(size % 256)
    body = body[: 4 + size]
    csum = ref_checksum(src, dst, 58, body)
    return build_ipv6(src, dst, 58, body[:2] + csum.to_bytes(2, "big") + body[4:])


def test_icmp6_error_vector_no_route():
    original = build_udp6(GN, PEER, 40000, 80, b"hello")
    error = build_icmp6_error(ROUTER, original, ICMP6_DEST_UNREACH, ICMP6_NO_ROUTE)
    assert error is not None
    assert error[:8] == b"\x60\0\0\0" + (8 + len(original)).to_bytes(2, "big") + b"\x3a\x40"
    assert error[8:24] == ROUTER and error[24:40] == GN  # back to the sender
    assert error[40:42] == b"\x01\x00" and error[44:48] == bytes(4)
    assert error[48:] == original
    assert ref_checksum(ROUTER, GN, 58, error[40:]) == 0


def test_packet_too_big_carries_the_mtu_and_stays_within_1280():
    original = build_udp6(GN, PEER, 40000, 443, bytes(1452))  # a 1500-byte packet
    error = build_icmp6_error(ROUTER, original, ICMP6_PACKET_TOO_BIG, 0, value=1420)
    assert error is not None and len(error) == IPV6_MIN_MTU
    assert error[40:42] == b"\x02\x00" and int.from_bytes(error[44:48], "big") == 1420
    assert error[48:] == original[: 1280 - 48]
    assert int.from_bytes(error[4:6], "big") == 1280 - 40
    assert ref_checksum(ROUTER, GN, 58, error[40:]) == 0


@pytest.mark.parametrize("size", [1232 - 40 - 8, 1232 - 40 - 7, 1232 - 40 - 9])
def test_the_quote_is_cut_exactly_at_the_bound(size):
    original = build_udp6(GN, PEER, 1, 2, bytes(size))
    error = build_icmp6_error(ROUTER, original, ICMP6_DEST_UNREACH, ICMP6_ADDR_UNREACH)
    assert error is not None and len(error) == min(48 + len(original), 1280)


def test_link_padding_is_not_quoted():
    original = build_udp6(GN, PEER, 1, 2, b"x")
    error = build_icmp6_error(ROUTER, original + bytes(9), ICMP6_DEST_UNREACH, 0)
    assert error is not None and error[48:] == original


def _behind(next_header: int, header: bytes, inner: bytes) -> bytes:
    """inner's payload behind one extension header (`header`, its next-header byte set)."""
    ext = bytes([inner[6]]) + header[1:]
    return build_ipv6(inner[8:24], inner[24:40], next_header, ext + inner[40:])


@pytest.mark.parametrize(
    ("original", "why"),
    [
        (echo_request(icmp_type=1), "an ICMPv6 destination unreachable"),
        (echo_request(icmp_type=2), "a Packet Too Big"),
        (echo_request(icmp_type=127), "the last error type"),
        (build_ipv6(GN, PEER, 58, b""), "ICMPv6 too short to hold its type"),
        (_behind(60, bytes(8), echo_request(icmp_type=1)), "an error behind dest. options"),
        (_behind(0, bytes(8), _behind(60, bytes(8), echo_request(icmp_type=4))), "two headers"),
        (_behind(44, bytes(8), echo_request(icmp_type=3)), "an error in a first fragment"),
        (echo_request(src=ip6("ff02::1")), "a multicast source"),
        (echo_request(src=bytes(16)), "the unspecified source"),
        (echo_request(dst=ip6("ff02::1")), "a multicast destination"),
        (build_udp6(GN, ip6("ff05::1:3"), 546, 547, b"x"), "UDP to a multicast group"),
    ],
)
def test_no_error_where_rfc4443_forbids_one(original, why):
    assert build_icmp6_error(ROUTER, original, ICMP6_DEST_UNREACH, ICMP6_NO_ROUTE) is None


@pytest.mark.parametrize(
    "original",
    [
        echo_request(icmp_type=128),  # an informational message is answered
        echo_request(icmp_type=135),
        _behind(60, bytes(8), echo_request(icmp_type=128)),
        _behind(44, b"\0\0\0\x08" + bytes(4), echo_request(icmp_type=1)),  # later fragment
        _behind(59, bytes(8), echo_request()),  # "no next header": nothing to look at
    ],
)
def test_errors_are_sent_about_other_packets(original):
    error = build_icmp6_error(ROUTER, original, ICMP6_DEST_UNREACH, ICMP6_ADDR_UNREACH)
    assert error is not None and error[48:] == original
    assert ref_checksum(ROUTER, original[8:24], 58, error[40:]) == 0


def test_an_icmp6_error_about_a_non_ipv6_packet_is_a_codec_error():
    with pytest.raises(CodecError):
        build_icmp6_error(ROUTER, ether.build_udp(bytes(4), bytes(4), 1, 2, b""), 1, 0)
    with pytest.raises(CodecError):
        build_icmp6_error(ROUTER, build_udp6(GN, PEER, 1, 2, b"")[:39], 1, 0)


@given(st.binary(max_size=200), st.integers(0, 255))
def test_icmp6_errors_are_bounded_right_or_refused(data, next_header):
    original = build_ipv6(GN, PEER, next_header, data)
    for packet in (original, b"\x60" + data):
        try:
            error = build_icmp6_error(ROUTER, packet, ICMP6_DEST_UNREACH, 0)
        except CodecError:
            continue
        if error is not None:
            assert len(error) <= IPV6_MIN_MTU
            assert ref_checksum(ROUTER, packet[8:24], 58, error[40:]) == 0


# --- MSS clamping --------------------------------------------------------------------------


def tcp_syn6(options: bytes, flags: int = 0x02, src=GN, dst=PEER) -> bytes:
    """An IPv6 packet with a TCP SYN carrying these options, checksum right (reference)."""
    options += b"\0" * (-len(options) % 4)
    fields = (40000, 443, 1, 0, (20 + len(options)) << 2, flags, 65535, 0, 0)
    header = struct.pack("!HHIIBBHHH", *fields) + options
    csum = ref_checksum(src, dst, 6, header)
    return build_ipv6(src, dst, 6, header[:16] + csum.to_bytes(2, "big") + header[18:])


MSS_1460 = b"\x02\x04\x05\xb4"


@pytest.mark.parametrize("pad", [0, 1, 2, 3])
def test_clamp_mss6_at_every_alignment_matches_a_full_recomputation(pad):
    syn = tcp_syn6(b"\x01" * pad + MSS_1460)
    clamped = clamp_mss6(syn, 1220)
    at = 40 + 20 + pad + 2
    assert clamped[at : at + 2] == (1220).to_bytes(2, "big")
    unchecked = clamped[:56] + b"\0\0" + clamped[58:]
    assert clamped[56:58] == ref_checksum(GN, PEER, 6, unchecked[40:]).to_bytes(2, "big")
    assert {i for i in range(len(syn)) if syn[i] != clamped[i]} <= {56, 57, at, at + 1}


def test_clamp_mss6_leaves_what_it_should():
    syn = tcp_syn6(MSS_1460)
    assert clamp_mss6(syn, 1460) is syn  # not above the bound
    assert clamp_mss6(tcp_syn6(MSS_1460, flags=0x10), 1220) == tcp_syn6(MSS_1460, flags=0x10)
    assert clamp_mss6(tcp_syn6(b"\x01\x01"), 1220) == tcp_syn6(b"\x01\x01")  # no MSS
    hop_by_hop = build_ipv6(GN, PEER, 0, b"\x06\0" + bytes(6) + syn[40:])
    assert clamp_mss6(hop_by_hop, 1220) is hop_by_hop  # extension headers: left alone
    ipv4 = ether.build_ipv4(bytes(4), bytes(4), 6, syn[40:])
    assert clamp_mss6(ipv4, 1220) is ipv4
    assert clamp_mss6(syn[:50], 1220) == syn[:50]  # the payload length runs past the end


def test_clamp_mss6_syn_ack_and_link_padding():
    syn_ack = tcp_syn6(b"\x01" + MSS_1460, flags=0x12)
    clamped = clamp_mss6(syn_ack + bytes(6), 1220)
    assert len(clamped) == len(syn_ack) + 6 and clamped.endswith(bytes(6))
    assert ref_checksum(GN, PEER, 6, clamped[40 : len(syn_ack)]) == 0


def test_clamp_mss6_reads_options_no_further_than_the_payload():
    syn = tcp_syn6(b"\x01\x01\x01\x01")
    claimed = syn[:52] + bytes([0x70]) + syn[53:]  # data offset 28 bytes, 24 there
    assert clamp_mss6(claimed + MSS_1460, 1220) == claimed + MSS_1460


@given(
    options=st.lists(
        st.one_of(
            st.just(b"\x01"),
            st.just(b"\x00"),
            st.integers(0, 0xFFFF).map(lambda m: b"\x02\x04" + m.to_bytes(2, "big")),
            st.binary(min_size=2, max_size=10),
        ),
        max_size=6,
    ),
    max_mss=st.integers(536, 9000),
    cut=st.integers(0, 100),
)
def test_clamp_mss6_is_total_and_keeps_a_right_checksum_right(options, max_mss, cut):
    syn = tcp_syn6(b"".join(options)[:40])
    out = clamp_mss6(syn, max_mss)
    assert len(out) == len(syn)
    assert ref_checksum(GN, PEER, 6, out[40:]) == 0
    changed = [i for i in range(len(syn)) if out[i] != syn[i]]
    assert all(i in (56, 57) or i >= 60 for i in changed)
    short = syn[: len(syn) - cut]
    assert len(clamp_mss6(short, max_mss)) == len(short)
