"""Commands in and on namespaces: run/ns_run/ns_exec/ip, live views, and the network build.

Nothing here touches the root namespace's interfaces: veth pairs are born inside the lab's
namespaces, and every command names its namespace. `build_network` applies a `Topology`
(namespaces, then links, then per-namespace routes, forwarding, NAT and filters).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .settings import (
    BLOCK_DIRECT_TABLE,
    ETC_NETNS,
    GN_IFACE,
    NAT_RULES,
    NS_PREFIX,
    LabError,
    one_line,
)
from .topology import Iface, Link, Namespace, Topology

# --------------------------------------------------------------------------- commands


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
        raise LabError(f"{' '.join(cmd)}: {one_line(str(exc))}") from exc
    if check and proc.returncode != 0:
        detail = one_line(proc.stderr or proc.stdout) or f"exit status {proc.returncode}"
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
    """Interfaces of `ns`, read live: [{ifname, state, mac, addresses: ["a.b.c.d/nn", ...]}]."""
    out = []
    for entry in _ip_json("-n", ns, "addr"):
        addrs = [f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])]
        state, mac = entry.get("operstate"), entry.get("address")
        out.append({"ifname": entry["ifname"], "state": state, "mac": mac, "addresses": addrs})
    return out


# --------------------------------------------------------------------------- network build


def create_namespace(ns: Namespace) -> None:
    run("ip", "netns", "add", ns.name)
    ip(ns.name, "link", "set", "lo", "up")
    if ns.ipv6_off and Path("/proc/sys/net/ipv6").exists():
        for conf in ("all", "default"):  # before its bridge and ports exist: they inherit
            ns_run(ns.name, "sysctl", "-q", "-w", f"net.ipv6.conf.{conf}.disable_ipv6=1")
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
        if end.mac:
            ip(end.ns, "link", "set", end.name, "address", end.mac)
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


# --------------------------------------------------------------------------- moves


def _link_exists(ns: str, ifname: str) -> bool:
    return run("ip", "-n", ns, "link", "show", ifname, check=False).returncode == 0


def detach_host(host_ns: str, routers: Sequence[str]) -> None:
    """Take `host_ns` off its network: delete its eth0 (the veth pair goes with it), then
    the wan0 of each of its own `routers` and the router namespace. wan0 goes explicitly,
    because a deleted namespace's devices go later, in the kernel's own time, and a router
    made again under the same name needs its bridge port name free now."""
    if _link_exists(host_ns, "eth0"):  # else an earlier move failed half-way
        ip(host_ns, "link", "del", "eth0")
    for router in routers:
        run("ip", "-n", router, "link", "del", "wan0", check=False)
        why = delete_namespace(router)
        if why is not None:
            raise LabError(f"could not delete {router}: {why}")


def attach_host(host: Namespace, routers: Sequence[Namespace], links: Sequence[Link]) -> None:
    """Build a moved host's new network with the building blocks `build_network` uses: its
    router namespaces, the links, the host's default route, the routers' forwarding and NAT
    (the host namespace already exists and keeps its sysctls)."""
    for router in routers:
        create_namespace(router)
    for link in links:
        create_link(link)
    configure_routes(host)
    for router in routers:
        configure_forwarding(router)
        configure_nat(router)


def forget_neighbour(namespaces: Sequence[str], address: str) -> None:
    """Drop what `namespaces` cached for `address`'s MAC: an address a host comes back to sits
    on a new veth, and a stale entry would stall traffic to it for seconds (neighbour
    probing) where a real network change does not."""
    for ns in namespaces:
        run("ip", "-n", ns, "neigh", "flush", "to", address, check=False)


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


def namespace_pids(ns: str) -> list[int]:
    """Every process inside namespace `ns`."""
    out = run("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def delete_namespace(ns: str) -> str | None:
    """Delete namespace `ns`; None when gone, else why not (one line)."""
    proc = run("ip", "netns", "del", ns, check=False)
    return None if proc.returncode == 0 else one_line(proc.stderr)


def write_resolv_confs(contents: dict[str, str]) -> list[Path]:
    """/etc/netns/<ns>/resolv.conf for each namespace (`ip netns exec` bind-mounts it over
    /etc/resolv.conf there); returns the directories written."""
    written = []
    for ns, text in contents.items():
        d = ETC_NETNS / ns
        d.mkdir(exist_ok=True)
        (d / "resolv.conf").write_text(text)
        written.append(d)
    return written
