"""`lab up` and `lab down`: build the lab step by step, and remove it whatever its state.

`lab_up` records the state first, so a crash at any later step leaves enough for `lab_down`;
`lab_down` does not trust the state alone: it also kills every process inside any ``ntma-*``
namespace and deletes every ``ntma-*`` namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from .configs import write_keys_and_configs
from .daemons import (
    kill_namespace_processes,
    start_daemon,
    terminate,
    wait_listening,
    wait_log_events,
)
from .netns import build_network, delete_namespace, live_namespaces, write_resolv_confs
from .settings import (
    DEFAULT_RUN_DIR,
    ETC_NETNS,
    GN_RESOLV_CONF,
    NS_PREFIX,
    REQUIRED_TOOLS,
    LabError,
    LabNotReady,
)
from .state import LabState, load_state, new_state, save_state, state_path
from .topology import build_topology, resolve_nat_modes


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


def write_lab_resolv_confs(state: LabState) -> None:
    """/etc/netns/<ns>/resolv.conf, written before anything runs in the lab's namespaces.

    Nodes: the node's own DNS responder on 127.0.0.1. The GN: a comment only, for dhclient
    there to overwrite (so it never touches the machine's /etc/resolv.conf).
    """
    if not ETC_NETNS.exists():
        ETC_NETNS.mkdir(parents=True)
        state.etc_netns_created = True
    contents = {node.ns: "nameserver 127.0.0.1\n" for node in state.nodes.values()}
    contents[state.gn.ns] = GN_RESOLV_CONF
    state.etc_netns += write_resolv_confs(contents)


def start_web(state: LabState) -> None:
    start_daemon(state, "web")
    start_daemon(state, "dnsmasq")
    wait_listening(state, "web", "tcp", 80)
    wait_listening(state, "dnsmasq", "udp", 53)


def start_ntm_daemons(state: LabState, wait_s: float, *, adapter: bool = True) -> None:
    """DC first; then the Relay Server, the nodes and (unless `adapter` is False) the
    adapter, the last two registering.

    The relay and the nodes are waited for before the adapter, so an adapter that exits at
    once (one line: its exit status and last output) leaves the others up and registered.
    """
    deadline = time.monotonic() + wait_s
    start_daemon(state, "dc")
    wait_log_events(state, {"dc": "dc_ready"}, timeout=wait_s)
    start_daemon(state, "relay")
    registering = [*state.nodes, *([state.adapter.name] if adapter else [])]
    for name in registering:
        start_daemon(state, name)
    first = {"relay": "relay_ready", **dict.fromkeys(state.nodes, "registered")}
    for group in (first, dict.fromkeys(registering[len(state.nodes) :], "registered")):
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
) -> LabState:
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
        write_lab_resolv_confs(state)  # before anything runs in a namespace (sysctl in ntma-gn)
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
