"""The lab's topology as data: namespaces, veth links, addresses, built from `settings`.

`build_topology` is pure (no root, no commands): `netns.build_network` applies it. A host
behind its own NAT gets a router namespace; hosts sharing a NAT ("same") become ports of
that router's LAN bridge; an adapter attaches like a node, and its GN hangs off its gn0 or,
with several GNs, its gn0 and the GNs are ports of a switch (a bridge in a namespace of its
own, `gn_topology`).

Where coming features go: another node or adapter is a row in `settings`; an IPv6-only
network is a `Namespace`/`Iface` with v6 cidrs (`Iface.ipv6` already says whether a link
has IPv6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .settings import (
    ADAPTER_COUNTS,
    ADAPTER_DEFS,
    ADAPTER_GN_IFACE,
    BRIDGE,
    CN_NAT_MODES,
    DC_IP,
    DC_NS,
    GN_IFACE,
    GN_SWITCH_BRIDGE,
    INET_NS,
    INET_PREFIXLEN,
    MAX_GNS,
    NAT_LAN,
    NAT_MODES,
    NAT_RULES,
    NS_PREFIX,
    RS_IP,
    RS_NS,
    SAME_NAT,
    SLOTS,
    WEB_IP,
    WEB_NS,
    GnDef,
    LabError,
    NodeDef,
    gn_defs,
    lab_defs,
)


@dataclass(frozen=True)
class Iface:
    ns: str
    name: str
    cidr: str | None = None  # "198.51.100.10/24"
    ipv6: bool = True  # False: net.ipv6.conf.<name>.disable_ipv6=1 before the link goes up
    mac: str | None = None  # a fixed MAC (the GNs': the adapter knows its devices by MAC)


@dataclass(frozen=True)
class Link:
    """A veth pair; `a` is enslaved to `bridge` (in a.ns) when given."""

    a: Iface
    b: Iface
    bridge: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    role: str  # inet | dc | web | node | nat | adapter | general-node | switch
    node: str | None = None  # the node (or adapter) this namespace belongs to
    fqdn: str | None = None
    nat: str | None = None  # nodes: how they attach; NAT routers: their type
    default_via: str | None = None
    masquerade_oif: str | None = None  # NAT routers: the WAN interface
    bridge: str | None = None  # the inet segment, a shared NAT LAN: its bridge
    bridge_cidr: str | None = None  # an address on that bridge (a shared NAT LAN's router)
    ip_forward: bool = False  # net.ipv4.ip_forward=1 (NAT routers, the adapter)
    block_udp_between: tuple[str, ...] | None = None  # inet: --block-direct's address set
    ipv6_off: bool = False  # no IPv6 on anything in it, its bridge included (a GN switch)

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False) and k != "name"}


@dataclass(frozen=True)
class Topology:
    namespaces: tuple[Namespace, ...]
    links: tuple[Link, ...]

    def addresses(self) -> dict[str, dict[str, str]]:
        """namespace -> interface -> cidr, as planned."""
        out: dict[str, dict[str, str]] = {ns.name: {} for ns in self.namespaces}
        for ns in self.namespaces:
            if ns.bridge and ns.bridge_cidr:
                out[ns.name][ns.bridge] = ns.bridge_cidr
        for link in self.links:
            for end in (link.a, link.b):
                if end.cidr:
                    out[end.ns][end.name] = end.cidr
        return out


def _inet_cidr(ip: str) -> str:
    return f"{ip}/{INET_PREFIXLEN}"


def _bridge_port_name(ns: str) -> str:
    return ("p-" + ns.removeprefix(NS_PREFIX))[:15]


def inet_link(ns: str, ip: str, ifname: str = "eth0") -> Link:
    """A host interface on the Internet segment (veth port on br0 in ntma-inet)."""
    return Link(Iface(INET_NS, _bridge_port_name(ns)), Iface(ns, ifname, _inet_cidr(ip)), BRIDGE)


def node_topology(
    node: NodeDef, nat: str, guests: Sequence[NodeDef] = ()
) -> tuple[list[Namespace], list[Link]]:
    """`node` on the Internet directly, or behind its own NAT router; `guests` (nat "same")
    share that router: its lan0 is then a bridge with one port per host behind it."""
    if nat == "none":
        if guests:
            raise LabError(f"{guests[0].name} cannot share {node.name}'s NAT: it has none")
        host = Namespace(node.ns, node.role, node=node.name, fqdn=node.fqdn, nat="none")
        return [host], [inet_link(node.ns, node.direct_ip)]
    gw, host_ip = f"{node.lan_net}.1", f"{node.lan_net}.2"
    router = Namespace(
        node.nat_ns, "nat", node=node.name, nat=nat, masquerade_oif="wan0", ip_forward=True
    )
    host = Namespace(node.ns, node.role, node=node.name, fqdn=node.fqdn, nat=nat, default_via=gw)
    wan = inet_link(node.nat_ns, node.wan_ip, "wan0")
    if not guests:
        lan = Link(Iface(node.nat_ns, NAT_LAN, f"{gw}/24"), Iface(node.ns, "eth0", f"{host_ip}/24"))
        return [router, host], [wan, lan]
    router = replace(router, bridge=NAT_LAN, bridge_cidr=f"{gw}/24")
    namespaces, links = [router, host], [wan, _lan_port(node, node, host_ip)]
    for guest in guests:
        namespaces.append(
            Namespace(
                guest.ns, guest.role, node=guest.name, fqdn=guest.fqdn, nat=SAME_NAT, default_via=gw
            )
        )
        links.append(_lan_port(node, guest, f"{node.lan_net}.{guest.same_nat_host}"))
    return namespaces, links


def _lan_port(owner: NodeDef, host: NodeDef, ip: str) -> Link:
    """A port of `owner`'s NAT LAN bridge, its peer `host`'s eth0 at `ip`."""
    return Link(
        Iface(owner.nat_ns, f"lan-{host.name}"[:15]), Iface(host.ns, "eth0", f"{ip}/24"), NAT_LAN
    )


def ntm_public_addresses(adapters: int = 1) -> tuple[str, ...]:
    """Every address an NTM end (node or adapter) of a lab with `adapters` adapters can have
    on the Internet segment, on either slot (`lab move` goes there): its own when it is
    public, its NAT router's wan0 otherwise."""
    defs = lab_defs(adapters).values()
    slots = [d.at_slot(s) for d in defs for s in SLOTS if s == 1 or d.slot2]
    return tuple(sorted({ip for d in slots for ip in (d.direct_ip, d.wan_ip)}))


