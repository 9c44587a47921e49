"""`ntma lab up|down|status`: an NTMobile test lab built from Linux network namespaces.

Topology (every namespace is named ``ntma-*``; nothing is created in the root namespace)::

    ntma-inet   bridge br0, the "Internet" 198.51.100.0/24, one veth port per attached host;
                with --block-direct, an nftables bridge table there drops UDP between any two
                NTM ends' public addresses (so hole punching fails and the relay must carry it)
    ntma-dc     eth0 198.51.100.10   DC daemon (signalling :7400, NAT-type probe :7401)
    ntma-rs     eth0 198.51.100.60   Relay Server daemon (:7500)
    ntma-web    eth0 198.51.100.20   http.server :80 + dnsmasq :53 (upstream resolver)
    ntma-mn     eth0 198.51.100.40, or 10.10.1.2 behind ntma-mn-nat (wan0 .41, lan0 10.10.1.1)
    ntma-cn     eth0 198.51.100.30, or 10.10.2.2 behind ntma-cn-nat (wan0 .31, lan0 10.10.2.1),
                or (--cn-nat same) 10.10.1.3 behind mn's NAT: ntma-mn-nat's lan0 is then a
                bridge with one port for mn and one for cn
    ntma-adapter  the NTMobile adapter (NTMA) for the general node, registered as gn.ntm.example:
                gn0 (veth peer of ntma-gn eth0, no IPv4 address) and eth0 10.10.3.2 behind
                ntma-adapter-nat (wan0 .51, lan0 10.10.3.1), or eth0 198.51.100.50 directly
    ntma-gn     the general node (GN): eth0 up, no address, no routes, no ntma code; dhclient
                there writes /etc/netns/ntma-gn/resolv.conf, never the machine's resolv.conf

As in the source paper: GN -- NTMA -- NAT -- Internet (DC, RS, web, cn). NAT routers are
`cone` (nftables masquerade: endpoint-independent mapping) or `symmetric` (masquerade
fully-random: a new port per destination); either drops unsolicited UDP arriving on its WAN
side, as home routers do (see `nat_ruleset`).

The topology is described by data (`NodeDef`, `Namespace`, `Link`, built by `build_topology`)
and applied by one small function per concern, so further hosts and NAT types only
need new table rows.

`status` also reads the daemons' logs: the DC's route decisions (`route_decided`) and its
view of each end's NAT (`node_nat`), and the ends' fallbacks to the relay (`route_fallback`).

Everything the lab starts and where it lives is recorded in ``<run-dir>/state.json``; ``down``
does not trust it alone: it also kills every process inside any ``ntma-*`` namespace and
deletes every ``ntma-*`` namespace, so it cleans up after a crash in the middle of ``up``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- constants

NS_PREFIX = "ntma-"
INET_NS = "ntma-inet"
BRIDGE = "br0"
INET_PREFIXLEN = 24
DC_IP = "198.51.100.10"
WEB_IP = "198.51.100.20"
RS_IP = "198.51.100.60"
RS_NS = "ntma-rs"
DC_PORT = 7400
DC_PROBE_PORT = 7401  # a second DC port: nodes compare mappings to learn their NAT type
RS_PORT = 7500
RS_IDLE_TIMEOUT = 60
NODE_PORT = 7401
ZONE = "ntm.example"
VIP_POOL = "10.99.0.0/16"
DEFAULT_RUN_DIR = Path("/run/ntma-lab")
ETC_NETNS = Path("/etc/netns")
STATE_FILE = "state.json"
STATE_VERSION = 1
REQUIRED_TOOLS = ("ip", "nft", "dnsmasq", "ethtool")

#: NAT type -> nftables statement used on the NAT router's WAN interface.
NAT_RULES: dict[str, str] = {
    "cone": "masquerade",
    "symmetric": "masquerade fully-random",
}
NAT_MODES = ("none", *NAT_RULES)
#: A node whose NAT mode is "same" sits behind another node's NAT (NodeDef.same_nat_as).
SAME_NAT = "same"
CN_NAT_MODES = (*NAT_MODES, SAME_NAT)
#: nftables table (bridge family, in ntma-inet) made by --block-direct.
BLOCK_DIRECT_TABLE = "ntma_block_direct"

GN_NS = "ntma-gn"
GN_IFACE = "eth0"  # the general node's only interface
ADAPTER_GN_IFACE = "gn0"  # the adapter's side of the GN link
PASSTHROUGH_TUN = "ntmpt0"
ADAPTER_LEASE_TIME = 600
#: /etc/netns/ntma-gn/resolv.conf before anything runs in ntma-gn (`ip netns exec` bind-mounts
#: it over /etc/resolv.conf, so dhclient-script writes this file, not the machine's).
GN_RESOLV_CONF = "# written by dhclient in the ntma lab\n"

STOP_TIMEOUT_S = 5.0
LISTEN_TIMEOUT_S = 10.0
POLL_S = 0.05


class LabError(RuntimeError):
    """Building or tearing down the lab failed (message is one line)."""


class LabNotReady(LabError):
    """A daemon did not report readiness in time; the lab is left up for inspection."""


# --------------------------------------------------------------------------- topology model


@dataclass(frozen=True)
class NodeDef:
    """An NTM host (node or adapter) and where it attaches (directly or behind its own NAT)."""

    name: str  # "mn"
    direct_ip: str  # eth0 address on the Internet segment when nat == "none"
    wan_ip: str  # the NAT router's wan0 address
    lan_net: str  # first three octets of the private /24: router .1, node .2
    default_nat: str
    port: int = NODE_PORT
    role: str = "node"  # node | adapter
    label: str | None = None  # DNS label registered with the DC, when not `name`
    same_nat_as: str | None = None  # nat "same": behind this node's NAT router...
    same_nat_host: int = 3  # ...at <its lan_net>.<same_nat_host>

    @property
    def ns(self) -> str:
        return NS_PREFIX + self.name

    @property
    def nat_ns(self) -> str:
        return f"{NS_PREFIX}{self.name}-nat"

    @property
    def fqdn(self) -> str:
        return f"{self.label or self.name}.{ZONE}"


NODE_DEFS: tuple[NodeDef, ...] = (
    NodeDef("mn", "198.51.100.40", "198.51.100.41", "10.10.1", default_nat="cone"),
    NodeDef(
        "cn", "198.51.100.30", "198.51.100.31", "10.10.2", default_nat="none", same_nat_as="mn"
    ),
)
#: The adapter registers the general node behind it as gn.ntm.example.
ADAPTER_DEF = NodeDef(
    "adapter", "198.51.100.50", "198.51.100.51", "10.10.3", "cone", role="adapter", label="gn"
)


@dataclass(frozen=True)
class Iface:
    ns: str
    name: str
    cidr: str | None = None  # "198.51.100.10/24"
    ipv6: bool = True  # False: net.ipv6.conf.<name>.disable_ipv6=1 before the link goes up


@dataclass(frozen=True)
class Link:
    """A veth pair; `a` is enslaved to `bridge` (in a.ns) when given."""

    a: Iface
    b: Iface
    bridge: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    role: str  # inet | dc | web | node | nat | adapter | general-node
    node: str | None = None  # the node (or adapter) this namespace belongs to
    fqdn: str | None = None
    nat: str | None = None  # nodes: how they attach; NAT routers: their type
    default_via: str | None = None
    masquerade_oif: str | None = None  # NAT routers: the WAN interface
    bridge: str | None = None  # the inet segment, a shared NAT LAN: its bridge
    bridge_cidr: str | None = None  # an address on that bridge (a shared NAT LAN's router)
    ip_forward: bool = False  # net.ipv4.ip_forward=1 (NAT routers, the adapter)
    block_udp_between: tuple[str, ...] | None = None  # inet: --block-direct's address set

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


NAT_LAN = "lan0"  # a NAT router's LAN side: a veth, or a bridge when nodes share the NAT


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


def ntm_public_addresses() -> tuple[str, ...]:
    """Every address an NTM end (node or adapter) can have on the Internet segment: its own
    when it is public, its NAT router's wan0 otherwise."""
    return tuple(sorted({ip for d in (*NODE_DEFS, ADAPTER_DEF) for ip in (d.direct_ip, d.wan_ip)}))


