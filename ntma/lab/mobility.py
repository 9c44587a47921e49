"""Changes to a running lab, for mobility: `lab move`, `lab restart`, `lab nat-reset`.

A move takes an NTM host (mn, cn, the adapter) off its network and puts it on another while
its daemon runs on: the host namespace and its processes stay, only its eth0 (and the NAT
router behind it, if it has one of its own) is replaced, break before make. Each host has
two networks of each kind (public; behind a NAT of its own) and a move alternates between
them per kind, so every move lands on a new public address (see `settings.SLOTS`).
`plan_move` is pure (the state in, the plan out); `lab_move` applies a plan and records it.

The times in the records are `time.monotonic()`, so a benchmark in the same machine can
time a handover from the moment it asked for the move.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .daemons import kill_daemon, start_daemon, wait_log_events
from .lifecycle import check_prerequisites
from .netns import attach_host, detach_host, forget_neighbour, ns_run
from .settings import (
    CONNTRACK,
    MOVE_TARGETS,
    NAT_RULES,
    NTM_DEFS,
    SAME_NAT,
    LabRefused,
)
from .state import HostState, LabState, host_state, load_state, record_attachment, save_state
from .topology import Attachment, move_topology, network_kind

#: `lab restart` NODE -> its daemon in the state ("rs" is the relay daemon).
RESTARTABLE = {"dc": "dc", "rs": "relay", **{name: name for name in NTM_DEFS}}
#: What a restarted daemon logs when it is ready (the NTM ends: registered with the DC).
READY_EVENT = {"dc": "dc_ready", "relay": "relay_ready"}
#: Roles of the namespaces on the Internet segment besides public hosts (state.namespaces).
SEGMENT_ROLES = ("dc", "relay", "web", "nat")


@dataclass(frozen=True)
class MovePlan:
    """What `lab move` does: the host's records before and after, the routers it removes,
    what it builds, and who on the Internet segment may cache the new address's MAC."""

    old: HostState
    new: HostState
    removed: tuple[str, ...]  # its own router namespace(s) that go
    attachment: Attachment
    segment: tuple[str, ...]  # namespaces on the Internet segment after the move, but its own


def network_name(nat: str) -> str:
    """How a record names a network: "public" for no NAT, else the NAT mode."""
    return {"none": "public"}.get(nat, nat)


def _load(run_dir: Path) -> LabState:
    state = load_state(Path(run_dir))
    if state is None:
        raise LabRefused(f"no lab in {run_dir} (ntma lab up first)")
    return state


