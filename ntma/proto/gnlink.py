"""The adapter's view of its link to the general nodes (sans-IO).

Rules:
- GnLink holds what is known about the link: our MAC, the VIP pool and the router address
  (the pool's first address, where the adapter answers), and the devices on the link
  (devices.py: each by MAC, with its own name and VIP).
- classify_frame() sorts one frame into a Kind. An IPv4 frame passes only from a known
  device (its MAC) with that device's VIP as its source (MAC and VIP bound together);
  others are refused with a reason (foreign_mac, foreign_ip), so they can be counted. A
  configured device, or the default device using the adapter's VIP statically, is known
  from its first frame.
- IPv6 frames are gnlink6.py's: the same binding of MAC and (IPv6) VIP, ND instead of ARP.
- answer_arp() answers a device for the router address and every pool address except its
  own VIP (peers' VIPs, and other devices on this link, whose traffic the adapter then
  forwards and counts); gratuitous ARP and probes are not answered.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .buffer import CodecError
from .devices import Device, Devices
from .ether import (
    ARP_REQUEST,
    ETH_HEADER,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    PROTO_UDP,
    build_arp_reply,
    parse_arp,
)
from .framekind import Kind
from .gnlink6 import Link6, classify_ipv6

_ZERO_IP = bytes(4)


@dataclass
class GnLink:
    adapter_mac: bytes
    devices: Devices = field(default_factory=Devices)
    router_ip: bytes | None = None
    pool: ipaddress.IPv4Network | None = None
    v6: Link6 | None = None  # set when the DC gives IPv6 VIPs in a pool with a /64

    pool_mask: int = 0
    pool_net: int = -1  # matches nothing until set_pool()

    def __post_init__(self) -> None:
        self.devices.adapter_mac = self.adapter_mac
        self.by_mac = self.devices.by_mac  # the same dict: one attribute load per frame

    def set_pool(self, vip: str, prefix_len: int) -> None:
        """The DC registered us with a VIP in its pool: the pool's first address is ours."""
        self.pool = ipaddress.IPv4Network(f"{vip}/{prefix_len}", strict=False)
        self.pool_mask = int(self.pool.netmask)
        self.pool_net = int(self.pool.network_address)
        self.router_ip = next(self.pool.hosts()).packed

    def set_vip(self, vip: str, prefix_len: int) -> None:
        """The adapter's REGISTER name got its VIP: the pool, and the default device's VIP."""
        self.set_pool(vip, prefix_len)
        self.devices.named(self.devices.own_name, vip)

    def set_ipv6(self, vip6: str, prefix6: int, mtu: int, upstream: bool) -> str:
        """IPv6 for the devices: "" when served, else why not (logged by the caller)."""
        if prefix6 == 0 or vip6 == "::":
            return "the DC has no IPv6 pool"
        if prefix6 > 64:
            return f"the DC's IPv6 pool is a /{prefix6}: SLAAC needs a /64"
        if mtu < 1280:
            return f"mtu {mtu} is below IPv6's minimum of 1280"
        if self.pool is None:
            return "no IPv4 pool yet"
        prefix = ipaddress.IPv6Network(f"{vip6}/64", strict=False).network_address.packed[:8]
        router = prefix + (1).to_bytes(8, "big")
        derived = self.pool.num_addresses
        self.v6 = Link6(self.adapter_mac, prefix, router, derived, mtu, upstream)
        return ""

    def in_pool(self, packed: bytes) -> bool:
        return int.from_bytes(packed, "big") & self.pool_mask == self.pool_net

    def device_of(self, frame: bytes, src_ip: bytes) -> Device | None:
        """The device a frame comes from (its source MAC), if it is one of ours."""
        mac = frame[6:12]
        return self.by_mac.get(mac) or self.devices.claim_static(mac, src_ip)


def classify_frame(frame: bytes, link: GnLink, now: float = 0.0) -> tuple[Kind, str]:
    """(kind, drop reason or "") for one Ethernet frame from the GN link.

    On the hot path: fixed offsets into the frame (IPv4 starts at 14), no copies but
    the two addresses, and the pool test on precomputed integers.
    """
    if len(frame) < ETH_HEADER:
        return Kind.DROP, "malformed"
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype != ETH_P_IP:
        if ethertype == ETH_P_ARP:
            known = len(frame) >= 32 and link.device_of(frame, frame[28:32]) is not None
            return (Kind.ARP, "") if known else (Kind.DROP, "foreign_mac")
        if ethertype == ETH_P_IPV6:
            return classify_ipv6(frame, link, now)
        return Kind.DROP, "other_ethertype"
    if len(frame) < ETH_HEADER + 20 or frame[14] >> 4 != 4:
        return Kind.DROP, "malformed"
    ihl = (frame[14] & 0x0F) * 4
    total = (frame[16] << 8) | frame[17]
    if ihl < 20 or total < ihl or ETH_HEADER + total > len(frame):
        return Kind.DROP, "malformed"
    proto = frame[23]
    l4 = ETH_HEADER + ihl
    udp = proto == PROTO_UDP and len(frame) >= l4 + 4
    if (
        udp
        and frame[l4 + 1] == 68
        and frame[l4] == 0
        and frame[l4 + 2] == 0
        and frame[l4 + 3] == 67
    ):
        return Kind.DHCP, ""  # any MAC may ask; each device's server keeps to its MAC
    if link.router_ip is None:
        return Kind.DROP, "not_registered"
    mac = frame[6:12]  # a known device costs one lookup; the slow path only a new MAC
    device = link.by_mac.get(mac) or link.devices.claim_static(mac, frame[26:30])
    if device is None:
        return Kind.DROP, "foreign_mac"
    if frame[26:30] != device.vip:
        device.drops["foreign_ip"] += 1
        return Kind.DROP, "foreign_ip"
    device.packets_out += 1
    device.bytes_out += len(frame)
    dst = frame[30:34]
    if dst == link.router_ip:
        if udp and frame[l4 + 2] == 0 and frame[l4 + 3] == 53:
            return Kind.DNS, ""
        return Kind.PASSTHROUGH, ""
    if int.from_bytes(dst, "big") & link.pool_mask == link.pool_net:
        if udp and device.inbound is not None:  # replies to its own UDP flows may come in
            device.inbound.note_outbound(frame[ETH_HEADER:], now)
        return Kind.TUNNEL, ""
    return Kind.PASSTHROUGH, ""


def dport_of(packet: memoryview | bytes, ihl: int) -> int:
    if len(packet) < ihl + 4:
        return -1
    return (packet[ihl + 2] << 8) | packet[ihl + 3]


def answer_arp(frame: bytes, link: GnLink) -> bytes | None:
    """The ARP reply to send, or None (not a request we answer). Raises CodecError."""
    op, sender_mac, sender_ip, _, target_ip = parse_arp(frame)
    if sender_mac != frame[6:12]:
        raise CodecError("ARP sender MAC differs from the frame's source")
    if op != ARP_REQUEST or sender_ip in (_ZERO_IP, target_ip) or link.router_ip is None:
        return None  # a reply, a probe or a gratuitous ARP: nothing to answer
    device = link.devices.by_mac.get(sender_mac)
    if device is None or sender_ip != device.vip:
        return None  # only a device asking as itself
    if target_ip == device.vip or not (target_ip == link.router_ip or link.in_pool(target_ip)):
        return None
    return build_arp_reply(link.adapter_mac, target_ip, sender_mac, sender_ip)
