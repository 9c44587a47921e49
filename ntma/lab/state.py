"""The lab's state: what it planned, started and wrote, typed, with a versioned JSON form.

`<run-dir>/state.json` is `LabState.to_json()`; `load_state` reads it back (None when it is
missing, unreadable or of another version: `lab down` then still cleans up by namespace
names). `new_state` plans a lab from a topology and the NAT modes, before anything runs.

A host moved to another network (`lab move`) has its `HostState` (`nat`, `nat_ns`,
`address`, `public_address`, `slot`, `slots`), `nat`, `namespaces` and `planned_addresses`
rewritten by `record_attachment`; a restarted daemon is a new pid on its `DaemonSpec` (the
spec keeps `log_start`, so status still reads the whole lab's log).

The adapters are `adapters` (by name) and the general nodes `gns` (by namespace); `adapter`
and `gn` are the first of each, as state.json also spells them for readers of version 1.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import types
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .settings import (
    ADAPTER_DEF,
    ADAPTER_DEFS,
    ADAPTER_GN_IFACE,
    DC_IP,
    DC_NS,
    DC_PORT,
    DC_PROBE_PORT,
    ETC_NETNS,
    GN_IFACE,
    GN_NS,
    INET_NS,
    NODE_DEFS,
    NTM_DEFS,
    RS_IP,
    RS_KEY,
    RS_NS,
    RS_PORT,
    SAME_NAT,
    STATE_FILE,
    STATE_VERSION,
    VIP6_POOL,
    WEB_IP,
    WEB_NS,
    ZONE,
    GnDef,
    NodeDef,
)
from .topology import (
    Attachment,
    Namespace,
    Topology,
    lab_gns,
    network_kind,
    resolve_nat_modes,
    switch_ns,
)

# --------------------------------------------------------------------------- records


@dataclass
class HostState:
    """An NTM end (node or adapter): its namespace, name, and how it reaches the Internet."""

    name: str
    ns: str
    fqdn: str
    nat: str  # none | cone | symmetric | same
    nat_ns: str | None  # the NAT router it is behind (its own, or the one it shares)
    address: str  # on its eth0
    public_address: str  # what the Internet sees: its own, or its router's wan0
    port: int
    slot: int = 1  # which of its networks of this kind it is on (settings.SLOTS)
    slots: dict[str, int] = field(default_factory=dict)  # kind -> the slot it last used
    net: str = "v4"  # v4 | v6 | dual (ipv6.py)


@dataclass
class AdapterState(HostState):
    gn_interface: str = ADAPTER_GN_IFACE
    gn_ns: str = GN_NS  # its first GN
    autostart: bool = True  # False: `lab up --no-adapter` / `--no-daemons`
    gns: list[str] = field(default_factory=lambda: [GN_NS])  # its GNs' namespaces
    switch_ns: str | None = None  # with several GNs: the switch they and gn0 are ports of


@dataclass
class GnState:
    """A general node: an unmodified host on an adapter's gn0 (directly, or by a switch)."""

    ns: str = GN_NS
    interface: str = GN_IFACE
    adapter_ns: str = ADAPTER_DEF.ns
    adapter_interface: str = ADAPTER_GN_IFACE
    resolv_conf: Path = ETC_NETNS / GN_NS / "resolv.conf"
    name: str = "gn"  # its label
    fqdn: str = f"gn.{ZONE}"
    mac: str = "02:00:00:00:0a:01"
    adapter: str = ADAPTER_DEF.name
    switch_ns: str | None = None
    dhcp_client: str = "dhclient"  # what `lab up --dhcp` runs there


@dataclass
class DcState:
    ns: str = DC_NS
    address: str = DC_IP
    port: int = DC_PORT
    probe_port: int = DC_PROBE_PORT
    zone: str = ZONE
    vip6_pool: str | None = None  # `lab up --vip6`: IPv6 VIPs from this ULA prefix
    ipv6: bool = False  # the Internet segment is dual-stack (a host asked for IPv6)


@dataclass
class RelayState:
    ns: str = RS_NS
    address: str = RS_IP
    port: int = RS_PORT
    key: str = RS_KEY  # its entry in LabState.keys


@dataclass
class WebState:
    ns: str = WEB_NS
    address: str = WEB_IP


@dataclass
class BlockDirect:
    """--block-direct: UDP between these addresses is dropped on the Internet segment."""

    enabled: bool = False
    ns: str = INET_NS
    addresses: list[str] = field(default_factory=list)


@dataclass
class KeyRecord:
    private_key_file: Path
    public_key: str  # base64


