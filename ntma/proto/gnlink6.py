"""The adapter's IPv6 on the GN link (sans-IO; docs/protocol.md 14, item 2; issue 13).

The devices configure themselves the way their own stacks expect: Router Advertisements
give the link prefix (the first /64 of the DC's IPv6 pool, autonomous and on-link), the
tunnel MTU and the adapter's address as the DNS server (RDNSS); every other pool address
is on-link, so a device resolves a peer's IPv6 VIP by Neighbor Discovery and the adapter
answers for it (as ARP for IPv4). Rules:
- A device's IPv6 VIP is the address it configured (SLAAC), learnt from its duplicate
  address detection (an NS from ::), or from its first packet when the adapter started
  after it: one address per device, bound to its MAC as its IPv4 VIP is. The caller asks
  the DC to keep it (NAME_ADD vip6). A second address (a temporary one) is counted and its
  packets dropped: a peer knows one IPv6 VIP per name.
- DAD for an address the adapter answers for (the router, a derived VIP, another device's)
  is defended with an NA, so the device picks another.
- An RS is answered by the next multicast RA, at most one per RA_MIN_GAP_S (RFC 4861
  6.2.6), so a flood of RSs gets no more than that; an NA is never larger than the NS it
  answers (no link-layer option for a unicast NS, or in a DAD defence).
- DHCPv6 (to ff02::1:2 port 547) goes to the DHCP responder (stages/gn_dhcp6.py).
- classify_ipv6() sorts a data frame as classify_frame() does an IPv4 one: the device's
  MAC and IPv6 VIP together, then DNS to the adapter, a pool address (a tunnel or a device
  here), or ordinary traffic (passthrough, only when the adapter has IPv6 upstream).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .buffer import CodecError
from .devices import Device
from .ether import ETH_HEADER, PROTO_UDP
from .ether6 import IPV6_HEADER
from .framekind import Kind
from .ndp import (
    ALL_NODES,
    ND_NA,
    ND_NS,
    ND_RS,
    UNSPECIFIED,
    build_na,
    build_ra,
    link_local,
    multicast_mac,
    parse_nd,
)

if TYPE_CHECKING:
    from .gnlink import GnLink

RA_MIN_GAP_S = 3.0  # MIN_DELAY_BETWEEN_RAS
RA_INITIAL_GAP_S = 4.0  # the first RAs (MAX_INITIAL_RTR_ADVERT_INTERVAL is 16 s)
RA_INITIAL_COUNT = 3
RA_INTERVAL_S = 60.0  # unsolicited RAs after that; lifetimes are many times longer
ROUTER_LIFETIME_S = 1800  # advertised only with IPv6 upstream
_ND_TYPES = frozenset((ND_RS, ND_NS, ND_NA))
_PROTO_ICMPV6 = 58
_V6_FRAME_MIN = ETH_HEADER + IPV6_HEADER
_ALL_DHCP = bytes.fromhex("ff020000000000000000000000010002")  # All_DHCP_Relay_Agents_and_Servers
_DHCP6_SERVER = (547).to_bytes(2, "big")


@dataclass
class Link6:
    """What the adapter advertises on the GN link and answers for."""

    adapter_mac: bytes
    prefix: bytes  # the link prefix's 8 bytes (a /64)
    router: bytes  # prefix::1, the adapter's address (DNS, RDNSS, the default router)
    derived: int  # interface IDs below this are the DC's derived VIPs (nodes' addresses)
    mtu: int
    upstream: bool = False  # ordinary IPv6 goes out through the kernel (a default route)
    router_ll: bytes = b""

    def __post_init__(self) -> None:
        self.router_ll = link_local(self.adapter_mac)

    @property
    def network(self) -> ipaddress.IPv6Network:
        """The link prefix, as text wants it (the kernel's route, the logs)."""
        return ipaddress.IPv6Network((self.prefix + bytes(8), 64))

    def in_prefix(self, address: bytes) -> bool:
        return address[:8] == self.prefix

    def reserved(self, address: bytes) -> bool:
        """The adapter's own addresses and the DC's derived VIPs: never a device's."""
        return address in (self.router, self.router_ll) or (
            address[:8] == self.prefix and int.from_bytes(address[8:], "big") < self.derived
        )

    def advertisement(self, dst_mac: bytes, dst_ip: bytes) -> bytes:
        return build_ra(
            self.adapter_mac,
            dst_mac,
            dst_ip,
            prefix=self.prefix + bytes(8),
            router_lifetime=ROUTER_LIFETIME_S if self.upstream else 0,
            mtu=self.mtu,
            rdnss=(self.router,),
        )

    def multicast_advertisement(self) -> bytes:
        return self.advertisement(multicast_mac(ALL_NODES), ALL_NODES)


@dataclass
class RaTimer:
    """When the next multicast RA is due: RA_INITIAL_COUNT quickly once the link has
    IPv6, then every RA_INTERVAL_S; an RS brings the next one forward, not closer than
    RA_MIN_GAP_S after the last."""

    next_at: float | None = None
    last_at: float = float("-inf")
    sent_count: int = 0

    def start(self, now: float) -> None:
        if self.next_at is None:
            self.next_at = now

    def solicited(self, now: float) -> None:
        if self.next_at is not None:
            self.next_at = min(self.next_at, max(now, self.last_at + RA_MIN_GAP_S))

    def due(self, now: float) -> bool:
        return self.next_at is not None and now >= self.next_at

    def sent(self, now: float) -> None:
        self.last_at, self.sent_count = now, self.sent_count + 1
        gap = RA_INITIAL_GAP_S if self.sent_count < RA_INITIAL_COUNT else RA_INTERVAL_S
        self.next_at = now + gap


@dataclass
class NdOutcome:
    """What one ND frame (or a first packet from an unlearnt address) came to."""

    replies: list[bytes] = field(default_factory=list)
    learnt: Device | None = None  # this device's IPv6 VIP is new: ask the DC to keep it
    solicited: bool = False  # an RS: the next RA comes sooner
    reason: str = ""  # why nothing was answered (counted by the caller)


def classify_ipv6(frame: bytes, link: GnLink, now: float = 0.0) -> tuple[Kind, str]:
    """(kind, drop reason) for an IPv6 frame (`link.v6` is set once the DC gave an IPv6
    VIP in a pool with a /64)."""
    v6: Link6 | None = link.v6
    if v6 is None:
        return Kind.DROP, "ipv6_off"
    if len(frame) < _V6_FRAME_MIN or frame[14] >> 4 != 6:
        return Kind.DROP, "malformed"
    if _V6_FRAME_MIN + ((frame[18] << 8) | frame[19]) > len(frame):
        return Kind.DROP, "malformed"
    nh = frame[20]
    if nh == _PROTO_ICMPV6 and len(frame) > _V6_FRAME_MIN and frame[54] in _ND_TYPES:
        return Kind.ND, ""
    if nh == PROTO_UDP and frame[38:54] == _ALL_DHCP and frame[56:58] == _DHCP6_SERVER:
        return Kind.DHCP, ""  # from its link-local address: each device's server keeps to it
    device = link.by_mac.get(frame[6:12])
    src = frame[22:38]
    if device is None:  # a device not seen since the adapter started shows itself
        return (Kind.ND, "") if src[:8] == v6.prefix else (Kind.DROP, "foreign_mac")
    if src != device.vip6:
        if device.vip6 is None and src[:8] == v6.prefix:
            return Kind.ND, ""  # its address, configured before the adapter (re)started
        device.drops["foreign_ip"] += 1
        return Kind.DROP, "foreign_ip"
    device.packets_out += 1
    device.bytes_out += len(frame)
    dst = frame[38:54]
    if dst[:8] == v6.prefix:
        udp = nh == PROTO_UDP and len(frame) >= _V6_FRAME_MIN + 4
        if dst == v6.router:
            dns = udp and frame[56] == 0 and frame[57] == 53
            return (Kind.DNS if dns else Kind.PASSTHROUGH), ""
        if udp and device.inbound is not None:
            device.inbound.note_outbound(frame[ETH_HEADER:], now)
        return Kind.TUNNEL6, ""
    if dst[0] == 0xFF:
        return Kind.DROP, "multicast"
    if dst[0] == 0xFE and dst[1] & 0xC0 == 0x80:
        return Kind.DROP, "link_local"
    return (Kind.PASSTHROUGH, "") if v6.upstream else (Kind.DROP, "no_ipv6_upstream")


def answer_nd(frame: bytes, link) -> NdOutcome:
    """The ND responder's work on one frame. Raises CodecError for a malformed one."""
    v6: Link6 | None = link.v6
    if v6 is None:
        return NdOutcome(reason="ipv6_off")
    packet, mac = frame[ETH_HEADER:], frame[6:12]
    if len(packet) <= IPV6_HEADER or packet[6] != _PROTO_ICMPV6 or packet[40] not in _ND_TYPES:
        device = link.by_mac.get(mac) or link.devices.admit(mac)[0]  # its first packet
        return _learn(link, v6, device, packet[8:24], NdOutcome())
    msg = parse_nd(packet)
    if msg.lladdr is not None and msg.type != ND_NA and msg.lladdr != mac:
        raise CodecError("ND link-layer address differs from the frame's source")
    if msg.type == ND_RS:
        return NdOutcome(solicited=True)
    if msg.type == ND_NA:
        return NdOutcome(reason="na_ignored")
    assert msg.target is not None
    if msg.src == UNSPECIFIED:
        return _on_dad(link, v6, mac, msg.target)
    return _on_solicitation(link, v6, mac, msg.src, msg.dst, msg.target, msg.lladdr)


def _on_dad(link, v6: Link6, mac: bytes, target: bytes) -> NdOutcome:
    if not v6.in_prefix(target) and target != v6.router_ll:
        return NdOutcome(reason="dad_elsewhere")  # its link-local address: not ours to judge
    holder = link.devices.by_vip.get(target)
    device = link.by_mac.get(mac)
    if v6.reserved(target) or (holder is not None and holder is not device):
        defence = build_na(
            v6.adapter_mac,
            multicast_mac(ALL_NODES),
            ALL_NODES,
            target,
            solicited=False,
            router=target in (v6.router, v6.router_ll),
            lladdr=False,
        )
        return NdOutcome(replies=[defence], reason="")
    if device is None:
        device, why = link.devices.admit(mac)
        if device is None:
            return NdOutcome(reason=why)
    return _learn(link, v6, device, target, NdOutcome())


def _learn(link, v6: Link6, device: Device | None, address: bytes, out: NdOutcome) -> NdOutcome:
    if device is None:
        out.reason = "foreign_mac"
    elif device.vip6 == address:
        out.reason = "known_address"
    elif device.vip6 is not None:
        device.drops["second_address"] += 1
        out.reason = "second_address"
    elif not v6.in_prefix(address) or v6.reserved(address) or address in link.devices.by_vip:
        device.drops["foreign_ip"] += 1
        out.reason = "foreign_ip"
    else:
        link.devices.learned_vip6(device, address)
        out.learnt = device
    return out


def _on_solicitation(
    link, v6: Link6, mac: bytes, src: bytes, dst: bytes, target: bytes, lladdr: bytes | None
) -> NdOutcome:
    link_local_src = src[0] == 0xFE and src[1] & 0xC0 == 0x80
    device = link.by_mac.get(mac)
    out = NdOutcome()
    if not link_local_src and (device is None or device.vip6 is None):
        # The adapter restarted after the device's DAD: its first NS teaches its address.
        device = device or link.devices.admit(mac)[0]
        _learn(link, v6, device, src, out)
        if out.learnt is None:
            return out
    if device is None:
        return NdOutcome(reason="foreign_mac")
    if src != device.vip6 and not link_local_src:
        device.drops["foreign_ip"] += 1
        return NdOutcome(reason="foreign_ip")
    routers = (v6.router, v6.router_ll)
    if target == device.vip6 or not (target in routers or v6.in_prefix(target)):
        out.reason = "not_answered"
        return out
    multicast = dst[0] == 0xFF
    if multicast and lladdr is None:
        out.reason = "no_lladdr"  # the NA would be larger than the NS
        return out
    reply = build_na(
        v6.adapter_mac, mac, src, target, solicited=True, router=target in routers,
        lladdr=multicast,
    )
    out.replies.append(reply)
    return out