@contextlib.contextmanager
def _state_locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock (flock on the directory itself) while the state is
    read, changed and saved: two hosts moved at once (`lab move` from two threads or
    processes) then each record their own move, instead of the last save dropping the
    other's."""
    fd = os.open(Path(run_dir), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_host(name: str) -> None:
    if name not in NTM_DEFS:
        raise LabRefused(f"unknown lab host {name!r} (choose {tuple(NTM_DEFS)})")


def _check_target(name: str, to: str) -> None:
    if to not in MOVE_TARGETS:
        raise LabRefused(f"unknown network {to!r} for {name} (choose {tuple(MOVE_TARGETS)})")


def _host(state: LabState, name: str) -> HostState:
    _check_host(name)
    if name not in state.hosts():
        raise LabRefused(f"{name} is not in this lab (it has {', '.join(state.hosts())})")
    return state.hosts()[name]


def _guests(state: LabState, host: HostState) -> list[str]:
    """Hosts sitting behind `host`'s own NAT ("same")."""
    if host.nat not in NAT_RULES:
        return []
    others = state.hosts().values()
    return [h.name for h in others if h.nat == SAME_NAT and h.nat_ns == host.nat_ns]


def _segment(state: LabState, exclude: set[str]) -> tuple[str, ...]:
    on_segment = [
        ns.name
        for ns in state.namespaces.values()
        if ns.role in SEGMENT_ROLES or (ns.role in ("node", "adapter") and ns.nat == "none")
    ]
    return tuple(n for n in on_segment if n not in exclude)


def plan_move(state: LabState, name: str, to: str) -> MovePlan:
    """Where `name` goes on `lab move --to to` (pure: reads `state`, changes nothing)."""
    old = _host(state, name)
    _check_target(name, to)
    if old.net != "v4":
        raise LabRefused(f"{name} has IPv6 (--{name}-net {old.net}): lab move is IPv4 only")
    guests = _guests(state, old)
    if guests:
        raise LabRefused(
            f"{name}'s NAT is shared by {', '.join(guests)} (--{guests[0]}-nat same): "
            f"move {guests[0]} first"
        )
    nat = MOVE_TARGETS[to]
    kind = network_kind(nat)
    assert kind is not None
    slot = 2 if old.slots.get(kind) == 1 else 1  # alternate, so the address is new
    placed = host_state(NTM_DEFS[name], nat, slot)
    changed = {f.name: getattr(placed, f.name) for f in dataclasses.fields(HostState)}
    new = dataclasses.replace(old, **{**changed, "slots": {**old.slots, kind: slot}})
    attachment = move_topology(NTM_DEFS[name], nat, slot)
    removed = (old.nat_ns,) if old.nat in NAT_RULES and old.nat_ns else ()
    own = {old.ns, *removed, *(r.name for r in attachment.routers)}
    return MovePlan(old, new, removed, attachment, _segment(state, own))


def move_record(plan: MovePlan, started: float, down: float, up: float) -> dict[str, Any]:
    old, new = plan.old, plan.new
    return {
        "node": new.name,
        "from": network_name(old.nat),
        "to": network_name(new.nat),
        "old_public_address": old.public_address,
        "new_public_address": new.public_address,
        "old_address": old.address,
        "new_address": new.address,
        "nat_ns": new.nat_ns,
        "slot": new.slot,
        "started_at": started,
        "down_at": down,
        "up_at": up,
    }


def lab_move(run_dir: Path, node: str, to: str, down_for: float = 0.0) -> dict[str, Any]:
    """Move NTM host `node` (mn, cn, adapter, adapter2) to network `to` (public, cone, symmetric),
    `down_for` seconds without a network in between; its daemon keeps running.

    Returns node, from, to, the old and new (public) addresses, and the monotonic times the
    move started, the old link went away (`down_at`) and the new one came up (`up_at`).
    """
    started = time.monotonic()
    _check_host(node)
    _check_target(node, to)
    if down_for < 0:
        raise LabRefused(f"--down-for must be 0 or more seconds, not {down_for:g}")
    _load(run_dir)  # refused before the lock when there is no lab
    with _state_locked(run_dir):
        state = _load(run_dir)
        plan = plan_move(state, node, to)
        check_prerequisites()
        detach_host(plan.old.ns, plan.removed)
        down = time.monotonic()
        record_attachment(state, plan.new, plan.attachment, plan.removed)
        save_state(state)  # the new network is planned: `status` and `down` stay right
    time.sleep(max(0.0, down + down_for - time.monotonic()))
    forget_neighbour(plan.segment, plan.new.public_address)
    attach_host(plan.attachment.host, plan.attachment.routers, plan.attachment.links)
    return move_record(plan, started, down, time.monotonic())


def lab_restart(run_dir: Path, node: str, wait_s: float = 20.0) -> dict[str, Any]:
    """Kill NODE's daemon (dc, rs, mn, cn, adapter, adapter2) hard (SIGKILL to its process
    group) and start it again with the same spec, waiting until it is ready (the DC:
    dc_ready, the RS: relay_ready, the NTM ends: registered). Returns the kill time (None
    when it was not running), the old and new pid, and when it was ready (time.monotonic())."""
    if node not in RESTARTABLE:
        raise LabRefused(f"unknown lab daemon {node!r} (choose {tuple(RESTARTABLE)})")
    state = _load(run_dir)
    name = RESTARTABLE[node]
    if name not in state.daemons:
        raise LabRefused(f"{node} is not in this lab (lab up --adapters 2 has adapter2)")
    check_prerequisites()
    old_pid = state.daemons[name].pid
    killed = kill_daemon(state, name)
    pid = start_daemon(state, name)
    event = READY_EVENT.get(name, "registered")
    wait_log_events(state, {name: event}, timeout=wait_s)
    return {
        "node": node,
        "daemon": name,
        "old_pid": old_pid if killed is not None else None,
        "pid": pid,
        "killed_at": killed,
        "ready_at": time.monotonic(),
        "ready_event": event,
    }


def lab_nat_reset(run_dir: Path, node: str) -> dict[str, Any]:
    """Flush the conntrack table (every NAT mapping) of NODE's own NAT router: the next
    packet out gets a new mapping, as after a home router's reboot. Returns the router's
    namespace, how many entries there were just before and when it was done
    (time.monotonic())."""
    _check_host(node)
    state = _load(run_dir)
    host = _host(state, node)
    if host.nat not in NAT_RULES or not host.nat_ns:
        where = f"behind {host.nat_ns}, another host's" if host.nat == SAME_NAT else "public"
        raise LabRefused(f"{node} has no NAT of its own ({where}): nothing to reset")
    if shutil.which(CONNTRACK) is None:
        raise LabRefused(f"{CONNTRACK} is missing (apt-get install conntrack)")
    listed = ns_run(host.nat_ns, CONNTRACK, "-L").stdout  # `-F` does not say how many
    ns_run(host.nat_ns, CONNTRACK, "-F")
    return {
        "node": node,
        "nat_ns": host.nat_ns,
        "flushed": len(listed.splitlines()),  # entries just before the flush
        "at": time.monotonic(),
    }
