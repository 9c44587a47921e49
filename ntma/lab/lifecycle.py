"""`lab up` and `lab down`: build the lab step by step, and remove it whatever its state.

`lab_up` records the state first, so a crash at any later step leaves enough for `lab_down`;
`lab_down` does not trust the state alone: it also kills every process inside any ``ntma-*``
namespace and deletes every ``ntma-*`` namespace.

With `dhcp=True` (`lab up --dhcp`) a DHCP client runs in every GN as a lab daemon, and
`lab_up` waits, within the same `wait_s`, until each GN has an address, naming every GN
that has none. Off by default: the tests and the demo run their own clients there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from .configs import write_keys_and_configs
from .daemons import (
    daemon_alive,
    kill_namespace_processes,
    start_daemon,
    terminate,
    wait_listening,
    wait_log_events,
)
from .ipv6 import check_nets, configure_ipv6
from .netns import (
    build_network,
    delete_namespace,
    live_namespaces,
    ns_addresses,
    write_resolv_confs,
)
from .settings import (
    ADAPTER2_DEF,
    DEFAULT_RUN_DIR,
    ETC_NETNS,
    GN_RESOLV_CONF,
    NS_PREFIX,
    POLL_S,
    REQUIRED_TOOLS,
    LabError,
    LabNotReady,
)
from .state import GnState, LabState, dhcp_daemon, load_state, new_state, save_state, state_path
from .topology import build_topology, check_layout, lab_gns, resolve_nat_modes


def check_prerequisites(extra: tuple[str, ...] = ()) -> None:
    if os.geteuid() != 0:
        raise LabError("must run as root (network namespaces)")
    missing = [t for t in (*REQUIRED_TOOLS, *extra) if shutil.which(t) is None]
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


def write_lab_resolv_confs(state: LabState) -> None:
    """/etc/netns/<ns>/resolv.conf, written before anything runs in the lab's namespaces.

    Nodes: the node's own DNS responder on 127.0.0.1. Every GN: a comment only, for its DHCP
    client there to overwrite (so it never touches the machine's /etc/resolv.conf).
    """
    if not ETC_NETNS.exists():
        ETC_NETNS.mkdir(parents=True)
        state.etc_netns_created = True
    contents = {node.ns: "nameserver 127.0.0.1\n" for node in state.nodes.values()}
    contents |= dict.fromkeys(state.gns, GN_RESOLV_CONF)
    state.etc_netns += write_resolv_confs(contents)


def start_web(state: LabState) -> None:
    start_daemon(state, "web")
    start_daemon(state, "dnsmasq")
    wait_listening(state, "web", "tcp", 80)
    wait_listening(state, "dnsmasq", "udp", 53)


def start_ntm_daemons(state: LabState, wait_s: float, *, adapter: bool = True) -> float:
    """DC first; then the Relay Server, the nodes and (unless `adapter` is False) the
    adapters, the last two registering. Returns the deadline (time.monotonic()).

    The relay and the nodes are waited for before the adapters, so an adapter that exits at
    once (one line: its exit status and last output) leaves the others up and registered.
    """
    deadline = time.monotonic() + wait_s
    start_daemon(state, "dc")
    wait_log_events(state, {"dc": "dc_ready"}, timeout=wait_s)
    start_daemon(state, "relay")
    registering = [*state.nodes, *(state.adapters if adapter else [])]
    for name in registering:
        start_daemon(state, name)
    first = {"relay": "relay_ready", **dict.fromkeys(state.nodes, "registered")}
    for group in (first, dict.fromkeys(registering[len(state.nodes) :], "registered")):
        if group:
            remaining = max(0.0, deadline - time.monotonic())
            wait_log_events(state, group, timeout=remaining)
    return deadline


def gn_address(gn: GnState) -> str | None:
    """The IPv4 address on `gn`'s interface, read live (None before its lease)."""
    for iface in ns_addresses(gn.ns):
        if iface["ifname"] == gn.interface:
            return next((a.split("/")[0] for a in iface["addresses"] if ":" not in a), None)
    return None


def _no_lease(state: LabState, gn: GnState) -> str:
    d = state.daemons[dhcp_daemon(gn)]
    alive = daemon_alive(state, dhcp_daemon(gn))
    how = gn.dhcp_client if alive else f"{gn.dhcp_client} exited"
    return f"{gn.ns} ({gn.fqdn}, {gn.mac}; {how}, read {d.log})"


def start_gn_clients(state: LabState, deadline: float) -> dict[str, str]:
    """A DHCP client in every GN; wait until each has an address or `deadline` passes.
    Returns GN namespace -> address; LabNotReady names every GN without one (the lab is
    left up, its clients still asking)."""
    for gn in state.gns.values():
        start_daemon(state, dhcp_daemon(gn))
    leased: dict[str, str] = {}
    while True:
        for gn in state.gns.values():
            address = leased.get(gn.ns) or gn_address(gn)
            if address:
                leased[gn.ns] = address
        missing = [gn for gn in state.gns.values() if gn.ns not in leased]
        if not missing:
            return leased
        if time.monotonic() >= deadline:
            raise LabNotReady(
                f"{len(missing)} of {len(state.gns)} general nodes got no DHCP lease in time: "
                + "; ".join(_no_lease(state, gn) for gn in missing)
            )
        time.sleep(POLL_S * 2)


def lab_nat_modes(
    mn_nat: str, cn_nat: str, adapter_nat: str, adapter2_nat: str, adapters: int = 1
) -> dict[str, str]:
    """The hosts' NAT modes from `lab up`'s options, validated (adapter2's only when the
    lab has it)."""
    asked = {"mn": mn_nat, "cn": cn_nat, "adapter": adapter_nat}
    if adapters > 1:
        asked["adapter2"] = adapter2_nat
    return resolve_nat_modes(asked, adapters)


def dhcp_tools(gns: int, adapters: int) -> tuple[str, ...]:
    """The DHCP clients `lab up --dhcp` runs in the GNs of this layout."""
    return tuple(sorted({g.dhcp_client for g in lab_gns(gns, adapters)}))


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
    gns: int = 1,
    adapters: int = 1,
    adapter2_nat: str = ADAPTER2_DEF.default_nat,
    dhcp: bool = False,
    vip6: bool = False,
    mn_net: str = "v4",
    cn_net: str = "v4",
    adapter_net: str = "v4",
) -> LabState:
    """Build the lab (bringing an existing one down first) and return its state.

    NAT modes: "none", "cone", "symmetric"; `cn_nat` also "same" (cn behind mn's NAT, which
    must then exist), and `adapter2_nat` "same" (behind the first adapter's NAT). `gns`:
    general nodes on the first adapter's link (1..8); `adapters`: 1, or 2 for adapter2 with
    its GN ntma-gnb. `block_direct`: UDP between the NTM ends' public addresses is dropped
    on the Internet segment (the DC, RS and web host stay reachable).
    The topology (GNs and adapters included) is always built; `daemons=False` starts no
    DC/RS/node/adapter daemons, `adapter=False` skips only the adapter daemons, `dhcp=True`
    runs a DHCP client in every GN once the adapters are up (see the module doc); `vip6=True`
    gives the DC an IPv6 VIP pool (VIP6_POOL).
    On any failure while building, everything made is torn down and the error re-raised.
    If the daemons do not report readiness within `wait_s` (or exit), or a GN gets no lease
    in that time, LabNotReady is raised and the lab is left up for inspection.
    """
    nat_by_node = lab_nat_modes(mn_nat, cn_nat, adapter_nat, adapter2_nat, adapters)
    nets = {"mn": mn_net, "cn": cn_net, "adapter": adapter_net}
    check_nets(nets, nat_by_node)
    check_layout(gns, adapters)
    dhcp = dhcp and daemons and adapter  # a client with no adapter to answer it waits forever
    check_prerequisites(dhcp_tools(gns, adapters) if dhcp else ())
    run_dir = Path(run_dir).absolute()
    if lab_present(run_dir):
        lab_down(run_dir)
    layout = {"gns": gns, "adapters": adapters}
    topo = build_topology(nat_by_node, block_direct=block_direct, gn_ipv6=vip6, **layout)
    state = new_state(
        run_dir,
        topo,
        nat_by_node,
        adapter_autostart=daemons and adapter,
        dhcp=dhcp,
        vip6=vip6,
        nets=nets,
        **layout,
    )
    try:
        prepare_run_dir(run_dir)
        save_state(state)  # first, so `down` can clean up after a crash from here on
        write_lab_resolv_confs(state)  # before anything runs in a namespace (sysctl in ntma-gn)
        build_network(topo)
        if state.dc.ipv6:
            ends = [*state.nodes.values(), *state.adapters.values()]
            configure_ipv6(lab_servers(state), ends)
        write_keys_and_configs(state)
        save_state(state)
        start_web(state)
    except BaseException:
        with contextlib.suppress(Exception):
            lab_down(run_dir)
        raise
    if daemons:
        try:
            deadline = start_ntm_daemons(state, wait_s, adapter=adapter)
            if dhcp:
                start_gn_clients(state, deadline)
        except LabNotReady:
            raise  # leave the lab up so the logs and namespaces can be inspected
        except BaseException:
            with contextlib.suppress(Exception):
                lab_down(run_dir)
            raise
    return state


