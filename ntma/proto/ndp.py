"""Neighbor Discovery (RFC 4861) for the GN link, sans-IO: read what a GN's kernel sends
(Router and Neighbor Solicitations, and Advertisements), build the adapter's answers
(a Router Advertisement with prefixes, MTU and RDNSS (RFC 8106) for SLAAC, and Neighbor
Advertisements for the addresses it answers for, like proxy ARP).

Rules of parse_nd, each from RFC 4861's validation sections (6.1, 7.1), and all cheap:
- the IPv6 packet is whole: version 6, its payload length within the bytes given (any
  trailing Ethernet padding ignored), ICMPv6 right after the fixed header (no extension
  headers), hop limit 255 (so it was not forwarded), a valid ICMPv6 checksum, code 0;
- the type is RS, RA, NS or NA, long enough for its fixed part;
- every option has a length > 0 and lies inside the message; a link-layer address option
  is an Ethernet one (length 1); where there are two, the first counts (as in Linux);
- the source is not multicast; an RA comes from a link-local address;
- an NS/NA target is not multicast; an NA to a multicast address is not solicited;
- an NS from the unspecified address (DAD) goes to a solicited-node address and has no
  source link-layer option; an RS from the unspecified address has none either.
Anything else raises CodecError, and nothing else is ever raised.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .buffer import CodecError
from .ether import ETH_P_IPV6, eth_header
from .ether6 import IPV6_HEADER, IPV6_MIN_MTU, PROTO_ICMPV6, build_ipv6, pseudo_checksum

ND_RS = 133
ND_RA = 134
ND_NS = 135
ND_NA = 136
ND_HOP_LIMIT = 255
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
UNSPECIFIED = bytes(16)

# NdMessage.flags: an NA's R/S/O bits, an RA's M/O bits.
NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20
RA_MANAGED = 0x80
RA_OTHER = 0x40

OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
OPT_PREFIX_INFO = 3
OPT_MTU = 5
OPT_RDNSS = 25
PIO_ON_LINK = 0x80
PIO_AUTONOMOUS = 0x40

# The fixed part of each message: ICMPv6 header, then RS reserved (4); RA hop limit, flags,
# lifetime, reachable time, retrans timer (12); NS/NA flags or reserved (4), target (16).
_FIXED = {ND_RS: 8, ND_RA: 16, ND_NS: 24, ND_NA: 24}
_LINK_LOCAL_64 = bytes.fromhex("fe80000000000000")
_SOLICITED_104 = bytes.fromhex("ff0200000000000000000001ff")


def interface_id(mac: bytes) -> bytes:
    """The modified EUI-64 of a MAC (RFC 4291 2.5.1, appendix A): U/L bit flipped."""
    return bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]))


def link_local(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 of mac: the address SLAAC gives that MAC."""
    return _LINK_LOCAL_64 + interface_id(mac)


def solicited_node(addr: bytes) -> bytes:
    """ff02::1:ffXX:XXXX, the solicited-node multicast address of addr (RFC 4291 2.7.1)."""
    return _SOLICITED_104 + addr[13:16]


def multicast_mac(addr: bytes) -> bytes:
    """The Ethernet address of IPv6 multicast addr: 33:33 and its last 4 bytes (RFC 2464)."""
    return b"\x33\x33" + addr[12:16]


@dataclass(frozen=True, slots=True)
class NdMessage:
    """One Neighbor Discovery message, as parse_nd read it."""

    type: int  # ND_RS, ND_RA, ND_NS or ND_NA
    src: bytes  # IPv6 source (16 bytes; UNSPECIFIED for DAD)
    dst: bytes  # IPv6 destination (16 bytes)
    target: bytes | None  # NS/NA: the target address; else None
    lladdr: bytes | None  # the source link-layer option (RS/NS/RA) or target one (NA)
    flags: int  # NA: R/S/O (NA_ROUTER...); RA: M/O... (its whole flags byte); else 0