def network_kind(nat: str) -> str | None:
    """A host's networks come in two kinds, each with its slots: "public", and "nat" (behind
    a router of its own, cone or symmetric); None for "same" (another host's NAT)."""
    return {"none": "public", **dict.fromkeys(NAT_RULES, "nat")}.get(nat)


def check_layout(gns: int, adapters: int) -> None:
    """`--gns` and `--adapters` within what the lab builds."""
    if not 1 <= gns <= MAX_GNS:
        raise LabError(f"--gns {gns}: choose 1..{MAX_GNS} general nodes")
    if adapters not in ADAPTER_COUNTS:
        raise LabError(f"--adapters {adapters}: choose one of {ADAPTER_COUNTS}")


def lab_gns(gns: int = 1, adapters: int = 1) -> tuple[GnDef, ...]:
    """Every GN of the lab: `gns` on the first adapter, one on each other adapter."""
    check_layout(gns, adapters)
    counts = (gns, *([1] * (adapters - 1)))
    return tuple(g for a, n in zip(ADAPTER_DEFS, counts, strict=False) for g in gn_defs(a, n))


def resolve_nat_modes(nat_by_node: dict[str, str], adapters: int = 1) -> dict[str, str]:
    """name -> NAT mode for every node and adapter of a lab with `adapters` adapters
    (defaults filled in), validated."""
    check_layout(1, adapters)
    defs = lab_defs(adapters)
    unknown = sorted(set(nat_by_node) - set(defs))
    if unknown:
        raise LabError(f"unknown lab host {unknown[0]!r} (choose {tuple(defs)})")
    nat_of = {name: nat_by_node.get(name, d.default_nat) for name, d in defs.items()}
    for name, nat in nat_of.items():
        modes = CN_NAT_MODES if defs[name].same_nat_as else NAT_MODES
        if nat not in modes:
            raise LabError(f"unknown NAT mode for {name}: {nat!r} (choose {modes})")
        owner = defs[name].same_nat_as
        if nat == SAME_NAT and owner and nat_of[owner] not in NAT_RULES:
            raise LabError(
                f"--{name}-nat {SAME_NAT} puts {name} behind {owner}'s NAT, but {owner} has "
                f"none: add --{owner}-nat cone or --{owner}-nat symmetric"
            )
    return nat_of


def switch_ns(adapter: NodeDef) -> str:
    """The namespace of `adapter`'s GN switch (ntma-gnsw; the second adapter's ntma-gnbsw)."""
    return f"{NS_PREFIX}{adapter.label}sw"


def _gn_end(gn: GnDef, ipv6: bool = False) -> Iface:
    return Iface(gn.ns, GN_IFACE, ipv6=ipv6, mac=gn.mac)