def remove_etc_netns(state: LabState | None) -> list[str]:
    """Remove /etc/netns/ntma-* (node and GN resolv.conf); return those that would not go."""
    dirs = set(ETC_NETNS.glob(NS_PREFIX + "*"))
    dirs |= set(state.etc_netns) if state else set()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if state and state.etc_netns_created:
        with contextlib.suppress(OSError):
            ETC_NETNS.rmdir()  # only if we created it and it is empty
    return sorted(str(d) for d in dirs if d.exists())


def lab_down(run_dir: Path = DEFAULT_RUN_DIR) -> None:
    """Stop all lab processes and delete every ntma-* namespace. Idempotent."""
    state = load_state(run_dir)
    if state:
        running = [(d.pid, d.starttime) for d in state.daemons.values() if d.pid]
        terminate(running, group=True)
    namespaces = live_namespaces()
    kill_namespace_processes(namespaces)
    errors = []
    for ns in namespaces:
        why = delete_namespace(ns)
        if why is not None:
            errors.append(f"{ns}: {why}")
    errors += [f"{d}: could not remove" for d in remove_etc_netns(state)]
    state_path(run_dir).unlink(missing_ok=True)
    if errors:
        raise LabError("lab down incomplete: " + "; ".join(errors))


def lab_servers(state: LabState) -> dict[str, str]:
    """The DC, RS and web host: namespace -> IPv4 (each made dual-stack on an IPv6 lab)."""
    return {state.dc.ns: state.dc.address, state.relay.ns: state.relay.address,
            state.web.ns: state.web.address}
