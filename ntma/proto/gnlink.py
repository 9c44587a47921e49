"""The adapter's view of its link to the general node (sans-IO).

Rules:
- GnLink holds everything known about the link: our MAC, the router address
  (the first address of the VIP pool, where the adapter answers), the GN's VIP
  once registered, and the GN's MAC once it has shown itself.
- The GN's MAC is learnt in one method, learn_gn_mac(), from three sources: a DHCP
  lease (always wins: the server keeps to one client), and, while the MAC is still
  unknown, the first IPv4 frame or ARP from the GN's VIP (a GN with a static VIP).
- classify_frame() sorts one frame into a Kind; frames that are not the GN's
  (another source MAC, or a source IP other than its VIP) are refused with a
  reason, so they can be counted.
- answer_arp() answers for the router address and every pool address except
  the GN's own (the GN ARPs for its peers' VIPs); gratuitous ARP and probes are
  only learnt from.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from .buffer import CodecError
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

_ZERO_IP = bytes(4)


class Kind(enum.Enum):
    ARP = "arp"
    DHCP = "dhcp"
    DNS = "dns"
    TUNNEL = "tunnel"  # IPv4 to a VIP in the pool
    PASSTHROUGH = "passthrough"  # other IPv4: through the kernel's routing and NAT
    DROP = "drop"


@dataclass
class GnLink:
    adapter_mac: bytes
    router_ip: bytes | None = None
    pool: ipaddress.IPv4Network | None = None
    gn_ip: bytes | None = None
    gn_mac: bytes | None = None

    pool_mask: int = 0
    pool_net: int = -1  # matches nothing until set_vip()

    def set_vip(self, vip: str, prefix_len: int) -> None:
        """The DC gave the GN its VIP: the pool's first address is the adapter's."""
        self.pool = ipaddress.IPv4Network(f"{vip}/{prefix_len}", strict=False)
        self.pool_mask = int(self.pool.netmask)
        self.pool_net = int(self.pool.network_address)
        self.router_ip = next(self.pool.hosts()).packed
        self.gn_ip = ipaddress.IPv4Address(vip).packed

    def in_pool(self, packed: bytes) -> bool:
        return int.from_bytes(packed, "big") & self.pool_mask == self.pool_net

    def learn_gn_mac(self, mac: bytes, *, leased: bool = False) -> None:
        """The GN showed itself with this MAC; a lease replaces what was learnt."""
        if leased or self.gn_mac is None:
            self.gn_mac = mac

    def foreign_mac(self, frame: bytes) -> bool:
        return self.gn_mac is not None and frame[6:12] != self.gn_mac


def classify_frame(frame: bytes, link: GnLink) -> tuple[Kind, str]:
    """(kind, drop reason or "") for one Ethernet frame from the GN link.

    On the hot path: fixed offsets into the frame (IPv4 starts at 14), no copies but
    the two addresses, and the pool test on precomputed integers.
    """
    if len(frame) < ETH_HEADER:
        return Kind.DROP, "malformed"
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype != ETH_P_IP:
        if ethertype == ETH_P_ARP:
            return (Kind.DROP, "foreign_mac") if link.foreign_mac(frame) else (Kind.ARP, "")
        return Kind.DROP, ("ipv6" if ethertype == ETH_P_IPV6 else "other_ethertype")
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
        return Kind.DHCP, ""  # any MAC may ask; the DHCP server keeps to one client
    if link.gn_ip is None:
        return Kind.DROP, "not_registered"
    if frame[26:30] != link.gn_ip:
        return Kind.DROP, "foreign_ip"
    if link.gn_mac is None:  # tested here so the hot path pays no call
        link.learn_gn_mac(frame[6:12])  # a GN with a static VIP shows itself here
    elif frame[6:12] != link.gn_mac:
        return Kind.DROP, "foreign_mac"
    dst = frame[30:34]
    if dst == link.router_ip:
        if udp and frame[l4 + 2] == 0 and frame[l4 + 3] == 53:
            return Kind.DNS, ""
        return Kind.PASSTHROUGH, ""
    if int.from_bytes(dst, "big") & link.pool_mask == link.pool_net:
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
    probe_or_gratuitous = sender_ip in (_ZERO_IP, target_ip)
    if link.gn_ip is not None and sender_ip == link.gn_ip:
        link.learn_gn_mac(sender_mac)
    if op != ARP_REQUEST or probe_or_gratuitous or link.router_ip is None:
        return None
    if target_ip == link.gn_ip or not (target_ip == link.router_ip or link.in_pool(target_ip)):
        return None
    return build_arp_reply(link.adapter_mac, target_ip, sender_mac, sender_ip)