def gn_topology(
    adapter: NodeDef, gns: Sequence[GnDef], gn_ipv6: bool = False
) -> tuple[list[Namespace], list[Link]]:
    """`adapter`'s GN link: one GN on a veth to its gn0; several as ports of a switch, with
    gn0. No addresses on it (the GNs get theirs by DHCP); no IPv6 unless `gn_ipv6` (the
    DC has IPv6 VIPs: each GN's own kernel configures its address from the adapter's RAs;
    the adapter's gn0 and the switch still have none, the adapter answers on gn0 itself)."""
    hosts = [Namespace(g.ns, "general-node", node=adapter.name, fqdn=g.fqdn) for g in gns]
    gn0 = Iface(adapter.ns, ADAPTER_GN_IFACE, ipv6=False)
    if len(gns) == 1:
        return hosts, [Link(gn0, _gn_end(gns[0], gn_ipv6))]
    sw = switch_ns(adapter)
    switch = Namespace(sw, "switch", node=adapter.name, bridge=GN_SWITCH_BRIDGE, ipv6_off=True)
    links = [Link(Iface(sw, _bridge_port_name(adapter.ns), ipv6=False), gn0, GN_SWITCH_BRIDGE)]
    links += [
        Link(Iface(sw, _bridge_port_name(g.ns), ipv6=False), _gn_end(g, gn_ipv6), GN_SWITCH_BRIDGE)
        for g in gns
    ]
    return [switch, *hosts], links


@dataclass(frozen=True)
class Attachment:
    """Where a moved host attaches: its host namespace's record (the namespace itself stays,
    daemon and all), the router namespaces to make (none when public) and the links to make
    (its eth0, and a router's wan0)."""

    host: Namespace
    routers: tuple[Namespace, ...]
    links: tuple[Link, ...]


def move_topology(node: NodeDef, nat: str, slot: int) -> Attachment:
    """`node` after `lab move` to `nat` ("none", "cone", "symmetric") on `slot`. The
    adapter's gn0 link and the GN are not part of it: they stay as they are."""
    if nat not in NAT_MODES:
        raise LabError(f"unknown NAT mode for {node.name}: {nat!r} (choose {NAT_MODES})")
    namespaces, links = node_topology(node.at_slot(slot), nat)
    host = next(ns for ns in namespaces if ns.name == node.ns)
    if node.role == "adapter":
        host = replace(host, ip_forward=True)  # as adapter_topology has it
    routers = tuple(ns for ns in namespaces if ns.name != node.ns)
    return Attachment(host, routers, tuple(links))


def _hosts(defs: dict[str, NodeDef], nat_of: dict[str, str]) -> tuple[list[Namespace], list[Link]]:
    """Every NTM end on its network: each host with its own network, its "same" guests
    behind its NAT; adapters forward."""
    namespaces: list[Namespace] = []
    links: list[Link] = []
    for host in defs.values():
        if nat_of[host.name] == SAME_NAT:
            continue  # built with the host whose NAT it shares
        guests = [g for g in defs.values() if g.same_nat_as == host.name]
        guests = [g for g in guests if nat_of[g.name] == SAME_NAT]
        nss, lks = node_topology(host, nat_of[host.name], guests)
        namespaces += nss
        links += lks
    namespaces = [replace(ns, ip_forward=True) if ns.role == "adapter" else ns for ns in namespaces]
    return namespaces, links


def build_topology(
    nat_by_node: dict[str, str],
    *,
    block_direct: bool = False,
    gns: int = 1,
    adapters: int = 1,
    gn_ipv6: bool = False,
) -> Topology:
    """The lab: `gns` general nodes on the first adapter's link, `adapters` adapters;
    `gn_ipv6`: IPv6 on the GNs (the lab's --vip6)."""
    nat_of = resolve_nat_modes(nat_by_node, adapters)
    every_gn = lab_gns(gns, adapters)
    namespaces = [
        Namespace(
            INET_NS,
            "inet",
            bridge=BRIDGE,
            block_udp_between=ntm_public_addresses(adapters) if block_direct else None,
        ),
        Namespace(DC_NS, "dc"),
        Namespace(RS_NS, "relay"),
        Namespace(WEB_NS, "web"),
    ]
    links = [inet_link(DC_NS, DC_IP), inet_link(RS_NS, RS_IP), inet_link(WEB_NS, WEB_IP)]
    nss, lks = _hosts(lab_defs(adapters), nat_of)
    namespaces += nss
    links += lks
    for adapter in ADAPTER_DEFS[:adapters]:
        mine = [g for g in every_gn if g.adapter == adapter.name]
        nss, lks = gn_topology(adapter, mine, gn_ipv6)
        namespaces += nss
        links += lks
    return Topology(tuple(namespaces), tuple(links))
