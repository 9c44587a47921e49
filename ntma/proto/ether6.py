"""IPv6, UDP-over-IPv6, ICMPv6 error and TCP-MSS helpers for the adapter (sans-IO).

The IPv6 counterparts of ether.py: build and read the fixed header (RFC 8200), the
upper-layer checksum over the pseudo-header (RFC 8200 8.1), UDP, ICMPv6 errors (RFC 4443)
and the MSS clamp of a SYN. Extension headers are not supported: a packet whose next
header is not the upper-layer protocol asked for is refused (parse_udp6) or left alone
(clamp_mss6). Anything short or inconsistent raises CodecError.
"""

from __future__ import annotations

import ipaddress
import struct

from .buffer import CodecError
from .ether import ETH_P_IPV6 as ETH_P_IPV6  # re-exported: the ethertype of these packets
from .ether import PROTO_TCP, PROTO_UDP, checksum, clamp_mss_at

PROTO_ICMPV6 = 58
IPV6_HEADER = 40
IPV6_MIN_MTU = 1280

_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_ICMP6_ERROR = struct.Struct("!BBHI")
# Extension headers Linux skips looking for the upper layer of an offending packet
# (ipv6_skip_exthdr): hop-by-hop, routing, destination options (8-octet units); fragment;
# AH (4-octet units).
_HOP_BY_HOP, _ROUTING, _FRAGMENT, _AH, _DEST_OPTS = 0, 43, 44, 51, 60


def is_multicast(addr: bytes) -> bool:
    return addr[0] == 0xFF


# --- the fixed header ----------------------------------------------------------------------


def ip6_text(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))


def build_ipv6(
    src: bytes, dst: bytes, next_header: int, payload: bytes, hop_limit: int = 64
) -> bytes:
    """An IPv6 packet: version 6, traffic class and flow label 0, then payload."""
    return _IPV6.pack(0x6000_0000, len(payload), next_header, hop_limit, src, dst) + payload


def ipv6_payload(packet: bytes) -> bytes:
    """What follows the fixed header of a plausible IPv6 packet, its payload length long
    (trailing bytes, e.g. Ethernet padding, cut off), else CodecError."""
    if len(packet) < IPV6_HEADER or packet[0] >> 4 != 6:
        raise CodecError("not an IPv6 packet")
    end = IPV6_HEADER + ((packet[4] << 8) | packet[5])
    if end > len(packet):
        raise CodecError("IPv6 payload length past the packet's end")
    return packet[IPV6_HEADER:end]


def pseudo_checksum(src: bytes, dst: bytes, next_header: int, segment: bytes) -> int:
    """The Internet checksum of the IPv6 pseudo-header (RFC 8200 8.1) and segment: the
    value to store when segment's checksum field is zero, and 0 when it holds the right one."""
    pseudo = src + dst + struct.pack("!IxxxB", len(segment), next_header)
    return checksum(pseudo + segment)


# --- UDP -----------------------------------------------------------------------------------