def parse_nd(packet: bytes) -> NdMessage:
    """The ND message in an IPv6 packet (an Ethernet payload); CodecError unless it keeps
    every rule in this module's docstring."""
    if len(packet) < IPV6_HEADER or packet[0] >> 4 != 6:
        raise CodecError("not an IPv6 packet")
    end = IPV6_HEADER + ((packet[4] << 8) | packet[5])
    if end > len(packet):
        raise CodecError("IPv6 payload length past the packet's end")
    if packet[6] != PROTO_ICMPV6:
        raise CodecError("next header not ICMPv6 (extension headers are not accepted)")
    if packet[7] != ND_HOP_LIMIT:
        raise CodecError("ND message with a hop limit under 255")
    src, dst, msg = packet[8:24], packet[24:40], packet[IPV6_HEADER:end]
    kind = msg[0] if msg else 0
    if kind not in _FIXED:
        raise CodecError(f"ICMPv6 type {kind} is not RS/RA/NS/NA")
    if len(msg) < _FIXED[kind]:
        raise CodecError(f"ND type {kind} of {len(msg)} bytes is too short")
    if msg[1] != 0:
        raise CodecError("ND message with a code other than 0")
    if pseudo_checksum(src, dst, PROTO_ICMPV6, msg) != 0:
        raise CodecError("bad ICMPv6 checksum")
    if src[0] == 0xFF:
        raise CodecError("multicast source")
    wanted = OPT_TARGET_LLADDR if kind == ND_NA else OPT_SOURCE_LLADDR
    lladdr = _link_layer_option(msg, _FIXED[kind], wanted)
    target, flags = None, 0
    if kind in (ND_NS, ND_NA):
        target = msg[8:24]
        if target[0] == 0xFF:
            raise CodecError("multicast NS/NA target")
    if kind == ND_NA:
        flags = msg[4] & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE)
        if dst[0] == 0xFF and flags & NA_SOLICITED:
            raise CodecError("solicited NA to a multicast address")
    elif kind == ND_RA:
        flags = msg[5]
        if src[0] != 0xFE or src[1] & 0xC0 != 0x80:  # fe80::/10, as Linux checks it
            raise CodecError("RA from an address that is not link-local")
    elif src == UNSPECIFIED:
        if kind == ND_NS and dst[:13] != _SOLICITED_104:
            raise CodecError("DAD NS not to a solicited-node address")
        if lladdr is not None:
            raise CodecError("source link-layer option from the unspecified address")
    return NdMessage(kind, src, dst, target, lladdr, flags)


def _link_layer_option(msg: bytes, pos: int, wanted: int) -> bytes | None:
    """Walk the options from pos (each well formed, or CodecError); the MAC of the first
    one of type `wanted`, or None."""
    found = None
    while pos < len(msg):
        if pos + 2 > len(msg) or msg[pos + 1] == 0:
            raise CodecError("ND option of length 0 or cut off")
        kind, size = msg[pos], msg[pos + 1] * 8
        if pos + size > len(msg):
            raise CodecError("ND option past the message's end")
        if kind == wanted and found is None:
            if size != 8:
                raise CodecError("link-layer address option not an Ethernet one")
            found = msg[pos + 2 : pos + 8]
        pos += size
    return found


# --- building the adapter's answers ----------------------------------------------------