def resolve_nat_modes(nat_by_node: dict[str, str]) -> dict[str, str]:
    """name -> NAT mode for every node and the adapter (defaults filled in), validated."""
    defs = {d.name: d for d in (*NODE_DEFS, ADAPTER_DEF)}
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


def adapter_topology(adapter: NodeDef, nat: str) -> tuple[list[Namespace], list[Link]]:
    """The adapter attaches like a node and forwards; the GN hangs off its gn0, unaddressed."""
    namespaces, links = node_topology(adapter, nat)
    namespaces = [
        replace(ns, ip_forward=True) if ns.name == adapter.ns else ns for ns in namespaces
    ]
    gn = Namespace(GN_NS, "general-node", node=adapter.name, fqdn=adapter.fqdn)
    gn_link = Link(
        Iface(adapter.ns, ADAPTER_GN_IFACE, ipv6=False), Iface(GN_NS, GN_IFACE, ipv6=False)
    )
    return [*namespaces, gn], [*links, gn_link]


def build_topology(nat_by_node: dict[str, str], *, block_direct: bool = False) -> Topology:
    nat_of = resolve_nat_modes(nat_by_node)
    namespaces = [
        Namespace(
            INET_NS,
            "inet",
            bridge=BRIDGE,
            block_udp_between=ntm_public_addresses() if block_direct else None,
        ),
        Namespace("ntma-dc", "dc"),
        Namespace(RS_NS, "relay"),
        Namespace("ntma-web", "web"),
    ]
    links = [inet_link("ntma-dc", DC_IP), inet_link(RS_NS, RS_IP), inet_link("ntma-web", WEB_IP)]
    for node in NODE_DEFS:
        if nat_of[node.name] == SAME_NAT:
            continue  # built with the node whose NAT it shares
        guests = [g for g in NODE_DEFS if g.same_nat_as == node.name and nat_of[g.name] == SAME_NAT]
        nss, lks = node_topology(node, nat_of[node.name], guests)
        namespaces += nss
        links += lks
    nss, lks = adapter_topology(ADAPTER_DEF, nat_of[ADAPTER_DEF.name])
    return Topology(tuple(namespaces + nss), tuple(links + lks))