def build_udp6(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv6 packet carrying one UDP datagram; its checksum (mandatory over IPv6) is set,
    and is 0xFFFF where the sum comes to 0."""
    segment = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    csum = pseudo_checksum(src, dst, PROTO_UDP, segment) or 0xFFFF
    return build_ipv6(src, dst, PROTO_UDP, segment[:6] + struct.pack("!H", csum) + segment[8:])


def parse_udp6(packet: bytes) -> tuple[int, int, bytes]:
    """(source port, destination port, payload) of an IPv6 packet whose next header is UDP.

    Like ether.parse_udp, the checksum is not verified (a veth with transmit offload hands
    over partial sums), but a zero one, which IPv6 forbids (RFC 8200 8.1), is refused."""
    segment = ipv6_payload(packet)
    if packet[6] != PROTO_UDP:
        raise CodecError(f"next header {packet[6]} is not UDP (no extension headers)")
    if len(segment) < 8:
        raise CodecError("truncated UDP header")
    sport, dport, length, csum = _UDP.unpack_from(segment)
    if length < 8 or length > len(segment):
        raise CodecError("bad UDP length")
    if csum == 0:
        raise CodecError("UDP over IPv6 without a checksum")
    return sport, dport, segment[8:length]


# --- ICMPv6 errors -------------------------------------------------------------------------

ICMP6_DEST_UNREACH = 1
ICMP6_NO_ROUTE = 0
ICMP6_ADDR_UNREACH = 3
ICMP6_PACKET_TOO_BIG = 2
_QUOTE_MAX = IPV6_MIN_MTU - IPV6_HEADER - _ICMP6_ERROR.size  # 1232 bytes of the original


def build_icmp6_error(
    src: bytes, original: bytes, icmp_type: int, code: int, value: int = 0
) -> bytes | None:
    """An ICMPv6 error (RFC 4443) from `src` to the source of `original`, hop limit 64,
    quoting as much of `original` as keeps it within 1280 bytes (2.4(c)); `value` fills the
    32-bit field after the checksum: the MTU for Packet Too Big, else 0.

    None where RFC 4443 2.4(e) forbids an error: `original` is itself an ICMPv6 error (or
    too short to tell, as Linux judges it), its source is multicast or unspecified, or its
    destination is multicast (RFC 4443 allows Packet Too Big there; we send none).
    CodecError if `original` is not an IPv6 packet."""
    original = original[: IPV6_HEADER + len(ipv6_payload(original))]  # no link padding
    osrc, odst = original[8:24], original[24:40]
    if is_multicast(osrc) or osrc == bytes(16) or is_multicast(odst):
        return None
    if _is_icmp6_error(original):
        return None
    quoted = original[:_QUOTE_MAX]
    body = _ICMP6_ERROR.pack(icmp_type, code, 0, value) + quoted
    csum = pseudo_checksum(src, osrc, PROTO_ICMPV6, body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    return build_ipv6(src, osrc, PROTO_ICMPV6, body, hop_limit=64)


def _is_icmp6_error(packet: bytes) -> bool:
    """Whether packet carries an ICMPv6 error behind the usual extension headers; like
    Linux's is_ineligible(): an ICMPv6 message too short to hold its type counts as one,
    an upper layer we cannot reach (a later fragment, a cut-off header) does not."""
    next_header, pos = packet[6], IPV6_HEADER
    for _ in range(8):  # a bounded walk: nobody sends more than a few
        if next_header == PROTO_ICMPV6:
            return pos >= len(packet) or packet[pos] < 128
        if next_header not in (_HOP_BY_HOP, _ROUTING, _FRAGMENT, _AH, _DEST_OPTS):
            return False
        if pos + 8 > len(packet):
            return False
        if next_header == _FRAGMENT:
            if ((packet[pos + 2] << 8) | packet[pos + 3]) & 0xFFF8:
                return False  # not the first fragment: its upper layer is elsewhere
            size = 8
        elif next_header == _AH:
            size = (packet[pos + 1] + 2) * 4
        else:
            size = (packet[pos + 1] + 1) * 8
        next_header, pos = packet[pos], pos + size
    return False


# --- TCP MSS clamping ----------------------------------------------------------------------


def clamp_mss6(packet: bytes, max_mss: int) -> bytes:
    """If packet is IPv6 carrying a TCP SYN (next header 6 right after the fixed header)
    with an MSS option above max_mss, lower it (checksum fixed incrementally, RFC 1624: the
    pseudo-header does not change); otherwise, or if it is malformed, return it unchanged."""
    try:
        segment = ipv6_payload(packet)
    except CodecError:
        return packet
    if packet[6] != PROTO_TCP:
        return packet
    tcp_end = IPV6_HEADER + len(segment)  # the options are read no further than this
    head = packet if tcp_end == len(packet) else packet[:tcp_end]
    out = clamp_mss_at(head, IPV6_HEADER, max_mss)
    return packet if out is head else out + packet[tcp_end:]
