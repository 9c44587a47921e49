"""The lab's IPv6 Internet (issue 13, first part): `lab up --mn-net v6|dual`, `--cn-net ...`.

The Internet segment gets 2001:db8::/64 beside 198.51.100.0/24 whenever a host asks for
IPv6: the DC, the RS and the web host are then dual-stack (each at 2001:db8:: plus its IPv4
address's last byte). A public host (NAT mode none) may be `dual` (both families) or `v6`
(IPv6 only: its IPv4 address is removed, so nothing of it can use IPv4). Daemons on a
dual-stack lab listen dual-stack ([::]); a dual host keeps its DC session alive in both
families.

A host behind a NAT router (cone, symmetric) may be `dual` or `v6` too, as at home: the
router keeps its IPv4 NAT and routes a /64 of its own to the LAN (2001:db8:B:C::/64 for the
LAN 10.B.C.0/24: router ::1, host ::2), with no NAT66 but a stateful firewall that lets in
only replies (and the ICMPv6 errors path MTU needs). The router answers neighbour discovery
on the segment for the host's address (proxy NDP), so the segment's hosts, whose IPv6 is
all on-link, need no route to the LAN. Hosts sharing another's NAT (`same`) and `lab move`
stay IPv4.
"""

from __future__ import annotations

from collections.abc import Sequence

from .netns import ip, ns_run
from .settings import INET_NS, NAT_LAN, SAME_NAT, LabRefused
from .state import HostState

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
        if net != "v4" and nat_of.get(host) == SAME_NAT:
            raise LabRefused(
                f"--{host}-net {net} needs a network of {host}'s own: choose --{host}-nat "
                "none, cone or symmetric (a host sharing another's NAT stays IPv4)"
            )


def add_ipv6(ns: str, ipv4: str, ifname: str = "eth0") -> None:
    ip(ns, "-6", "addr", "add", f"{ipv6_of(ipv4)}/{INET6_PREFIXLEN}", "dev", ifname, "nodad")


def drop_ipv4(ns: str, ifname: str = "eth0") -> None:
    """An IPv6-only host: no IPv4 address (and so no IPv4 route) is left on it."""
    ip(ns, "-4", "addr", "flush", "dev", ifname)


def lan_ipv6_of(ipv4: str) -> str:
    """A LAN host's IPv6 address beside its private IPv4 one (10.10.1.2 -> 2001:db8:10:1::2)."""
    a, b, c, d = ipv4.split(".")
    return f"2001:db8:{b}:{c}::{d}"


def configure_ipv6(servers: dict[str, str], hosts: Sequence[HostState]) -> None:
    """servers: namespace -> IPv4 (made dual); hosts: the NTM ends, each by its `net`."""
    ip(INET_NS, "link", "set", "dev", "br0", "up")  # the bridge forwards IPv6 as it is
    for ns, ipv4 in servers.items():
        add_ipv6(ns, ipv4)
        # The LANs behind routers are reached through the router's proxy NDP: on-link too.
        ip(ns, "-6", "route", "add", "default", "dev", "eth0")
    for host in hosts:
        if host.net == "v4":
            continue
        if host.nat_ns is None:
            add_ipv6(host.ns, host.address)
            # The segment is the lab's whole IPv6 Internet: a default route onto it gives a
            # host IPv6 "upstream" (an adapter then lets its devices' IPv6 out, NAT66).
            ip(host.ns, "-6", "route", "add", "default", "dev", "eth0")
        else:
            _routed_lan(host)
        if host.net == "v6":
            drop_ipv4(host.ns)


def _routed_lan(host: HostState) -> None:
    """The host's router: its wan0 on the segment, the LAN's /64 routed, proxy NDP for the
    host's address, and the firewall; the host: its address and default route."""
    router, address = str(host.nat_ns), lan_ipv6_of(host.address)
    gateway = address.rsplit(":", 1)[0] + ":1"
    ip(router, "-6", "addr", "add", f"{ipv6_of(host.public_address)}/{INET6_PREFIXLEN}",
       "dev", "wan0", "nodad")
    ip(router, "-6", "route", "add", "default", "dev", "wan0")
    ip(router, "-6", "addr", "add", f"{gateway}/64", "dev", NAT_LAN, "nodad")
    # A real router has the /64 routed to it; proxy NDP stands in, without its random delay.
    sysctls = ("all.forwarding=1", "wan0.proxy_ndp=1")
    for sysctl in [f"net.ipv6.conf.{s}" for s in sysctls] + ["net.ipv6.neigh.wan0.proxy_delay=0"]:
        ns_run(router, "sysctl", "-q", "-w", sysctl)
    ip(router, "-6", "neigh", "add", "proxy", address, "dev", "wan0")
    ns_run(router, "nft", "-f", "-", input=FIREWALL6)
    ip(host.ns, "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
    ip(host.ns, "-6", "route", "add", "default", "via", gateway)


#: A home router's IPv6 firewall (RFC 6092): from the Internet, only what belongs to a flow
#: the LAN started, and the ICMPv6 errors (Packet Too Big above all) and echo requests.
FIREWALL6 = """table ip6 firewall6 {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan0" ct state established,related accept
    iifname "wan0" icmpv6 type { destination-unreachable, packet-too-big } accept
    iifname "wan0" icmpv6 type { time-exceeded, parameter-problem, echo-request } accept
    iifname "wan0" counter drop
  }
}
"""