@dataclass
class DaemonSpec:
    """A daemon the lab runs: where, how, its log, and (while it runs) its pid."""

    ns: str
    cmd: list[str]
    log: Path  # the daemon's log
    output: Path  # where its stdout/stderr go (the log itself, unless it logs elsewhere)
    pid: int | None = None
    starttime: int | None = None  # kernel start time of `pid`, so a reused pid is not it
    log_offset: int = 0  # where the log was when the daemon last started
    log_start: int | None = None  # ...and when it first started in this lab (status reads)


_PATH_FIELDS = {"resolv_conf", "private_key_file", "log", "output", "run_dir"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Namespace):
        return _jsonable(value.describe())
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _frozen(value: Any) -> Any:
    """JSON data with every dict read-only (writing into a snapshot would be lost)."""
    if isinstance(value, dict):
        return types.MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_frozen(v) for v in value]
    return value


def _record(cls: type, data: dict[str, Any]) -> Any:
    """A record dataclass from its JSON form (unknown keys ignored, paths made Paths)."""
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    for key in _PATH_FIELDS & kwargs.keys():
        if kwargs[key] is not None:
            kwargs[key] = Path(kwargs[key])
    return cls(**kwargs)


def _namespace(name: str, data: dict[str, Any]) -> Namespace:
    data = dict(data)
    if data.get("block_udp_between") is not None:
        data["block_udp_between"] = tuple(data["block_udp_between"])
    return Namespace(name, **data)


# --------------------------------------------------------------------------- the state

#: state.json's keys, in order (a stable file for people who read it).
JSON_ORDER = (
    "version",
    "run_dir",
    "created",
    "nat",
    "block_direct",
    "namespaces",
    "planned_addresses",
    "nodes",
    "dc",
    "relay",
    "web",
    "adapter",
    "gn",
    "adapters",
    "gns",
    "keys",
    "configs",
    "daemons",
    "etc_netns",
    "etc_netns_created",
)


