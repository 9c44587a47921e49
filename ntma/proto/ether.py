"""Ethernet, ARP, IPv4, UDP, ICMP and TCP-MSS helpers for the adapter (sans-IO).

Only what the adapter needs on the GN link: read the few header fields that
classify frames, build reply frames, compute checksums, clamp TCP MSS and
build ICMP errors. Offsets are fixed-layout reads; anything short or
inconsistent raises CodecError.
"""

from __future__ import annotations

import ipaddress
import struct

from .buffer import CodecError

ETH_HEADER = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST_MAC = b"\xff" * 6
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def ip_packed(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def ip_text(packed: bytes) -> str:
    return str(ipaddress.IPv4Address(packed))


# --- Ethernet ----------------------------------------------------------------------------


def eth_header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    return _ETH.pack(dst, src, ethertype)


def eth_type(frame: bytes) -> int:
    if len(frame) < ETH_HEADER:
        raise CodecError("frame shorter than an Ethernet header")
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype == 0x8100:  # 802.1Q: the GN link is untagged; tagged frames are not ours
        raise CodecError("VLAN-tagged frame")
    return ethertype


# --- ARP ---------------------------------------------------------------------------------

ARP_REQUEST = 1
ARP_REPLY = 2


def parse_arp(frame: bytes) -> tuple[int, bytes, bytes, bytes, bytes]:
    """(op, sender MAC, sender IP, target MAC, target IP) of an Ethernet/IPv4 ARP frame."""
    if len(frame) < ETH_HEADER + _ARP.size:
        raise CodecError("truncated ARP")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, ETH_HEADER)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        raise CodecError("not an Ethernet/IPv4 ARP request or reply")
    return op, sha, spa, tha, tpa


def build_arp_reply(my_mac: bytes, my_ip: bytes, to_mac: bytes, to_ip: bytes) -> bytes:
    body = _ARP.pack(1, ETH_P_IP, 6, 4, ARP_REPLY, my_mac, my_ip, to_mac, to_ip)
    return eth_header(to_mac, my_mac, ETH_P_ARP) + body + bytes(18)  # pad to 60 bytes


# --- IPv4 ------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header_len(packet: bytes) -> int:
    """Header length of a plausible IPv4 packet, else CodecError."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise CodecError("not an IPv4 packet")
    ihl = (packet[0] & 0x0F) * 4
    total = (packet[2] << 8) | packet[3]
    if ihl < 20 or total < ihl or total > len(packet):
        raise CodecError("inconsistent IPv4 lengths")
    return ihl


def build_ipv4(
    src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = 64, ident: int = 0
) -> bytes:
    header = _IPV4.pack(0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto, 0, src, dst)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def udp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    pseudo = src + dst + struct.pack("!BBH", 0, PROTO_UDP, len(segment))
    value = checksum(pseudo + segment)
    return value or 0xFFFF


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 packet carrying one UDP datagram, checksums filled in."""
    segment = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    csum = udp_checksum(src, dst, segment)
    segment = segment[:6] + struct.pack("!H", csum) + segment[8:]
    return build_ipv4(src, dst, PROTO_UDP, segment)


def parse_udp(packet: bytes) -> tuple[int, int, bytes]:
    """(source port, destination port, payload) of an unfragmented IPv4/UDP packet."""
    ihl = ipv4_header_len(packet)
    if packet[9] != PROTO_UDP:
        raise CodecError("not UDP")
    if ((packet[6] << 8) | packet[7]) & 0x3FFF:
        raise CodecError("fragmented UDP")
    total = (packet[2] << 8) | packet[3]
    if total < ihl + 8:
        raise CodecError("truncated UDP header")
    sport, dport, length, _ = _UDP.unpack_from(packet, ihl)
    if length < 8 or ihl + length > total:
        raise CodecError("bad UDP length")
    return sport, dport, packet[ihl + 8 : ihl + length]


# --- ICMP ------------------------------------------------------------------------------

ICMP_DEST_UNREACH = 3
ICMP_HOST_UNREACH = 1
ICMP_FRAG_NEEDED = 4


def build_icmp_error(
    router_ip: bytes,
    original: bytes,
    code: int,
    next_hop_mtu: int = 0,
    icmp_type: int = ICMP_DEST_UNREACH,
) -> bytes:
    """ICMP error from router_ip about `original` (its header + 8 bytes, RFC 792/1191)."""
    ihl = ipv4_header_len(original)
    quoted = original[: ihl + 8]
    body = struct.pack("!BBHHH", icmp_type, code, 0, 0, next_hop_mtu) + quoted
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return build_ipv4(router_ip, original[12:16], PROTO_ICMP, body)


# --- TCP MSS clamping ------------------------------------------------------------------


def clamp_mss(packet: bytes, max_mss: int) -> bytes:
    """If packet is a TCP SYN with an MSS option above max_mss, lower it (checksum fixed
    incrementally, RFC 1624); otherwise return packet unchanged."""
    try:
        ihl = ipv4_header_len(packet)
    except CodecError:
        return packet
    if packet[9] != PROTO_TCP:
        return packet
    return clamp_mss_at(packet, ihl, max_mss)


def clamp_mss_at(packet: bytes, tcp: int, max_mss: int) -> bytes:
    """clamp_mss for a TCP header at offset `tcp` of packet (IPv4 or IPv6: the caller has
    checked the protocol); anything but a SYN with a larger MSS option is returned as is."""
    if len(packet) < tcp + 20 or not packet[tcp + 13] & 0x02:
        return packet
    data_offset = (packet[tcp + 12] >> 4) * 4
    pos, end = tcp + 20, min(tcp + data_offset, len(packet))
    while pos < end:
        kind = packet[pos]
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= end or packet[pos + 1] < 2:
            return packet
        if kind == 2 and packet[pos + 1] == 4 and pos + 4 <= end:
            mss = (packet[pos + 2] << 8) | packet[pos + 3]
            if mss <= max_mss:
                return packet
            out = bytearray(packet)
            out[pos + 2 : pos + 4] = max_mss.to_bytes(2, "big")
            _update_tcp_checksum(packet, out, tcp, pos + 2)
            return bytes(out)
        pos += packet[pos + 1]
    return packet


def _update_tcp_checksum(old: bytes, new: bytearray, tcp: int, at: int) -> None:
    """Fix the checksum of the TCP header at offset `tcp` after new[at:at+2] changed (RFC
    1624 eqn. 3). The checksum sums 16-bit words from the TCP header's start, so a field at
    an odd offset spans two words: update both, with old and new bytes taken word by word.
    The pseudo-header does not change, so IPv4 and IPv6 are alike here."""
    first = tcp + ((at - tcp) & ~1)
    last = at + 2 + ((at - tcp) & 1)  # end of the word holding the field's last byte
    old_words = _words(old[first:last])
    new_words = _words(bytes(new[first:last]))
    old_sum = (old[tcp + 16] << 8) | old[tcp + 17]
    terms = [~old_sum & 0xFFFF]
    terms += [~w & 0xFFFF for w in old_words] + new_words
    new[tcp + 16 : tcp + 18] = _fold(*terms).to_bytes(2, "big")


def _words(data: bytes) -> list[int]:
    if len(data) % 2:  # the packet ends inside the word: the checksum pads with zero
        data += b"\0"
    return [(data[i] << 8) | data[i + 1] for i in range(0, len(data), 2)]


def _fold(*words: int) -> int:
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