def build_ra(
    router_mac: bytes,
    dst_mac: bytes,
    dst_ip: bytes,
    *,
    prefix: bytes,
    prefix_len: int = 64,
    autonomous: bool = True,
    on_link: tuple[tuple[bytes, int], ...] = (),
    router_lifetime: int,
    mtu: int,
    rdnss: tuple[bytes, ...] = (),
    dns_lifetime: int = 600,
    managed: bool = False,
    other: bool = False,
    valid_lifetime: int = 86400,
    preferred_lifetime: int = 14400,
) -> bytes:
    """A Router Advertisement, as a whole Ethernet frame from link_local(router_mac), hop
    limit 255; cur hop limit 64, reachable time and retrans timer unspecified (0). Options:
    source link-layer address, MTU, a Prefix Information option for prefix/prefix_len (L=1,
    A=autonomous: hosts make an address from it by SLAAC when prefix_len is 64), one with
    L=1, A=0 for each of on_link, and RDNSS when rdnss is given.

    router_lifetime 0 says "not a default router" (hosts drop one they had); the lifetimes
    are seconds. ValueError for values a host would refuse (RFC 4861 4.2, 4.6.2, 4.6.4)."""
    if not 0 <= router_lifetime <= 0xFFFF:
        raise ValueError(f"router_lifetime {router_lifetime} is not 0..65535")
    if not IPV6_MIN_MTU <= mtu <= 0xFFFF_FFFF:
        raise ValueError(f"mtu {mtu} is under IPv6's minimum of {IPV6_MIN_MTU}")
    if not 0 <= preferred_lifetime <= valid_lifetime <= 0xFFFF_FFFF:
        raise ValueError("lifetimes must be 0 <= preferred_lifetime <= valid_lifetime")
    pio_flags = PIO_ON_LINK | (PIO_AUTONOMOUS if autonomous else 0)
    ra_flags = (RA_MANAGED if managed else 0) | (RA_OTHER if other else 0)
    body = struct.pack("!BBHBBHII", ND_RA, 0, 0, 64, ra_flags, router_lifetime, 0, 0)
    body += struct.pack("!BB6s", OPT_SOURCE_LLADDR, 1, router_mac)
    body += struct.pack("!BBHI", OPT_MTU, 1, 0, mtu)
    pios = ((prefix, prefix_len, pio_flags), *((p, n, PIO_ON_LINK) for p, n in on_link))
    for pfx, length, flags in pios:
        lifetimes = (valid_lifetime, preferred_lifetime)
        body += struct.pack("!BBBBIII", OPT_PREFIX_INFO, 4, length, flags, *lifetimes, 0)
        body += _masked(pfx, length)
    if rdnss:
        body += struct.pack("!BBHI", OPT_RDNSS, 1 + 2 * len(rdnss), 0, dns_lifetime)
        body += b"".join(rdnss)
    return _nd_frame(dst_mac, router_mac, link_local(router_mac), dst_ip, body)


def build_na(
    adapter_mac: bytes,
    dst_mac: bytes,
    dst_ip: bytes,
    target: bytes,
    *,
    solicited: bool,
    router: bool,
    override: bool = True,
    lladdr: bool = True,
) -> bytes:
    """A Neighbor Advertisement for target, as a whole Ethernet frame from target itself
    (RFC 4861 7.2.4: an address of the sending interface), hop limit 255, with the target
    link-layer address option adapter_mac unless `lladdr` is False (allowed for an answer
    to a unicast NS, and enough to defend an address under DAD: the NA is then no larger
    than the NS it answers).

    To answer an NS, dst_mac/dst_ip are its sender's and solicited is True; to answer a DAD
    NS (from ::), pass ALL_NODES, multicast_mac(ALL_NODES) and solicited=False (7.2.4).
    ValueError for a solicited NA to a multicast address (receivers drop it, 7.1.2)."""
    if solicited and dst_ip[0] == 0xFF:
        raise ValueError("a solicited NA goes to the soliciting node's unicast address")
    flags = (
        (NA_ROUTER if router else 0)
        | (NA_SOLICITED if solicited else 0)
        | (NA_OVERRIDE if override else 0)
    )
    body = struct.pack("!BBHB3x16s", ND_NA, 0, 0, flags, target)
    if lladdr:
        body += struct.pack("!BB6s", OPT_TARGET_LLADDR, 1, adapter_mac)
    return _nd_frame(dst_mac, adapter_mac, target, dst_ip, body)


def _nd_frame(dst_mac: bytes, src_mac: bytes, src: bytes, dst: bytes, body: bytes) -> bytes:
    csum = pseudo_checksum(src, dst, PROTO_ICMPV6, body)
    body = body[:2] + csum.to_bytes(2, "big") + body[4:]
    packet = build_ipv6(src, dst, PROTO_ICMPV6, body, hop_limit=ND_HOP_LIMIT)
    return eth_header(dst_mac, src_mac, ETH_P_IPV6) + packet


def _masked(prefix: bytes, length: int) -> bytes:
    """prefix (16 bytes) with the bits past its first `length` zeroed (RFC 4861 4.6.2)."""
    if len(prefix) != 16 or not 0 <= length <= 128:
        raise ValueError(f"prefix of {len(prefix)} bytes, length {length}")
    mask = ((1 << 128) - 1) ^ ((1 << (128 - length)) - 1)
    return (int.from_bytes(prefix, "big") & mask).to_bytes(16, "big")
