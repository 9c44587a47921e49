"""`lab status`: the live lab (namespaces, addresses, daemons) and what its logs say.

The JSON form (`ntma lab status --json`) is read by tests and tools: its keys are part of
the lab's interface. From the logs: the DC's route decisions (`route_decided`) and its view
of each end's NAT (`node_nat`), and the ends' fallbacks to the relay (`route_fallback`),
all read from where each daemon first started in this lab (earlier labs' lines are skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..observe.logread import LogEvent, events_named
from .daemons import pid_alive
from .netns import live_namespaces, ns_addresses
from .settings import DEFAULT_RUN_DIR
from .state import DaemonSpec, LabState, load_state, state_path

ROUTE_FIELDS = ("tunnel_id", "requester", "target", "route", "why", "initiator", "relay", "family")
FALLBACK_FIELDS = ("tunnel", "peer", "from", "to")


def _daemon_status(d: DaemonSpec) -> dict[str, Any]:
    return {
        "ns": d.ns,
        "pid": d.pid,
        "alive": pid_alive(d.pid, d.starttime),
        "log": str(d.log),
        "cmd": list(d.cmd),
    }


def _hosted_daemon(state: LabState | None, ns: str) -> dict[str, str]:
    """Config and log of the DC/node/adapter daemon running in `ns` (if any)."""
    for name, d in (state.daemons if state else {}).items():
        config = state.configs.get(name) if state else None
        if d.ns == ns and config:
            return {"daemon": name, "config": str(config), "log": str(d.log)}
    return {}


def daemon_log_events(state: LabState, name: str, event: str) -> list[LogEvent]:
    """Daemon `name`'s log events named `event`, since the daemon first started in this lab."""
    d = state.daemons.get(name)
    if not d:
        return []
    return events_named(d.log, event, offset=d.log_start or 0)


def lab_events(state: LabState) -> dict[str, Any]:
    """What the logs say about routes, from the lab's start.

    routes: the DC's `route_decided` events (ROUTE_FIELDS + timestamp), oldest first;
    fallbacks: `route_fallback` events of the nodes and the adapter (FALLBACK_FIELDS, the
    daemon that logged it as "node", timestamp); nat_types: fqdn -> reach ("public", "cone",
    "symmetric", "unknown", "filtered"), the DC's latest IPv4 `node_nat` event per name;
    nat_types6: the same in IPv6.
    """
    routes = [
        {**{k: e.get(k) for k in ROUTE_FIELDS}, "timestamp": e.get("timestamp")}
        for e in daemon_log_events(state, "dc", "route_decided")
    ]
    fallbacks = []
    for name in state.hosts():
        fallbacks += [
            {
                "node": name,
                **{k: e.get(k) for k in FALLBACK_FIELDS},
                "timestamp": e.get("timestamp"),
            }
            for e in daemon_log_events(state, name, "route_fallback")
        ]
    fallbacks.sort(key=lambda f: str(f["timestamp"] or ""))
    nat_types: dict[int, dict[str, Any]] = {4: {}, 6: {}}
    for e in daemon_log_events(state, "dc", "node_nat"):
        if "fqdn" in e:
            nat_types[6 if e.get("family") == 6 else 4][e["fqdn"]] = e.get("reach")
    return {
        "routes": routes,
        "fallbacks": fallbacks,
        "nat_types": nat_types[4],
        "nat_types6": nat_types[6],
    }


def _namespaces(state: LabState | None) -> dict[str, dict[str, Any]]:
    """Planned and live namespaces: role and layout, hosted daemon, interfaces (live)."""
    live = live_namespaces()
    planned = state.to_json()["namespaces"] if state else {}
    namespaces = {}
    for ns in sorted(set(live) | set(planned)):
        info = dict(planned.get(ns, {"role": "unknown"}))
        info.update(_hosted_daemon(state, ns))
        info["exists"] = ns in live
        info["interfaces"] = ns_addresses(ns) if ns in live else []
        namespaces[ns] = info
    return namespaces


def _with_daemon(record: dict[str, Any], state: LabState, name: str) -> dict[str, Any]:
    """A host's state record, with its daemon's config and log."""
    d = state.daemons.get(name)
    config = state.configs.get(name)
    return {
        **record,
        "config": str(config) if config else None,
        "log": str(d.log) if d else None,
    }


def lab_status(run_dir: Path = DEFAULT_RUN_DIR) -> dict[str, Any]:
    """Live view of the lab: namespaces with interfaces/addresses, daemons, keys, paths, and
    from the logs the routes decided, the fallbacks to the relay and the NAT types seen."""
    state = load_state(run_dir)
    namespaces = _namespaces(state)
    if state is None:
        return {"up": False, "run_dir": str(run_dir), "namespaces": namespaces}
    saved = state.to_json()
    return {
        "up": True,
        "run_dir": saved["run_dir"],
        "state_file": str(state_path(run_dir)),
        "nat": saved["nat"],
        "block_direct": saved["block_direct"],
        "namespaces": namespaces,
        "nodes": saved["nodes"],
        "adapter": _with_daemon(saved["adapter"], state, state.adapter.name),
        "adapters": {n: _with_daemon(a, state, n) for n, a in saved["adapters"].items()},
        "relay": _with_daemon(saved["relay"], state, "relay"),
        "gn": saved["gn"],
        "gns": saved["gns"],
        "daemons": {n: _daemon_status(d) for n, d in state.daemons.items()},
        "keys": {n: k.public_key for n, k in state.keys.items()},
        "configs": saved["configs"],
        "logs": {n: str(d.log) for n, d in state.daemons.items()},
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
    lines += _format_gns(status)
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


def _format_gns(status: dict[str, Any]) -> list[str]:
    """One line per general node: its name, MAC and adapter, and its address (live)."""
    lines = ["general nodes:"]
    for ns, gn in status.get("gns", {}).items():
        eth0 = [
            i
            for i in status["namespaces"].get(ns, {}).get("interfaces", [])
            if i["ifname"] == gn["interface"]
        ]
        addrs = [a for i in eth0 for a in i["addresses"] if ":" not in a]
        lines.append(
            f"  {ns:<12} {gn['fqdn']:<20} {gn['mac']}  behind {gn['adapter']:<9} "
            f"{' '.join(addrs) or 'no address'}"
        )
    return lines


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
