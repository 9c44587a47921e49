"""Where the adapter's classify sends a frame from the GN link (gnlink.py for IPv4 and ARP,
gnlink6.py for IPv6): one Kind per destination stage."""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    ARP = "arp"
    ND = "nd"  # IPv6 Neighbor Discovery (and a first packet from an unlearnt address)
    DHCP = "dhcp"  # DHCP, and DHCPv6
    DNS = "dns"  # to the router address's port 53, IPv4 or IPv6
    TUNNEL = "tunnel"  # IPv4 to a VIP in the pool
    TUNNEL6 = "tunnel6"  # IPv6 to a VIP in the link prefix
    PASSTHROUGH = "passthrough"  # other traffic: through the kernel's routing and NAT
    DROP = "drop"