# --------------------------------------------------------------------------- command helpers


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run(
    *cmd: str, check: bool = True, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise LabError (one line) on failure."""
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(cmd)}: {_one_line(str(exc))}") from exc
    if check and proc.returncode != 0:
        detail = _one_line(proc.stderr or proc.stdout) or f"exit status {proc.returncode}"
        raise LabError(f"{' '.join(cmd)}: {detail}")
    return proc


def ns_run(
    ns: str, *cmd: str, check: bool = True, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace `ns` and wait for it (text output captured)."""
    return run("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout, input=input)


def ns_exec(ns: str, *cmd: str, **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start a command inside namespace `ns` (`ip netns exec` execs, so pid == command pid)."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **popen_kwargs)


def ip(ns: str, *args: str) -> None:
    run("ip", "-n", ns, *args)


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = run("ip", "-j", *args).stdout.strip()
    return json.loads(out) if out else []


def live_namespaces() -> list[str]:
    """All existing namespaces whose name starts with ntma-."""
    names = [entry["name"] for entry in _ip_json("netns", "list")]
    return sorted(n for n in names if n.startswith(NS_PREFIX))


def root_link_names() -> list[str]:
    return sorted(entry["ifname"] for entry in _ip_json("link"))


def ns_addresses(ns: str) -> list[dict[str, Any]]:
    """Interfaces of `ns`, read live: [{ifname, state, addresses: ["a.b.c.d/nn", ...]}]."""
    out = []
    for entry in _ip_json("-n", ns, "addr"):
        addrs = [f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])]
        out.append({"ifname": entry["ifname"], "state": entry.get("operstate"), "addresses": addrs})
    return out


# --------------------------------------------------------------------------- network build


def create_namespace(ns: Namespace) -> None:
    run("ip", "netns", "add", ns.name)
    ip(ns.name, "link", "set", "lo", "up")
    if ns.bridge:
        ip(ns.name, "link", "add", ns.bridge, "type", "bridge")
        if ns.bridge_cidr:
            ip(ns.name, "addr", "add", ns.bridge_cidr, "dev", ns.bridge)
        ip(ns.name, "link", "set", ns.bridge, "up")


def disable_ipv6(end: Iface) -> None:
    """No IPv6 (link-local, DAD, router solicitations) on `end`: keeps captures quiet."""
    if Path("/proc/sys/net/ipv6").exists():  # else the kernel has no IPv6 at all
        ns_run(end.ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{end.name}.disable_ipv6=1")


def create_link(link: Link) -> None:
    """Both veth ends are born inside namespaces (never in the root namespace)."""
    a, b = link.a, link.b
    ip(a.ns, "link", "add", a.name, "type", "veth", "peer", "name", b.name, "netns", b.ns)
    if link.bridge:
        ip(a.ns, "link", "set", a.name, "master", link.bridge)
    for end in (a, b):
        if not end.ipv6:
            disable_ipv6(end)
        if end.cidr:
            ip(end.ns, "addr", "add", end.cidr, "dev", end.name)
        ip(end.ns, "link", "set", end.name, "up")


def nat_ruleset(oif: str, nat: str) -> str:
    """The NAT (masquerade on the WAN interface `oif`) and, as on any home router, a
    firewall dropping unsolicited UDP arriving there.

    The firewall matters for hole punching: without it, the first punching packet to reach
    a router finds no mapping and leaves a conntrack entry for itself (unreplied, refreshed
    by every retry); that router's own outgoing packet toward the peer then clashes with it,
    so masquerade gives it another source port and the peer's NAT never lets it in. Dropped
    before conntrack confirms it, an unsolicited packet leaves no entry behind. Replies to
    the router's own mappings (DC, RS, peers punched to) are not new and pass.
    """
    return (
        "table ip nat {\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "{oif}" {NAT_RULES[nat]}\n'
        "  }\n"
        "}\n"
        "table ip filter {\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f'    iifname "{oif}" ct state new meta l4proto udp counter drop\n'
        "  }\n"
        "}\n"
    )


def block_direct_ruleset(addresses: Sequence[str]) -> str:
    """Bridge-family filter for the Internet segment's namespace (its only bridge is br0):
    forwarded UDP frames from one of `addresses` to another are dropped (and counted);
    everything else (to or from the DC, RS, web; TCP, ICMP) passes."""
    return (
        f"table bridge {BLOCK_DIRECT_TABLE} {{\n"
        "  set ntm_ends {\n"
        "    type ipv4_addr\n"
        f"    elements = {{ {', '.join(addresses)} }}\n"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        "    ether type ip ip protocol udp ip saddr @ntm_ends ip daddr @ntm_ends counter drop\n"
        "  }\n"
        "}\n"
    )


def configure_block_direct(ns: Namespace) -> None:
    if not (ns.bridge and ns.block_udp_between):
        raise LabError(f"{ns.name}: --block-direct needs a bridge and the NTM ends' addresses")
    ns_run(ns.name, "nft", "-f", "-", input=block_direct_ruleset(ns.block_udp_between))


def configure_forwarding(ns: Namespace) -> None:
    if ns.ip_forward:
        ns_run(ns.name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")


def configure_nat(ns: Namespace) -> None:
    if not (ns.masquerade_oif and ns.nat in NAT_RULES and ns.ip_forward):
        raise LabError(f"{ns.name}: NAT router needs a WAN interface, a NAT type, forwarding")
    ns_run(ns.name, "nft", "-f", "-", input=nat_ruleset(ns.masquerade_oif, ns.nat))


def configure_routes(ns: Namespace) -> None:
    if ns.default_via:
        ip(ns.name, "route", "add", "default", "via", ns.default_via)


def build_network(topo: Topology) -> None:
    for ns in topo.namespaces:
        create_namespace(ns)
    for link in topo.links:
        create_link(link)
    for ns in topo.namespaces:
        configure_routes(ns)
        configure_forwarding(ns)
        if ns.role == "nat":
            configure_nat(ns)
        if ns.role == "general-node":
            make_wire_like(ns.name, GN_IFACE)
        if ns.block_udp_between:
            configure_block_direct(ns)


def make_wire_like(ns: str, ifname: str) -> None:
    """A veth hands its peer frames with checksums left to "hardware" and TCP segments of
    up to 64 KB; a real NIC puts complete, MTU-sized frames on the wire. The adapter's raw
    socket must see what a wire carries, so the GN's veth computes checksums and segments
    in software (the GN's own software is untouched)."""
    run(
        "ip",
        "netns",
        "exec",
        ns,
        "ethtool",
        "-K",
        ifname,
        "tx",
        "off",
        "tso",
        "off",
        "gso",
        "off",
        "sg",
        "off",
    )


def write_resolv_confs(state: dict[str, Any]) -> None:
    """/etc/netns/<ns>/resolv.conf, written before anything runs in the lab's namespaces.

    Nodes: the node's own DNS responder on 127.0.0.1. The GN: a comment only, for dhclient
    there to overwrite (so it never touches the machine's /etc/resolv.conf).
    """
    if not ETC_NETNS.exists():
        ETC_NETNS.mkdir(parents=True)
        state["etc_netns_created"] = True
    contents = {node["ns"]: "nameserver 127.0.0.1\n" for node in state["nodes"].values()}
    contents[state["gn"]["ns"]] = GN_RESOLV_CONF
    for ns, text in contents.items():
        d = ETC_NETNS / ns
        d.mkdir(exist_ok=True)
        (d / "resolv.conf").write_text(text)
        state["etc_netns"].append(str(d))


# --------------------------------------------------------------------------- keys and configs


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def generate_key(path: Path) -> str:
    """Write a fresh X25519 private key (base64 of 32 raw bytes, mode 0600); return pub b64."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = X25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    write_private(path, base64.b64encode(raw).decode() + "\n")
    return base64.b64encode(pub).decode()


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON strings are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_table(header: str, table: dict[str, Any]) -> str:
    lines = [header] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def to_toml(sections: dict[str, dict[str, Any] | list[dict[str, Any]]]) -> str:
    """Tables in order; a list of tables becomes an array of tables ([[name]] blocks)."""
    blocks = []
    for name, table in sections.items():
        if isinstance(table, list):
            blocks += [_toml_table(f"[[{_toml_key(name)}]]", t) for t in table]
        else:
            blocks.append(_toml_table(f"[{_toml_key(name)}]", table))
    return "\n".join(blocks)


LOG_SECTION = {"level": "info", "stats_interval": 2}


def dc_config(state: dict[str, Any]) -> dict[str, Any]:
    keys, run_dir, relay = state["keys"], Path(state["run_dir"]), state["relay"]
    return {
        "dc": {
            "listen": f"{DC_IP}:{DC_PORT}",
            "probe_listen": f"{DC_IP}:{DC_PROBE_PORT}",
            "private_key_file": keys["dc"]["private_key_file"],
            "database": run_dir / "dc.sqlite",
            "zone": ZONE,
            "vip_pool": VIP_POOL,
            "dns_listen": f"{DC_IP}:53",
            "keepalive_interval": 5,
            "keepalive_misses": 3,
        },
        "admission": {
            **{n["fqdn"]: keys[name]["public_key"] for name, n in state["nodes"].items()},
            state["adapter"]["fqdn"]: keys["adapter"]["public_key"],
        },
        "relays": [
            {
                "address": f"{relay['address']}:{relay['port']}",
                "public_key": keys[relay["key"]]["public_key"],
            }
        ],
        "log": dict(LOG_SECTION),
    }


def relay_config(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    keys, relay = state["keys"], state["relay"]
    return {
        "relay": {
            "listen": f"{relay['address']}:{relay['port']}",
            "private_key_file": keys[relay["key"]]["private_key_file"],
            "idle_timeout": RS_IDLE_TIMEOUT,
        },
        "dc": {"public_key": keys["dc"]["public_key"]},
        "log": dict(LOG_SECTION),
    }


def node_config(state: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    node, keys = state["nodes"][name], state["keys"]
    return {
        "node": {
            "fqdn": node["fqdn"],
            "private_key_file": keys[name]["private_key_file"],
            "listen": f"0.0.0.0:{node['port']}",
            "tun_name": "ntm0",
            "mtu": 1400,
        },
        "dc": {"address": f"{DC_IP}:{DC_PORT}", "public_key": keys["dc"]["public_key"]},
        "dns": {
            "listen": "127.0.0.1:53",
            "upstream": f"{WEB_IP}:53",
            "ntm_suffixes": [ZONE],
        },
        "log": dict(LOG_SECTION),
    }


def adapter_config(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    adapter, keys = state["adapter"], state["keys"]
    return {
        "adapter": {
            "fqdn": adapter["fqdn"],
            "private_key_file": keys["adapter"]["private_key_file"],
            "gn_interface": adapter["gn_interface"],
            "listen": f"0.0.0.0:{adapter['port']}",
            "passthrough_tun": PASSTHROUGH_TUN,
            "mtu": 1400,
            "lease_time": ADAPTER_LEASE_TIME,
        },
        "dc": {"address": f"{DC_IP}:{DC_PORT}", "public_key": keys["dc"]["public_key"]},
        "dns": {"upstream": f"{WEB_IP}:53", "ntm_suffixes": [ZONE]},
        "log": dict(LOG_SECTION),
    }


def write_keys_and_configs(state: dict[str, Any]) -> None:
    run_dir = Path(state["run_dir"])
    for name in ("dc", state["relay"]["key"], *state["nodes"], "adapter"):
        path = run_dir / "keys" / f"{name}.key"
        state["keys"][name] = {"private_key_file": str(path), "public_key": generate_key(path)}
    configs = {"dc": dc_config(state), "relay": relay_config(state)}
    configs.update({name: node_config(state, name) for name in state["nodes"]})
    configs["adapter"] = adapter_config(state)
    for name, sections in configs.items():
        path = run_dir / "configs" / f"{name}.toml"
        path.write_text(to_toml(sections))
        state["configs"][name] = str(path)


# --------------------------------------------------------------------------- state


def state_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATE_FILE


def load_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(run_dir).read_text())
    except (OSError, ValueError):
        return None


def save_state(state: dict[str, Any]) -> None:
    path = state_path(Path(state["run_dir"]))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def _daemon_spec(ns: str, cmd: list[str], log: Path, output: Path | None = None) -> dict[str, Any]:
    """`log`: the daemon's log; `output`: where its stdout/stderr go (default: `log`)."""
    return {
        "ns": ns,
        "cmd": cmd,
        "log": str(log),
        "output": str(output or log),
        "pid": None,
        "starttime": None,
        "log_offset": 0,  # where the log was when the daemon last started
        "log_start": None,  # ...and when it first started in this lab (status reads from here)
    }


def dnsmasq_cmd(logs: Path) -> list[str]:
    return [
        shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--listen-address={WEB_IP}",
        "--bind-interfaces",
        f"--host-record=web.example,{WEB_IP}",
        "--pid-file=",
        f"--log-facility={logs / 'dnsmasq.log'}",
        "--log-queries",
        "--user=root",
        "--group=root",
    ]


def daemon_specs(run_dir: Path, nodes: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    logs, configs, py = run_dir / "logs", run_dir / "configs", sys.executable
    specs = {
        "web": _daemon_spec(
            "ntma-web",
            [py, "-m", "http.server", "80", "--bind", WEB_IP, "--directory", str(run_dir / "www")],
            logs / "web.log",
        ),
        "dnsmasq": _daemon_spec(
            "ntma-web", dnsmasq_cmd(logs), logs / "dnsmasq.log", logs / "dnsmasq.stderr"
        ),
        "dc": _daemon_spec(
            "ntma-dc",
            [py, "-m", "ntma", "dc", "--config", str(configs / "dc.toml")],
            logs / "dc.log",
        ),
        "relay": _daemon_spec(
            RS_NS,
            [py, "-m", "ntma", "relay", "--config", str(configs / "relay.toml")],
            logs / "relay.log",
        ),
    }
    for node in nodes:
        name = node["name"]
        specs[name] = _daemon_spec(
            node["ns"],
            [py, "-m", "ntma", "node", "--config", str(configs / f"{name}.toml")],
            logs / f"{name}.log",
        )
    specs["adapter"] = _daemon_spec(
        ADAPTER_DEF.ns,
        [py, "-m", "ntma", "adapter", "--config", str(configs / "adapter.toml")],
        logs / "adapter.log",
    )
    return specs


def node_state(node: NodeDef, nat: str) -> dict[str, Any]:
    behind_nat = nat != "none"
    router, host = node, 2
    if nat == SAME_NAT:
        router = next(d for d in NODE_DEFS if d.name == node.same_nat_as)
        host = node.same_nat_host
    return {
        "name": node.name,
        "ns": node.ns,
        "fqdn": node.fqdn,
        "nat": nat,
        "nat_ns": router.nat_ns if behind_nat else None,
        "address": f"{router.lan_net}.{host}" if behind_nat else node.direct_ip,
        "public_address": router.wan_ip if behind_nat else node.direct_ip,
        "port": node.port,
    }


def adapter_state(adapter: NodeDef, nat: str, autostart: bool) -> dict[str, Any]:
    return {
        **node_state(adapter, nat),
        "gn_interface": ADAPTER_GN_IFACE,
        "gn_ns": GN_NS,
        "autostart": autostart,  # False: `lab up --no-adapter` / `--no-daemons`
    }


def gn_state() -> dict[str, Any]:
    return {
        "ns": GN_NS,
        "interface": GN_IFACE,
        "adapter_ns": ADAPTER_DEF.ns,
        "adapter_interface": ADAPTER_GN_IFACE,
        "resolv_conf": str(ETC_NETNS / GN_NS / "resolv.conf"),
    }


def new_state(
    run_dir: Path, topo: Topology, nat_by_node: dict[str, str], *, adapter_autostart: bool = True
) -> dict[str, Any]:
    nat_of = resolve_nat_modes(nat_by_node)
    nodes = {n.name: node_state(n, nat_of[n.name]) for n in NODE_DEFS}
    inet = next(ns for ns in topo.namespaces if ns.name == INET_NS)
    blocked = list(inet.block_udp_between or ())
    return {
        "version": STATE_VERSION,
        "run_dir": str(run_dir),
        "created": time.time(),
        "nat": nat_of,
        "block_direct": {"enabled": bool(blocked), "ns": INET_NS, "addresses": blocked},
        "namespaces": {ns.name: ns.describe() for ns in topo.namespaces},
        "planned_addresses": topo.addresses(),
        "nodes": nodes,
        "dc": {
            "ns": "ntma-dc",
            "address": DC_IP,
            "port": DC_PORT,
            "probe_port": DC_PROBE_PORT,
            "zone": ZONE,
        },
        "relay": {"ns": RS_NS, "address": RS_IP, "port": RS_PORT, "key": "rs"},
        "web": {"ns": "ntma-web", "address": WEB_IP},
        "adapter": adapter_state(ADAPTER_DEF, nat_of[ADAPTER_DEF.name], adapter_autostart),
        "gn": gn_state(),
        "keys": {},
        "configs": {},
        "daemons": daemon_specs(run_dir, nodes.values()),
        "etc_netns": [],
        "etc_netns_created": False,
    }


# --------------------------------------------------------------------------- processes

#: Popen objects of processes this Python process started (so they get reaped).
_CHILDREN: dict[int, subprocess.Popen[Any]] = {}
#: Exit status of those children once reaped (pid -> returncode), for error messages.
_EXIT_STATUS: dict[int, int] = {}


def proc_starttime(pid: int) -> int | None:
    """Kernel start time of `pid` (to detect pid reuse); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _child_exited(pid: int) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is None or proc.poll() is None:
        return False
    _EXIT_STATUS[pid] = proc.returncode
    del _CHILDREN[pid]
    return True


def pid_alive(pid: int | None, starttime: int | None = None) -> bool:
    if not pid or _child_exited(pid):
        return False
    current = proc_starttime(pid)
    return current is not None and (starttime is None or current == starttime)


def daemon_alive(state: dict[str, Any], name: str) -> bool:
    d = state["daemons"][name]
    return pid_alive(d["pid"], d["starttime"])


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)  # daemons are session leaders: pgid == pid
        else:
            os.kill(pid, sig)


def terminate(
    procs: Sequence[tuple[int, int | None]], *, group: bool, timeout: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM every (pid, starttime) still alive, wait up to `timeout`, then SIGKILL."""
    alive = [(p, st) for p, st in procs if pid_alive(p, st)]
    for pid, _ in alive:
        _signal(pid, signal.SIGTERM, group)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [(p, st) for p, st in alive if pid_alive(p, st)]
    for pid, _ in alive:
        _signal(pid, signal.SIGKILL, group)
    deadline = time.monotonic() + 2.0
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [(p, st) for p, st in alive if pid_alive(p, st)]


def _daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent)  # so `-m ntma` works uninstalled
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_daemon(state: dict[str, Any], name: str) -> int:
    """Start daemon `name` from state["daemons"] in its namespace; record and return its pid."""
    d = state["daemons"][name]
    if pid_alive(d["pid"], d["starttime"]):
        raise LabError(f"{name} is already running (pid {d['pid']})")
    output = Path(d["output"])
    output.parent.mkdir(parents=True, exist_ok=True)
    offset = log_size(state, name)
    with open(output, "ab") as out:
        proc = ns_exec(
            d["ns"],
            *d["cmd"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=state["run_dir"],
            env=_daemon_env(),
        )
    _CHILDREN[proc.pid] = proc
    _EXIT_STATUS.pop(proc.pid, None)
    d.update(pid=proc.pid, starttime=proc_starttime(proc.pid), log_offset=offset)
    if d.get("log_start") is None:
        d["log_start"] = offset
    save_state(state)
    return proc.pid


def stop_daemon(state: dict[str, Any], name: str, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM daemon `name` (its process group), wait up to `timeout` s, then SIGKILL."""
    d = state["daemons"][name]
    if d["pid"]:
        terminate([(d["pid"], d["starttime"])], group=True, timeout=timeout)
    d.update(pid=None, starttime=None)
    save_state(state)


def log_size(state: dict[str, Any], name: str) -> int:
    """Current size of a daemon's log; pass as `since` to wait_log_event for later events."""
    try:
        return Path(state["daemons"][name]["log"]).stat().st_size
    except OSError:
        return 0


def _log_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """JSON objects in complete lines of `path` after `offset`; returns the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                events.append(obj)
    return events, offset + end


def _last_output_line(path: Path, offset: int, limit: int = 200) -> str:
    """The last non-blank line written to `path` after `offset`, on one line, shortened."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, offset))
            data = f.read()[-8192:]
    except OSError:
        return ""
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    last = _one_line(lines[-1]) if lines else ""
    return last if len(last) <= limit else last[: limit - 3] + "..."


def exit_report(state: dict[str, Any], name: str, wanted: str) -> str:
    """One line: daemon `name` exited (with its status, if known) and its last output line."""
    d = state["daemons"][name]
    status = _EXIT_STATUS.get(d["pid"]) if d["pid"] else None
    how = "exited" if status is None else f"exited with status {status}"
    last = _last_output_line(Path(d["output"]), d["log_offset"] if d["output"] == d["log"] else 0)
    said = f": {last}" if last else " (no output)"
    return f"{name} {how} before logging {wanted!r}{said}; read {d['output']}"


def wait_log_events(
    state: dict[str, Any],
    wanted: dict[str, str],
    *,
    timeout: float = 20.0,
    since: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Wait until each daemon `name` logs a JSON line with "event" == wanted[name].

    Lines are read from `since[name]` (default: where the log was when the daemon started).
    Returns name -> the matching log object. Raises LabNotReady on timeout or daemon exit.
    """
    daemons = state["daemons"]
    offsets = {n: (since or {}).get(n, daemons[n]["log_offset"]) for n in wanted}
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for name in [n for n in wanted if n not in found]:
            events, offsets[name] = _log_events(Path(daemons[name]["log"]), offsets[name])
            match = next((e for e in events if e.get("event") == wanted[name]), None)
            if match is not None:
                found[name] = match
            elif not daemon_alive(state, name):
                raise LabNotReady(exit_report(state, name, wanted[name]))
        if len(found) == len(wanted):
            return found
        if time.monotonic() >= deadline:
            name = next(n for n in wanted if n not in found)
            raise LabNotReady(
                f"{name} did not log {wanted[name]!r} within {timeout:g}s; "
                f"read {daemons[name]['log']}"
            )
        time.sleep(POLL_S * 2)


def _listening(pid: int, proto: str, port: int) -> bool:
    """Is there a socket bound to `port` in pid's namespace (/proc/PID/net is per-netns)?"""
    try:
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and (proto != "tcp" or fields[3] == "0A"):
            return True
    return False


def wait_listening(
    state: dict[str, Any], name: str, proto: str, port: int, timeout: float = LISTEN_TIMEOUT_S
) -> None:
    d = state["daemons"][name]
    deadline = time.monotonic() + timeout
    while not _listening(d["pid"], proto, port):
        if not daemon_alive(state, name):
            raise LabError(f"{name} exited during start; read {d['log']}")
        if time.monotonic() >= deadline:
            raise LabError(
                f"{name} not listening on {proto}/{port} after {timeout:g}s; read {d['log']}"
            )
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- up / down / status


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LabError("must run as root (network namespaces)")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)}")


def prepare_run_dir(run_dir: Path) -> None:
    for sub in ("keys", "configs", "logs", "www"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir / "keys", 0o700)
    (run_dir / "www" / "index.html").write_text(
        "<!doctype html>\n<title>web.example</title>\n<p>ordinary web host</p>\n"
    )
    for stale in run_dir.glob("dc.sqlite*"):  # a fresh lab starts with an empty DC database
        stale.unlink()


def start_web(state: dict[str, Any]) -> None:
    start_daemon(state, "web")
    start_daemon(state, "dnsmasq")
    wait_listening(state, "web", "tcp", 80)
    wait_listening(state, "dnsmasq", "udp", 53)


def start_ntm_daemons(state: dict[str, Any], wait_s: float, *, adapter: bool = True) -> None:
    """DC first; then the Relay Server, the nodes and (unless `adapter` is False) the
    adapter, the last two registering.

    The relay and the nodes are waited for before the adapter, so an adapter that exits at
    once (one line: its exit status and last output) leaves the others up and registered.
    """
    deadline = time.monotonic() + wait_s
    start_daemon(state, "dc")
    wait_log_events(state, {"dc": "dc_ready"}, timeout=wait_s)
    start_daemon(state, "relay")
    registering = [*state["nodes"], *(["adapter"] if adapter else [])]
    for name in registering:
        start_daemon(state, name)
    first = {"relay": "relay_ready", **dict.fromkeys(state["nodes"], "registered")}
    for group in (first, dict.fromkeys(registering[len(state["nodes"]) :], "registered")):
        if group:
            remaining = max(0.0, deadline - time.monotonic())
            wait_log_events(state, group, timeout=remaining)


def lab_present(run_dir: Path) -> bool:
    return state_path(run_dir).exists() or bool(live_namespaces())


def lab_up(
    run_dir: Path = DEFAULT_RUN_DIR,
    *,
    mn_nat: str = "cone",
    cn_nat: str = "none",
    adapter_nat: str = "cone",
    block_direct: bool = False,
    daemons: bool = True,
    adapter: bool = True,
    wait_s: float = 20.0,
) -> dict[str, Any]:
    """Build the lab (bringing an existing one down first) and return its state.

    NAT modes: "none", "cone", "symmetric"; `cn_nat` also "same" (cn behind mn's NAT, which
    must then exist). `block_direct`: UDP between the NTM ends' public addresses is dropped
    on the Internet segment (the DC, RS and web host stay reachable).
    The topology (gn and adapter included) is always built; `daemons=False` starts no
    DC/RS/node/adapter daemons, `adapter=False` skips only the adapter daemon.
    On any failure while building, everything made is torn down and the error re-raised.
    If the DC/RS/node/adapter daemons do not report readiness within `wait_s` (or exit),
    LabNotReady is raised and the lab is left up for inspection.
    """
    nat_by_node = resolve_nat_modes({"mn": mn_nat, "cn": cn_nat, "adapter": adapter_nat})
    check_prerequisites()
    run_dir = Path(run_dir).absolute()
    if lab_present(run_dir):
        lab_down(run_dir)
    topo = build_topology(nat_by_node, block_direct=block_direct)
    state = new_state(run_dir, topo, nat_by_node, adapter_autostart=daemons and adapter)
    try:
        prepare_run_dir(run_dir)
        save_state(state)  # first, so `down` can clean up after a crash from here on
        write_resolv_confs(state)  # before anything runs in a namespace (sysctl in ntma-gn)
        build_network(topo)
        write_keys_and_configs(state)
        save_state(state)
        start_web(state)
    except BaseException:
        with contextlib.suppress(Exception):
            lab_down(run_dir)
        raise
    if daemons:
        try:
            start_ntm_daemons(state, wait_s, adapter=adapter)
        except LabNotReady:
            raise  # leave the lab up so the logs and namespaces can be inspected
        except BaseException:
            with contextlib.suppress(Exception):
                lab_down(run_dir)
            raise
    return state


def _ns_pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_namespace_processes(namespaces: Sequence[str]) -> None:
    """Everything still running inside the lab namespaces (test helpers, leftovers...)."""
    pids = [p for ns in namespaces for p in _ns_pids(ns) if p != os.getpid()]
    terminate([(p, proc_starttime(p)) for p in pids], group=False)


def remove_etc_netns(state: dict[str, Any] | None) -> list[str]:
    """Remove /etc/netns/ntma-* (node and GN resolv.conf); return those that would not go."""
    dirs = set(ETC_NETNS.glob(NS_PREFIX + "*"))
    dirs |= {Path(d) for d in (state or {}).get("etc_netns", [])}
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if state and state.get("etc_netns_created"):
        with contextlib.suppress(OSError):
            ETC_NETNS.rmdir()  # only if we created it and it is empty
    return sorted(str(d) for d in dirs if d.exists())


def lab_down(run_dir: Path = DEFAULT_RUN_DIR) -> None:
    """Stop all lab processes and delete every ntma-* namespace. Idempotent."""
    state = load_state(run_dir)
    if state:
        running = [(d["pid"], d["starttime"]) for d in state["daemons"].values() if d["pid"]]
        terminate(running, group=True)
    namespaces = live_namespaces()
    kill_namespace_processes(namespaces)
    errors = []
    for ns in namespaces:
        proc = run("ip", "netns", "del", ns, check=False)
        if proc.returncode != 0:
            errors.append(f"{ns}: {_one_line(proc.stderr)}")
    errors += [f"{d}: could not remove" for d in remove_etc_netns(state)]
    state_path(run_dir).unlink(missing_ok=True)
    if errors:
        raise LabError("lab down incomplete: " + "; ".join(errors))


def _daemon_status(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "ns": d["ns"],
        "pid": d["pid"],
        "alive": pid_alive(d["pid"], d["starttime"]),
        "log": d["log"],
        "cmd": d["cmd"],
    }


def _hosted_daemon(state: dict[str, Any] | None, ns: str) -> dict[str, str]:
    """Config and log of the DC/node/adapter daemon running in `ns` (if any)."""
    for name, d in (state or {}).get("daemons", {}).items():
        config = state["configs"].get(name) if state else None
        if d["ns"] == ns and config:
            return {"daemon": name, "config": config, "log": d["log"]}
    return {}


ROUTE_FIELDS = ("tunnel_id", "requester", "target", "route", "why", "initiator", "relay")
FALLBACK_FIELDS = ("tunnel", "peer", "from", "to")


def _daemon_log_events(state: dict[str, Any], name: str, event: str) -> list[dict[str, Any]]:
    """Daemon `name`'s log events named `event`, since the daemon first started in this lab."""
    d = state["daemons"].get(name)
    if not d:
        return []
    events, _ = _log_events(Path(d["log"]), d.get("log_start") or 0)
    return [e for e in events if e.get("event") == event]


def lab_events(state: dict[str, Any]) -> dict[str, Any]:
    """What the logs say about routes, from the lab's start.

    routes: the DC's `route_decided` events (ROUTE_FIELDS + timestamp), oldest first;
    fallbacks: `route_fallback` events of the nodes and the adapter (FALLBACK_FIELDS, the
    daemon that logged it as "node", timestamp); nat_types: fqdn -> reach ("public", "cone",
    "symmetric", "unknown"), the DC's latest `node_nat` event per name.
    """
    routes = [
        {**{k: e.get(k) for k in ROUTE_FIELDS}, "timestamp": e.get("timestamp")}
        for e in _daemon_log_events(state, "dc", "route_decided")
    ]
    fallbacks = []
    for name in (*state.get("nodes", {}), "adapter"):
        fallbacks += [
            {
                "node": name,
                **{k: e.get(k) for k in FALLBACK_FIELDS},
                "timestamp": e.get("timestamp"),
            }
            for e in _daemon_log_events(state, name, "route_fallback")
        ]
    fallbacks.sort(key=lambda f: str(f["timestamp"] or ""))
    nat_types = {
        e["fqdn"]: e.get("reach")
        for e in _daemon_log_events(state, "dc", "node_nat")
        if "fqdn" in e
    }
    return {"routes": routes, "fallbacks": fallbacks, "nat_types": nat_types}


def lab_status(run_dir: Path = DEFAULT_RUN_DIR) -> dict[str, Any]:
    """Live view of the lab: namespaces with interfaces/addresses, daemons, keys, paths, and
    from the logs the routes decided, the fallbacks to the relay and the NAT types seen."""
    state = load_state(run_dir)
    live = live_namespaces()
    planned = (state or {}).get("namespaces", {})
    namespaces = {}
    for ns in sorted(set(live) | set(planned)):
        info = dict(planned.get(ns, {"role": "unknown"}))
        info.update(_hosted_daemon(state, ns))
        info["exists"] = ns in live
        info["interfaces"] = ns_addresses(ns) if ns in live else []
        namespaces[ns] = info
    if state is None:
        return {"up": False, "run_dir": str(run_dir), "namespaces": namespaces}
    adapter_daemon = state["daemons"].get("adapter", {})
    relay_daemon = state["daemons"].get("relay", {})
    return {
        "up": True,
        "run_dir": state["run_dir"],
        "state_file": str(state_path(run_dir)),
        "nat": state["nat"],
        "block_direct": state.get("block_direct", {"enabled": False}),
        "namespaces": namespaces,
        "nodes": state["nodes"],
        "adapter": {
            **state.get("adapter", {}),
            "config": state["configs"].get("adapter"),
            "log": adapter_daemon.get("log"),
        },
        "relay": {
            **state.get("relay", {}),
            "config": state["configs"].get("relay"),
            "log": relay_daemon.get("log"),
        },
        "gn": state.get("gn", {}),
        "daemons": {n: _daemon_status(d) for n, d in state["daemons"].items()},
        "keys": {n: k["public_key"] for n, k in state["keys"].items()},
        "configs": state["configs"],
        "logs": {n: d["log"] for n, d in state["daemons"].items()},
        **lab_events(state),
    }


# --------------------------------------------------------------------------- human output


def _format_ns(name: str, info: dict[str, Any]) -> list[str]:
    extra = [f"{k}={info[k]}" for k in ("fqdn", "nat") if info.get(k)]
    head = f"  {name:<16} {info.get('role', '?'):<12} {' '.join(extra)}".rstrip()
    if not info.get("exists", True):
        head += "  (MISSING)"
    lines = [head]
    for iface in info.get("interfaces", []):
        addrs = [a for a in iface["addresses"] if ":" not in a]  # IPv4 only, for brevity
        if iface["ifname"] != "lo":
            lines.append(f"      {iface['ifname']:<8} {' '.join(addrs) or '-'}")
    return lines


def format_status(status: dict[str, Any]) -> str:
    lines = [f"run dir: {status['run_dir']}"]
    if not status["up"]:
        lines.append("lab is down")
        if status["namespaces"]:
            lines.append(
                "stray namespaces (run `ntma lab down`): " + " ".join(status["namespaces"])
            )
        return "\n".join(lines)
    lines.append("namespaces:")
    for name, info in status["namespaces"].items():
        lines += _format_ns(name, info)
    lines.append("daemons:")
    for name, d in status["daemons"].items():
        state = "running" if d["alive"] else ("dead" if d["pid"] else "not started")
        pid = f"pid {d['pid']}" if d["pid"] else ""
        lines.append(f"  {name:<8} {d['ns']:<12} {state:<11} {pid:<10} {d['log']}")
    lines.append("public keys:")
    lines += [f"  {name:<7} {pub}" for name, pub in status["keys"].items()]
    blocked = status.get("block_direct", {})
    if blocked.get("enabled"):
        lines.append(
            "block-direct: UDP between " + " ".join(blocked["addresses"]) + " dropped on br0"
        )
    lines += _format_routes(status)
    return "\n".join(lines)


def _format_routes(status: dict[str, Any]) -> list[str]:
    lines = ["NAT types (the DC's view):"]
    nat_types = status.get("nat_types", {})
    lines += [f"  {fqdn:<20} {reach}" for fqdn, reach in nat_types.items()] or ["  (none yet)"]
    lines.append("routes decided:")
    for r in status.get("routes", []):
        relay = f", relay {r['relay']}" if r.get("relay") else ""
        lines.append(
            f"  tunnel {r['tunnel_id']}: {r['requester']} -> {r['target']}: {r['route']} "
            f"({r['why']}), {r['initiator']} initiates{relay}"
        )
    if not status.get("routes"):
        lines.append("  (none yet)")
    lines.append("fallbacks:")
    for f in status.get("fallbacks", []):
        lines.append(
            f"  {f['node']}: tunnel {f['tunnel']} to {f['peer']}: {f['from']} -> {f['to']}"
        )
    if not status.get("fallbacks"):
        lines.append("  (none)")
    return lines


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntma lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--run-dir",
        type=Path,
        default=DEFAULT_RUN_DIR,
        help=f"state, keys, configs, logs (default {DEFAULT_RUN_DIR})",
    )
    up = sub.add_parser("up", parents=[common], help="build the lab (replacing a running one)")
    _add_layout_arguments(up)
    up.add_argument(
        "--no-daemons",
        action="store_true",
        help="only topology, web host and dnsmasq (no DC / nodes / adapter)",
    )
    up.add_argument(
        "--no-adapter",
        action="store_true",
        help="do not start the adapter daemon (ntma-gn and ntma-adapter are still built)",
    )
    up.add_argument(
        "--wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long to wait for dc_ready / registered (default 20)",
    )
    sub.add_parser("down", parents=[common], help="stop everything, delete ntma-* namespaces")
    status = sub.add_parser(
        "status", parents=[common], help="show the lab (exit status 3 when it is down)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    demo = sub.add_parser("demo", parents=[common], help="bring up, show it working, tear down")
    _add_layout_arguments(demo)
    return parser


def _add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mn-nat",
        choices=NAT_MODES,
        default="cone",
        help="cone: masquerade; symmetric: masquerade fully-random (default cone)",
    )
    parser.add_argument(
        "--cn-nat",
        choices=CN_NAT_MODES,
        default="none",
        help="same: cn behind mn's NAT, on its LAN (needs --mn-nat cone|symmetric; default none)",
    )
    parser.add_argument(
        "--adapter-nat",
        choices=NAT_MODES,
        default="cone",
        help="how the adapter (and the GN behind it) reaches the Internet (default cone)",
    )
    parser.add_argument(
        "--block-direct",
        action="store_true",
        help="drop UDP between the NTM ends on the Internet segment (DC, RS, web stay "
        "reachable): hole punching fails, so tunnels must fall back to the relay",
    )


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        lab_up(
            args.run_dir,
            mn_nat=args.mn_nat,
            cn_nat=args.cn_nat,
            adapter_nat=args.adapter_nat,
            block_direct=args.block_direct,
            daemons=not args.no_daemons,
            adapter=not args.no_adapter,
            wait_s=args.wait,
        )
    except LabNotReady as exc:
        print(f"ntma lab: error: {exc} (lab left up; `ntma lab down` to remove)", file=sys.stderr)
        return 1
    print(format_status(lab_status(args.run_dir)))
    print(f"lab up in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    lab_down(args.run_dir)
    print(f"lab down in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = lab_status(args.run_dir)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0 if status["up"] else 3


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        args.run_dir,
        mn_nat=args.mn_nat,
        cn_nat=args.cn_nat,
        adapter_nat=args.adapter_nat,
        block_direct=args.block_direct,
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("up", "demo"):
        try:  # a layout that cannot be built: one line, exit status 2, nothing touched
            resolve_nat_modes({"mn": args.mn_nat, "cn": args.cn_nat, "adapter": args.adapter_nat})
        except LabError as exc:
            print(f"ntma lab {args.command}: error: {exc}", file=sys.stderr)
            return 2
    handler = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "demo": cmd_demo}[args.command]
    try:
        return handler(args)
    except (LabError, OSError) as exc:
        print(f"ntma lab: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ntma lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
