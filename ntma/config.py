"""TOML configuration for each role, validated into dataclasses.

Every problem becomes a ConfigError naming the key and the fix; the CLI prints each on one
line and exits with status 2. A loader reports them all, not only the first: each rule below
raises where it is written, and the loader takes each field under `_Doc.take`
(config_doc.py), which records the problem and goes on; keys no rule asked for are typos.
`ntma check` prints the list (config_check.py). `config_write.write_config` is the loaders'
inverse: the lab builds its configs as these dataclasses and writes them with it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_doc import ConfigError, ConfigErrors, _Doc, _Section, loading, parse_endpoint
from .dc.admission import SUBZONE_PREFIX, SubZone
from .dc.vip6 import Vip6Plan
from .proto.buffer import CodecError, Endpoint
from .proto.crypto import StaticKey
from .proto.ether import mac_text
from .proto.fields_v2 import check_name
from .proto.inbound import parse_rule
from .proto.names import normalize_fqdn

__all__ = ["ConfigError", "ConfigErrors", "parse_endpoint"]  # re-exported: callers import here


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    stats_interval: float = 10.0


@dataclass(frozen=True)
class DcConfig:
    listen: Endpoint
    key: StaticKey
    database: Path
    zone: str
    vip_pool: ipaddress.IPv4Network
    dns_listen: Endpoint | None
    keepalive_interval: int
    keepalive_misses: int
    admission: dict[str, bytes]
    log: LogConfig
    probe_listen: Endpoint | None = None  # second port: tells cone from symmetric NATs
    # A third port, only ever sending: tells a stateful firewall from none (dc/probes.py).
    filter_probe_listen: Endpoint | None = None
    relays: list[tuple[Endpoint, bytes]] = field(default_factory=list)  # (address, key)
    subzones: tuple[SubZone, ...] = ()  # "*.site1.ntm.example" = { key, max_names }
    vip6_pool: ipaddress.IPv6Network | None = None  # a ULA prefix: IPv6 VIPs (dc/vip6.py)
    control_socket: Path | None = None  # where `ntma status` asks; None: no socket
    metrics_listen: Endpoint | None = None  # Prometheus metrics over HTTP; None: off


@dataclass(frozen=True)
class NodeConfig:
    fqdn: str
    key: StaticKey
    listen: Endpoint
    tun_name: str
    mtu: int
    dc_address: Endpoint
    dc_public_key: bytes
    dns_listen: Endpoint
    dns_upstream: Endpoint | None
    ntm_suffixes: list[str] = field(default_factory=list)
    log: LogConfig = field(default_factory=LogConfig)
    key_path: Path | None = field(default=None, compare=False)  # its .ts file sits beside
    dc_address6: Endpoint | None = None  # the DC in the other family: kept alive there too
    control_socket: Path | None = None  # where `ntma status` asks; None: no socket
    metrics_listen: Endpoint | None = None  # Prometheus metrics over HTTP; None: off


def _log(doc: _Doc) -> LogConfig:
    sec = doc.section("log", required=False)
    return doc.make(
        LogConfig,
        level=lambda: _log_level(sec),
        stats_interval=lambda: sec.positive("stats_interval", float, 10.0),
    )


def _log_level(sec: _Section) -> str:
    level = sec.get("level", str, "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            "log.level", f"unknown level {level!r}", "use debug, info, warning or error"
        )
    return level


def _tunnel_mtu(sec: _Section) -> int:
    mtu = sec.positive("mtu", int, 1400)
    if not 576 <= mtu <= 1440:
        raise ConfigError(
            f"{sec.name}.mtu",
            f"{mtu} is out of range",
            "use 576..1440 (1500 minus the tunnel's 60 bytes of overhead)",
        )
    return mtu


def _suffixes(dns: _Section) -> list[str]:
    suffixes = dns.get("ntm_suffixes", list, [])
    if not all(isinstance(s, str) and s for s in suffixes):
        raise ConfigError(
            "dns.ntm_suffixes", "must be a list of strings", 'write it like ["ntm.example"]'
        )
    return [normalize_fqdn(s) for s in suffixes]


def load_dc_config(path: Path) -> DcConfig:
    with loading(path) as doc:
        dc = doc.section("dc")
        pool = doc.take(lambda: _vip_pool(dc))
        admission, subzones = _admission(doc, doc.section("admission", required=False, free=True))
        return doc.build(
            DcConfig,
            listen=lambda: dc.endpoint("listen"),
            key=lambda: dc.key_file("private_key_file"),
            database=lambda: _database(dc),
            zone=lambda: normalize_fqdn(dc.get("zone", str)),
            vip_pool=pool,
            dns_listen=lambda: dc.endpoint("dns_listen", None, default_port=53),
            keepalive_interval=lambda: dc.positive("keepalive_interval", int, 15),
            keepalive_misses=lambda: dc.positive("keepalive_misses", int, 3),
            admission=admission,
            log=lambda: _log(doc),
            probe_listen=lambda: _probe_listen(dc),
            filter_probe_listen=lambda: _filter_probe_listen(dc),
            relays=lambda: _relays(doc),
            subzones=subzones,
            vip6_pool=lambda: _vip6_pool(dc, pool),
            control_socket=lambda: _control_socket(dc),
            metrics_listen=lambda: dc.endpoint("metrics_listen", None),
        )


UNIX_PATH_MAX = 107  # bytes in sun_path, less its NUL


def _control_socket(sec: _Section) -> Path | None:
    """control_socket = "PATH" in the role's table: the AF_UNIX socket `ntma status` asks
    (relative to the config's directory; the daemon makes its directory). Unset: none."""
    path = sec.path("control_socket", None)
    if path is not None and len(str(path).encode()) > UNIX_PATH_MAX:
        raise ConfigError(
            sec._key("control_socket"),
            f"{path} is longer than {UNIX_PATH_MAX} bytes, too long for a Unix socket",
            f'pick a shorter path, like "/run/ntma/{sec.name}.sock"',
        )
    return path


def _vip_pool(dc: _Section) -> ipaddress.IPv4Network:
    try:
        pool = ipaddress.IPv4Network(dc.get("vip_pool", str))
    except ValueError as exc:
        raise ConfigError("dc.vip_pool", str(exc), 'write a network like "10.99.0.0/16"') from None
    if pool.num_addresses < 8:
        raise ConfigError("dc.vip_pool", "too small", "use a prefix of /29 or larger")
    return pool


def _probe_listen(dc: _Section) -> Endpoint | None:
    """The NAT-type probe port: one socket of its own, so never one `listen` also binds;
    its address is sent to nodes, so one of the DC's own (with a dual-stack `listen` the
    DC hears the port in both families)."""
    probe = dc.endpoint("probe_listen", None)
    if probe is not None and ipaddress.ip_address(probe[0]).is_unspecified:
        raise ConfigError(
            "dc.probe_listen", "nodes are sent this address", "write the DC's own address"
        )
    try:
        host, port = dc.endpoint("listen")
    except ConfigError:  # reported as listen's own problem
        return probe
    if probe is not None and probe[1] == port and host in (probe[0], "0.0.0.0", "::"):
        raise ConfigError("dc.probe_listen", f"{port} is listen's port too", "use another port")
    return probe


def _filter_probe_listen(dc: _Section) -> Endpoint | None:
    """The filter port (dc/probes.py): it only sends, from a port nodes never send to."""
    filter_probe = dc.endpoint("filter_probe_listen", None)
    if filter_probe is None:
        return None
    probe = dc.endpoint("probe_listen", None)
    if probe is None:
        raise ConfigError(
            "dc.filter_probe_listen", "it answers PROBEs", "set dc.probe_listen as well"
        )
    try:
        listen_port = dc.endpoint("listen")[1]
    except ConfigError:  # reported as listen's own problem
        listen_port = None
    if filter_probe[1] in (probe[1], listen_port):
        raise ConfigError(
            "dc.filter_probe_listen",
            "nodes send to that port",
            "choose a port other than listen's and probe_listen's",
        )
    return filter_probe


def _database(dc: _Section) -> Path:
    if dc.get("database", str, "dc.sqlite") == ":memory:":
        return Path(":memory:")
    return dc.state_path("database", "dc.sqlite")


def _vip6_pool(dc: _Section, pool: ipaddress.IPv4Network | None) -> ipaddress.IPv6Network | None:
    text = dc.get("vip6_pool", str, None)
    if text is None:
        return None
    try:
        pool6 = ipaddress.IPv6Network(text)
        if pool is not None:  # a bad IPv4 pool was reported already
            Vip6Plan(pool, pool6)
    except ValueError as exc:
        fix = 'write a ULA prefix like "fd00:99::/112"'
        raise ConfigError("dc.vip6_pool", str(exc), fix) from None
    return pool6


def _admission(doc: _Doc, sec: _Section) -> tuple[dict[str, bytes], tuple[SubZone, ...]]:
    """name = "key", or "*.sub.zone" = { key = "...", max_names = 64 } (docs/protocol.md
    5.1). One key may be admitted for several names: one party holds them all."""
    names: dict[str, bytes] = {}
    zones: list[SubZone] = []
    for name, value in sec.data.items():
        where = f"{sec.name}.{name}"
        if not name.startswith(SUBZONE_PREFIX):
            entry = doc.take(lambda n=name, w=where: (_admitted_name(n, w), sec.public_key(n)))
            names.update([entry] if entry else [])
            continue
        zone = doc.take(lambda n=name, v=value, w=where: _subzone(doc, sec, n, v, w))
        zones += [zone] if zone else []
    return names, tuple(zones)


def _subzone(doc: _Doc, sec: _Section, name: str, value: Any, where: str) -> SubZone:
    suffix = _admitted_name(name.removeprefix(SUBZONE_PREFIX), where)
    if not isinstance(value, dict):
        fix = 'write { key = "...", max_names = 64 }'
        raise ConfigError(where, "a sub-zone needs a table", fix)
    table = doc.checked(_Section(value, where, sec.base))
    return doc.make(
        SubZone,
        suffix=suffix,
        key=lambda: table.public_key("key"),
        max_names=lambda: table.positive("max_names", int, 64),
    )


def _admitted_name(name: str, where: str) -> str:
    fqdn = normalize_fqdn(name)
    try:
        check_name(fqdn)
    except CodecError as exc:
        raise ConfigError(where, str(exc), "use a name of a-z, 0-9 and - labels") from None
    return fqdn


def _relays(doc: _Doc) -> list[tuple[Endpoint, bytes]]:
    tables = doc.raw("relays", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(
            "relays",
            "must be an array of tables",
            "write each relay as [[relays]] with address and public_key",
        )
    relays = []
    for index, table in enumerate(tables):
        sec = doc.checked(_Section(table, f"relays[{index}]", doc.base))
        address = doc.take(lambda s=sec: s.endpoint("address"))
        key = doc.take(lambda s=sec: s.public_key("public_key"))
        relays.append((address, key))
    return relays


def load_node_config(path: Path) -> NodeConfig:
    with loading(path) as doc:
        node, dc = doc.section("node"), doc.section("dc")
        dns = doc.section("dns", required=False)
        return doc.build(
            NodeConfig,
            fqdn=lambda: _admitted_name(node.get("fqdn", str), "node.fqdn"),
            key=lambda: node.key_file("private_key_file"),
            listen=lambda: node.endpoint("listen", "0.0.0.0:7401"),
            tun_name=lambda: _interface_name(node, "tun_name", "ntm0"),
            mtu=lambda: _tunnel_mtu(node),
            dc_address=lambda: dc.endpoint("address"),
            dc_public_key=lambda: dc.public_key("public_key"),
            dns_listen=lambda: dns.endpoint("listen", "127.0.0.1:53", default_port=53),
            dns_upstream=lambda: dns.endpoint("upstream", None, default_port=53),
            ntm_suffixes=lambda: _suffixes(dns),
            log=lambda: _log(doc),
            key_path=lambda: node.path("private_key_file"),
            dc_address6=lambda: dc.endpoint("address6", None),
            control_socket=lambda: _control_socket(node),
            metrics_listen=lambda: node.endpoint("metrics_listen", None),
        )


@dataclass(frozen=True)
class DeviceConfig:
    """A device behind the adapter, by MAC ([devices] in the adapter's config)."""

    mac: bytes
    fqdn: str
    inbound: tuple[str, ...] | None = None  # rules as written ("tcp/80"); None: open


@dataclass(frozen=True)
class AdapterConfig:
    fqdn: str  # the adapter's REGISTER name; the default device's name
    key: StaticKey
    gn_interface: str
    listen: Endpoint
    passthrough_tun: str
    mtu: int
    lease_time: int
    dc_address: Endpoint
    dc_public_key: bytes
    dns_upstream: Endpoint | None
    ntm_suffixes: list[str]
    log: LogConfig
    key_path: Path | None = field(default=None, compare=False)  # its .ts file sits beside
    devices: tuple[DeviceConfig, ...] = ()
    default_device: bool = True  # the first device not in `devices` is named `fqdn`
    host_names: str | None = None  # zone for names from DHCP options 12 and 81; None: off
    inbound: tuple[str, ...] | None = None  # the rule of devices not in `devices`
    max_devices: int = 64
    leases_file: Path | None = None  # MAC -> name across restarts; default beside the key
    dc_address6: Endpoint | None = None  # the DC in the other family: kept alive there too
    control_socket: Path | None = None  # where `ntma status` asks; None: no socket
    metrics_listen: Endpoint | None = None  # Prometheus metrics over HTTP; None: off


def _interface_name(sec: _Section, key: str, default: Any = ...) -> str:
    name = sec.get(key, str, default)
    if not 0 < len(name) < 16:
        raise ConfigError(sec._key(key), "must be 1..15 characters", "pick a shorter name")
    return name


def load_adapter_config(path: Path) -> AdapterConfig:
    with loading(path) as doc:
        adapter, dc = doc.section("adapter"), doc.section("dc")
        dns = doc.section("dns", required=False)
        return doc.build(
            AdapterConfig,
            fqdn=lambda: _admitted_name(adapter.get("fqdn", str), "adapter.fqdn"),
            key=lambda: adapter.key_file("private_key_file"),
            gn_interface=lambda: _interface_name(adapter, "gn_interface"),
            listen=lambda: adapter.endpoint("listen", "0.0.0.0:7401"),
            passthrough_tun=lambda: _interface_name(adapter, "passthrough_tun", "ntmpt0"),
            mtu=lambda: _tunnel_mtu(adapter),
            lease_time=lambda: adapter.positive("lease_time", int, 3600),
            dc_address=lambda: dc.endpoint("address"),
            dc_public_key=lambda: dc.public_key("public_key"),
            dns_upstream=lambda: dns.endpoint("upstream", None, default_port=53),
            ntm_suffixes=lambda: _suffixes(dns),
            log=lambda: _log(doc),
            key_path=lambda: adapter.path("private_key_file"),
            devices=lambda: _devices(doc),
            default_device=lambda: adapter.get("default_device", bool, True),
            host_names=lambda: _host_names(adapter),
            inbound=lambda: _inbound(adapter.get("inbound", list, None), "adapter.inbound"),
            max_devices=lambda: _max_devices(adapter),
            leases_file=lambda: adapter.state_path("leases_file", None),
            dc_address6=lambda: dc.endpoint("address6", None),
            control_socket=lambda: _control_socket(adapter),
            metrics_listen=lambda: adapter.endpoint("metrics_listen", None),
        )


def _mac(text: str, where: str) -> bytes:
    parts = text.split(":")
    try:
        mac = bytes(int(p, 16) for p in parts if len(p) == 2)
    except ValueError:
        mac = b""
    if len(mac) != 6 or len(parts) != 6:
        raise ConfigError(where, f"{text!r} is not a MAC address", 'write "02:00:5e:00:00:01"')
    return mac


def _inbound(rules: list | None, where: str) -> tuple[str, ...] | None:
    if rules is None:
        return None
    for rule in rules:
        try:
            parse_rule(rule if isinstance(rule, str) else "")
        except ValueError as exc:
            raise ConfigError(where, str(exc), 'write rules like ["tcp/80", "udp/5353"]') from None
    return tuple(rule.strip().lower() for rule in rules)


def _devices(doc: _Doc) -> tuple[DeviceConfig, ...]:
    """[devices]: "MAC" = "name" or "MAC" = { name = "...", inbound = [...] }."""
    table = doc.raw("devices", {})
    if not isinstance(table, dict):
        raise ConfigError("devices", "must be a table", 'write [devices] then "MAC" = "NAME"')
    devices = [doc.take(lambda m=m, v=v: _device(doc, m, v)) for m, v in table.items()]
    names: set[str] = set()
    for device in filter(None, devices):
        if device.fqdn in names:
            where = f"devices.{mac_text(device.mac)}"
            doc.take(lambda w=where, d=device: _named_twice(w, d.fqdn))
        names.add(device.fqdn)
    return tuple(devices)


def _device(doc: _Doc, mac: str, value: Any) -> DeviceConfig:
    where = f"devices.{mac}"
    entry = doc.checked(
        _Section(value if isinstance(value, dict) else {"name": value}, where, doc.base)
    )
    return doc.make(
        DeviceConfig,
        mac=lambda: _mac(mac, where),
        fqdn=lambda: _admitted_name(entry.get("name", str, fix='write "MAC" = "NAME"'), where),
        inbound=lambda: _inbound(entry.get("inbound", list, None), where),
    )


def _named_twice(where: str, fqdn: str) -> None:
    raise ConfigError(where, f"{fqdn} is named twice", "give each device its own name")


def _max_devices(adapter: _Section) -> int:
    count = adapter.positive("max_devices", int, 64)
    if count > 255:  # the names one DC session may hold besides its own (protocol 5.1)
        raise ConfigError("adapter.max_devices", f"{count} is too many", "use 1..255")
    return count


def _host_names(adapter: _Section) -> str | None:
    zone = adapter.get("host_names", str, None)
    return None if zone is None else _admitted_name(zone, "adapter.host_names")


@dataclass(frozen=True)
class RelayConfig:
    listen: Endpoint
    key: StaticKey
    dc_public_key: bytes
    idle_timeout: float
    log: LogConfig
    control_socket: Path | None = None  # where `ntma status` asks; None: no socket
    metrics_listen: Endpoint | None = None  # Prometheus metrics over HTTP; None: off


def load_relay_config(path: Path) -> RelayConfig:
    with loading(path) as doc:
        relay, dc = doc.section("relay"), doc.section("dc")
        return doc.build(
            RelayConfig,
            listen=lambda: relay.endpoint("listen"),
            key=lambda: relay.key_file("private_key_file"),
            dc_public_key=lambda: dc.public_key("public_key"),
            idle_timeout=lambda: relay.positive("idle_timeout", float, 60.0),
            log=lambda: _log(doc),
            control_socket=lambda: _control_socket(relay),
            metrics_listen=lambda: relay.endpoint("metrics_listen", None),
        )
