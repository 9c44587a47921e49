"""The lab's IPv6 Internet (issue 13, first part): `lab up --mn-net v6|dual`, `--cn-net ...`.

The Internet segment gets 2001:db8::/64 beside 198.51.100.0/24 whenever a host asks for
IPv6: the DC, the RS and the web host are then dual-stack (each at 2001:db8:: plus its IPv4
address's last byte). A public host (NAT mode none) may be `dual` (both families) or `v6`
(IPv6 only: its IPv4 address is removed, so nothing of it can use IPv4). Hosts behind a NAT
stay `v4` (an IPv6 LAN behind a router is the next step). Daemons on a dual-stack lab listen
dual-stack ([::]); a dual host keeps its DC session alive in both families.
"""

from __future__ import annotations

from .netns import ip
from .settings import INET_NS, LabRefused

NETS = ("v4", "v6", "dual")
INET6_PREFIX = "2001:db8::"
INET6_PREFIXLEN = 64


def ipv6_of(ipv4: str) -> str:
    """The lab's IPv6 address beside an Internet-segment IPv4 one (…100.40 -> 2001:db8::40)."""
    return INET6_PREFIX + ipv4.rsplit(".", 1)[1]


def check_nets(nets: dict[str, str], nat_of: dict[str, str]) -> None:
    for host, net in nets.items():
        if net not in NETS:
            raise LabRefused(f"unknown network for {host}: {net!r} (choose {NETS})")
        if net != "v4" and nat_of.get(host) != "none":
            raise LabRefused(
                f"--{host}-net {net} needs {host} public: add --{host}-nat none "
                "(IPv6 behind a NAT router is not in the lab yet)"
            )


def add_ipv6(ns: str, ipv4: str, ifname: str = "eth0") -> None:
    ip(ns, "-6", "addr", "add", f"{ipv6_of(ipv4)}/{INET6_PREFIXLEN}", "dev", ifname, "nodad")


def drop_ipv4(ns: str, ifname: str = "eth0") -> None:
    """An IPv6-only host: no IPv4 address (and so no IPv4 route) is left on it."""
    ip(ns, "-4", "addr", "flush", "dev", ifname)


def configure_ipv6(servers: dict[str, str], hosts: dict[str, tuple[str, str]]) -> None:
    """servers: namespace -> IPv4 (made dual); hosts: namespace -> (IPv4, net)."""
    ip(INET_NS, "link", "set", "dev", "br0", "up")  # the bridge forwards IPv6 as it is
    for ns, ipv4 in servers.items():
        add_ipv6(ns, ipv4)
    for ns, (ipv4, net) in hosts.items():
        if net in ("v6", "dual"):
            add_ipv6(ns, ipv4)
            # The segment is the lab's whole IPv6 Internet: a default route onto it gives a
            # host IPv6 "upstream" (an adapter then lets its devices' IPv6 out, NAT66).
            ip(ns, "-6", "route", "add", "default", "dev", "eth0")
        if net == "v6":
            drop_ipv4(ns)