@dataclass
class LabState:
    """Everything `lab up` planned, started and wrote (see the module doc)."""

    run_dir: Path
    nat: dict[str, str]  # host name -> NAT mode (defaults filled in)
    namespaces: dict[str, Namespace]  # as planned
    planned_addresses: dict[str, dict[str, str]]  # namespace -> interface -> cidr
    nodes: dict[str, HostState]
    adapters: dict[str, AdapterState]  # by name, the first adapter first
    daemons: dict[str, DaemonSpec]
    block_direct: BlockDirect = field(default_factory=BlockDirect)
    dc: DcState = field(default_factory=DcState)
    relay: RelayState = field(default_factory=RelayState)
    web: WebState = field(default_factory=WebState)
    gns: dict[str, GnState] = field(default_factory=lambda: {GN_NS: GnState()})  # by namespace
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)  # daemon -> its config file
    etc_netns: list[Path] = field(default_factory=list)  # /etc/netns/<ns> we wrote
    etc_netns_created: bool = False  # /etc/netns itself was made by us
    created: float = field(default_factory=time.time)
    version: int = STATE_VERSION

    @property
    def adapter(self) -> AdapterState:
        """The first adapter (the lab's only one unless `--adapters 2`)."""
        return next(iter(self.adapters.values()))

    @property
    def gn(self) -> GnState:
        """The first adapter's first GN (ntma-gn)."""
        return next(iter(self.gns.values()))

    def to_json(self) -> dict[str, Any]:
        return {name: _jsonable(getattr(self, name)) for name in JSON_ORDER}

    def __getitem__(self, key: str) -> Any:
        """Read-only view of the JSON form's field `key` (state["daemons"]["dc"]["log"]), for
        code that reads the state as state.json spells it; change it through its fields."""
        if key not in JSON_ORDER:
            raise KeyError(key)
        return _frozen(_jsonable(getattr(self, key)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        """The state `to_json` gave; ValueError for another version, KeyError/TypeError for a
        file that is not a lab state."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}, expected {STATE_VERSION}")
        return cls(
            run_dir=Path(data["run_dir"]),
            nat=dict(data["nat"]),
            namespaces={n: _namespace(n, d) for n, d in data["namespaces"].items()},
            planned_addresses=data["planned_addresses"],
            nodes={n: _record(HostState, d) for n, d in data["nodes"].items()},
            adapters={n: _record(AdapterState, d) for n, d in data["adapters"].items()},
            daemons={n: _record(DaemonSpec, d) for n, d in data["daemons"].items()},
            block_direct=_record(BlockDirect, data["block_direct"]),
            dc=_record(DcState, data["dc"]),
            relay=_record(RelayState, data["relay"]),
            web=_record(WebState, data["web"]),
            gns={n: _record(GnState, d) for n, d in data["gns"].items()},
            keys={n: _record(KeyRecord, d) for n, d in data["keys"].items()},
            configs={n: Path(p) for n, p in data["configs"].items()},
            etc_netns=[Path(p) for p in data["etc_netns"]],
            etc_netns_created=bool(data["etc_netns_created"]),
            created=data["created"],
        )

    def hosts(self) -> dict[str, HostState]:
        """Every NTM end by daemon name: the nodes, then the adapters."""
        return {**self.nodes, **self.adapters}

    def adapter_gns(self, adapter: str) -> list[GnState]:
        """The GNs on `adapter`'s link, in order."""
        return [self.gns[ns] for ns in self.adapters[adapter].gns]


def state_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATE_FILE


def load_state(run_dir: Path) -> LabState | None:
    try:
        return LabState.from_json(json.loads(state_path(run_dir).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_state(state: LabState) -> None:
    path = state_path(state.run_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- planning


def _daemon_spec(ns: str, cmd: list[str], log: Path, output: Path | None = None) -> DaemonSpec:
    """`log`: the daemon's log; `output`: where its stdout/stderr go (default: `log`)."""
    return DaemonSpec(ns, cmd, log, output or log)


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


def _role_cmd(role: str, config: Path) -> list[str]:
    return [sys.executable, "-m", "ntma", role, "--config", str(config)]


def daemon_specs(run_dir: Path, hosts: Iterable[HostState]) -> dict[str, DaemonSpec]:
    """Every daemon of the lab, in start order (web host, DNS, DC, RS, then the NTM ends
    `hosts`: nodes, adapters)."""
    logs, configs = run_dir / "logs", run_dir / "configs"
    www = ["--directory", str(run_dir / "www")]
    web = [sys.executable, "-m", "http.server", "80", "--bind", WEB_IP, *www]
    specs = {
        "web": _daemon_spec(WEB_NS, web, logs / "web.log"),
        "dnsmasq": _daemon_spec(
            WEB_NS, dnsmasq_cmd(logs), logs / "dnsmasq.log", logs / "dnsmasq.stderr"
        ),
        "dc": _daemon_spec(DC_NS, _role_cmd("dc", configs / "dc.toml"), logs / "dc.log"),
        "relay": _daemon_spec(
            RS_NS, _role_cmd("relay", configs / "relay.toml"), logs / "relay.log"
        ),
    }
    for host in hosts:
        role = "adapter" if isinstance(host, AdapterState) else "node"
        cmd = _role_cmd(role, configs / f"{host.name}.toml")
        specs[host.name] = _daemon_spec(host.ns, cmd, logs / f"{host.name}.log")
    return specs


def dhcp_daemon(gn: GnState) -> str:
    """The name of GN `gn`'s DHCP client among the lab's daemons (`lab up --dhcp`)."""
    return f"dhcp-{gn.name}"


def dhcp_client_cmd(run_dir: Path, gn: GnState) -> list[str]:
    """`gn`'s DHCP client, in the foreground and retrying until it has a lease."""
    if gn.dhcp_client == "udhcpc":  # busybox's default script sets address, route, DNS
        return [shutil.which("udhcpc") or "udhcpc", "-f", "-i", gn.interface, "-t", "5", "-T", "2"]
    files = run_dir / "dhcp" / gn.name
    return [
        shutil.which("dhclient") or "dhclient",
        "-d",
        "-pf",
        f"{files}.pid",
        "-lf",
        f"{files}.leases",
        gn.interface,
    ]


def dhcp_specs(run_dir: Path, gns: Iterable[GnState]) -> dict[str, DaemonSpec]:
    logs = run_dir / "logs"
    return {
        dhcp_daemon(gn): _daemon_spec(
            gn.ns, dhcp_client_cmd(run_dir, gn), logs / f"{dhcp_daemon(gn)}.log"
        )
        for gn in gns
    }


def host_state(node: NodeDef, nat: str, slot: int = 1) -> HostState:
    """`node` attached as `nat` on its network `slot` (a "same" guest: on its NAT owner's
    slot 1, where `lab up` puts the owner)."""
    behind_nat = nat != "none"
    node = node.at_slot(slot) if nat != SAME_NAT else node
    router, host = node, 2
    if nat == SAME_NAT:
        assert node.same_nat_as is not None
        router = NTM_DEFS[node.same_nat_as]
        host = node.same_nat_host
    kind = network_kind(nat)
    return HostState(
        name=node.name,
        ns=node.ns,
        fqdn=node.fqdn,
        nat=nat,
        nat_ns=router.nat_ns if behind_nat else None,
        address=f"{router.lan_net}.{host}" if behind_nat else node.direct_ip,
        public_address=router.wan_ip if behind_nat else node.direct_ip,
        port=node.port,
        slot=node.slot,
        slots={kind: node.slot} if kind else {},
    )


def adapter_state(
    adapter: NodeDef, nat: str, autostart: bool, gns: Iterable[GnDef] = ()
) -> AdapterState:
    host = host_state(adapter, nat)
    fields_ = {f.name: getattr(host, f.name) for f in fields(host)}
    mine = [g.ns for g in gns] or [GN_NS]
    switch = switch_ns(adapter) if len(mine) > 1 else None
    return AdapterState(**fields_, gn_ns=mine[0], autostart=autostart, gns=mine, switch_ns=switch)


def gn_state(gn: GnDef, adapter: AdapterState) -> GnState:
    return GnState(
        ns=gn.ns,
        adapter_ns=adapter.ns,
        resolv_conf=ETC_NETNS / gn.ns / "resolv.conf",
        name=gn.label,
        fqdn=gn.fqdn,
        mac=gn.mac,
        adapter=adapter.name,
        switch_ns=adapter.switch_ns,
        dhcp_client=gn.dhcp_client,
    )


def new_state(
    run_dir: Path,
    topo: Topology,
    nat_by_node: dict[str, str],
    *,
    adapter_autostart: bool = True,
    gns: int = 1,
    adapters: int = 1,
    dhcp: bool = False,
    vip6: bool = False,
    nets: dict[str, str] | None = None,
) -> LabState:
    """The lab as planned (`build_topology` with the same layout gave `topo`); `dhcp`: a
    DHCP client daemon in every GN (`lab up --dhcp`); `vip6`: the DC hands out IPv6 VIPs
    (`lab up --vip6`; off by default, as clients then prefer IPv6 to a server that may
    listen on IPv4 only)."""
    nat_of = resolve_nat_modes(nat_by_node, adapters)
    every_gn = lab_gns(gns, adapters)
    nodes = {n.name: host_state(n, nat_of[n.name]) for n in NODE_DEFS}
    adapter_states = {
        a.name: adapter_state(
            a, nat_of[a.name], adapter_autostart, [g for g in every_gn if g.adapter == a.name]
        )
        for a in ADAPTER_DEFS[:adapters]
    }
    for name, net in (nets or {}).items():
        (nodes.get(name) or adapter_states[name]).net = net
    gn_states = {g.ns: gn_state(g, adapter_states[g.adapter]) for g in every_gn}
    inet = next(ns for ns in topo.namespaces if ns.name == INET_NS)
    blocked = list(inet.block_udp_between or ())
    daemons = daemon_specs(Path(run_dir), [*nodes.values(), *adapter_states.values()])
    if dhcp:
        daemons |= dhcp_specs(Path(run_dir), gn_states.values())
    return LabState(
        run_dir=Path(run_dir),
        nat=nat_of,
        block_direct=BlockDirect(enabled=bool(blocked), addresses=blocked),
        namespaces={ns.name: ns for ns in topo.namespaces},
        planned_addresses=topo.addresses(),
        nodes=nodes,
        adapters=adapter_states,
        gns=gn_states,
        daemons=daemons,
        dc=DcState(
            vip6_pool=VIP6_POOL if vip6 else None,
            ipv6=any(net != "v4" for net in (nets or {}).values()),
        ),
    )


# --------------------------------------------------------------------------- moves


def record_attachment(
    state: LabState, host: HostState, attachment: Attachment, removed: Iterable[str]
) -> None:
    """The state once `host` (its new record) is attached as `attachment`, the router
    namespaces `removed` gone: its record and NAT mode, the planned namespaces and addresses."""
    if host.name in state.adapters:
        assert isinstance(host, AdapterState)
        state.adapters[host.name] = host
    else:
        state.nodes[host.name] = host
    state.nat[host.name] = host.nat
    for ns in removed:
        state.namespaces.pop(ns, None)
        state.planned_addresses.pop(ns, None)
    planned = Topology((attachment.host, *attachment.routers), attachment.links).addresses()
    for ns in (attachment.host, *attachment.routers):
        state.namespaces[ns.name] = ns
        kept = state.planned_addresses.get(ns.name, {}) if ns is attachment.host else {}
        state.planned_addresses[ns.name] = {**kept, **planned[ns.name]}
