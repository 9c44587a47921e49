"""TOML configuration for each role, validated into dataclasses.

Every problem becomes a ConfigError naming the key and the fix; the CLI prints
it on one line and exits with status 2. `config_write.write_config` is the loaders'
inverse: the lab builds its configs as these dataclasses and writes them with it.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dc.admission import SUBZONE_PREFIX, SubZone
from .dc.vip6 import Vip6Plan
from .proto.buffer import CodecError, Endpoint
from .proto.crypto import KeyError_, StaticKey, decode_key, load_key_file
from .proto.fields_v2 import check_name
from .proto.inbound import parse_rule
from .proto.names import normalize_fqdn


class ConfigError(Exception):
    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"config key '{key}': {problem}; {fix}")
        self.key = key


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
    relays: list[tuple[Endpoint, bytes]] = field(default_factory=list)  # (address, key)
    subzones: tuple[SubZone, ...] = ()  # "*.site1.ntm.example" = { key, max_names }
    vip6_pool: ipaddress.IPv6Network | None = None  # a ULA prefix: IPv6 VIPs (dc/vip6.py)
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
    metrics_listen: Endpoint | None = None  # Prometheus metrics over HTTP; None: off


class _Section:
    """Typed access to one TOML table, with the dotted key for error messages."""

    def __init__(self, data: dict[str, Any], name: str, base: Path) -> None:
        self.data, self.name, self.base = data, name, base

    def _key(self, key: str) -> str:
        return f"{self.name}.{key}"

    def get(self, key: str, kind: type, default: Any = ..., fix: str = "") -> Any:
        if key not in self.data:
            if default is ...:
                raise ConfigError(self._key(key), "missing", fix or f"add {key} to [{self.name}]")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                self._key(key),
                f"expected {kind.__name__}, got {value!r}",
                fix or f"set {key} to a {kind.__name__}",
            )
        return value

    def endpoint(self, key: str, default: Any = ..., default_port: int | None = None) -> Any:
        text = self.get(key, str, default, fix=f'set {key} = "ADDRESS:PORT"')
        return None if text is None else parse_endpoint(text, self._key(key), default_port)

    def positive(self, key: str, kind: type, default: Any = ...) -> Any:
        value = self.get(key, kind, default)
        if not value > 0 or value == float("inf"):  # also refuses nan and inf
            raise ConfigError(
                self._key(key), f"must be positive, got {value}", f"set {key} to a number above 0"
            )
        return value

    def path(self, key: str, default: Any = ...) -> Path:
        path = Path(self.get(key, str, default, fix=f'set {key} = "PATH"'))
        return path if path.is_absolute() else self.base / path

    def key_file(self, key: str) -> StaticKey:
        path = self.path(key)
        try:
            return load_key_file(path)
        except FileNotFoundError:
            raise ConfigError(
                self._key(key), f"no such file {path}", "create one with 'ntma keygen --out FILE'"
            ) from None
        except (KeyError_, ValueError) as exc:
            raise ConfigError(
                self._key(key),
                f"{path} is not an ntma key file ({exc})",
                "create one with 'ntma keygen --out FILE'",
            ) from None
        except OSError as exc:
            raise ConfigError(
                self._key(key),
                f"cannot read {path} ({exc.strerror})",
                "point it at a key file made with 'ntma keygen --out FILE'",
            ) from None

    def public_key(self, key: str) -> bytes:
        try:
            return decode_key(self.get(key, str))
        except KeyError_ as exc:
            raise ConfigError(
                self._key(key), str(exc), "use the base64 public key printed by 'ntma keygen'"
            ) from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_endpoint(text: str, key: str, default_port: int | None = None) -> Endpoint:
    bare = text.startswith("[") and text.endswith("]")
    host, sep, port_text = text.rpartition(":")
    if bare or not sep or (sep and _is_ip(text)):  # no port given: "[::1]", "::1", "192.0.2.1"
        host, port_text = text, str(default_port) if default_port else ""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        if not port_text.isdigit():
            raise ValueError
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(
            key, f"{text!r} is not ADDRESS:PORT", 'write it like "198.51.100.10:7400"'
        ) from None
    return (str(address), port)


def _load(path: Path) -> tuple[dict[str, Any], Path]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f), path.resolve().parent
    except FileNotFoundError:
        raise ConfigError(
            "--config", f"no such file {path}", "pass an existing TOML file"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            "--config", f"{path} is not valid TOML ({exc})", "fix the syntax at the position shown"
        ) from None
    except OSError as exc:
        raise ConfigError(
            "--config", f"cannot read {path} ({exc.strerror})", "pass a readable TOML file"
        ) from None


def _section(data: dict[str, Any], name: str, base: Path, required: bool = True) -> _Section:
    table = data.get(name)
    if table is None and not required:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError(name, "missing table", f"add a [{name}] table")
    return _Section(table, name, base)


def _log(data: dict[str, Any], base: Path) -> LogConfig:
    sec = _section(data, "log", base, required=False)
    level = sec.get("level", str, "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            "log.level", f"unknown level {level!r}", "use debug, info, warning or error"
        )
    return LogConfig(level, sec.positive("stats_interval", float, 10.0))


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
    data, base = _load(path)
    dc = _section(data, "dc", base)
    try:
        pool = ipaddress.IPv4Network(dc.get("vip_pool", str))
    except ValueError as exc:
        raise ConfigError("dc.vip_pool", str(exc), 'write a network like "10.99.0.0/16"') from None
    if pool.num_addresses < 8:
        raise ConfigError("dc.vip_pool", "too small", "use a prefix of /29 or larger")
    admission, subzones = _admission(_section(data, "admission", base, required=False))
    database = dc.get("database", str, "dc.sqlite")
    return DcConfig(
        listen=dc.endpoint("listen"),
        key=dc.key_file("private_key_file"),
        database=Path(database) if database == ":memory:" else dc.path("database", "dc.sqlite"),
        zone=normalize_fqdn(dc.get("zone", str)),
        vip_pool=pool,
        dns_listen=dc.endpoint("dns_listen", None, default_port=53),
        keepalive_interval=dc.positive("keepalive_interval", int, 15),
        keepalive_misses=dc.positive("keepalive_misses", int, 3),
        admission=admission,
        log=_log(data, base),
        probe_listen=dc.endpoint("probe_listen", None),
        relays=_relays(data, base),
        subzones=subzones,
        vip6_pool=_vip6_pool(dc, pool),
        metrics_listen=dc.endpoint("metrics_listen", None),
    )


def _vip6_pool(dc: _Section, pool: ipaddress.IPv4Network) -> ipaddress.IPv6Network | None:
    text = dc.get("vip6_pool", str, None)
    if text is None:
        return None
    try:
        pool6 = ipaddress.IPv6Network(text)
        Vip6Plan(pool, pool6)
    except ValueError as exc:
        fix = 'write a ULA prefix like "fd00:99::/112"'
        raise ConfigError("dc.vip6_pool", str(exc), fix) from None
    return pool6


def _admission(sec: _Section) -> tuple[dict[str, bytes], tuple[SubZone, ...]]:
    """name = "key", or "*.sub.zone" = { key = "...", max_names = 64 } (docs/protocol.md
    5.1). One key may be admitted for several names: one party holds them all."""
    names: dict[str, bytes] = {}
    zones: list[SubZone] = []
    for name, value in sec.data.items():
        where = f"{sec.name}.{name}"
        if not name.startswith(SUBZONE_PREFIX):
            names[_admitted_name(name, where)] = sec.public_key(name)
            continue
        suffix = _admitted_name(name.removeprefix(SUBZONE_PREFIX), where)
        if not isinstance(value, dict):
            fix = 'write { key = "...", max_names = 64 }'
            raise ConfigError(where, "a sub-zone needs a table", fix)
        table = _Section(value, where, sec.base)
        zones.append(
            SubZone(suffix, table.public_key("key"), table.positive("max_names", int, 64))
        )
    return names, tuple(zones)


def _admitted_name(name: str, where: str) -> str:
    fqdn = normalize_fqdn(name)
    try:
        check_name(fqdn)
    except CodecError as exc:
        raise ConfigError(where, str(exc), "use a name of a-z, 0-9 and - labels") from None
    return fqdn


def _relays(data: dict[str, Any], base: Path) -> list[tuple[Endpoint, bytes]]:
    tables = data.get("relays", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(
            "relays",
            "must be an array of tables",
            "write each relay as [[relays]] with address and public_key",
        )
    relays = []
    for index, table in enumerate(tables):
        sec = _Section(table, f"relays[{index}]", base)
        relays.append((sec.endpoint("address"), sec.public_key("public_key")))
    return relays


def load_node_config(path: Path) -> NodeConfig:
    data, base = _load(path)
    node = _section(data, "node", base)
    dc = _section(data, "dc", base)
    dns = _section(data, "dns", base, required=False)
    mtu = _tunnel_mtu(node)
    return NodeConfig(
        fqdn=normalize_fqdn(node.get("fqdn", str)),
        key=node.key_file("private_key_file"),
        listen=node.endpoint("listen", "0.0.0.0:7401"),
        tun_name=_interface_name(node, "tun_name", "ntm0"),
        mtu=mtu,
        dc_address=dc.endpoint("address"),
        dc_public_key=dc.public_key("public_key"),
        dns_listen=dns.endpoint("listen", "127.0.0.1:53", default_port=53),
        dns_upstream=dns.endpoint("upstream", None, default_port=53),
        ntm_suffixes=_suffixes(dns),
        log=_log(data, base),
        key_path=node.path("private_key_file"),
        dc_address6=dc.endpoint("address6", None),
        metrics_listen=node.endpoint("metrics_listen", None),
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
    metrics_listen: Endpoint | None = None  # Prometheus metrics over HTTP; None: off


def _interface_name(sec: _Section, key: str, default: Any = ...) -> str:
    name = sec.get(key, str, default)
    if not 0 < len(name) < 16:
        raise ConfigError(sec._key(key), "must be 1..15 characters", "pick a shorter name")
    return name


def load_adapter_config(path: Path) -> AdapterConfig:
    data, base = _load(path)
    adapter = _section(data, "adapter", base)
    dc = _section(data, "dc", base)
    dns = _section(data, "dns", base, required=False)
    mtu = _tunnel_mtu(adapter)
    return AdapterConfig(
        fqdn=normalize_fqdn(adapter.get("fqdn", str)),
        key=adapter.key_file("private_key_file"),
        gn_interface=_interface_name(adapter, "gn_interface"),
        listen=adapter.endpoint("listen", "0.0.0.0:7401"),
        passthrough_tun=_interface_name(adapter, "passthrough_tun", "ntmpt0"),
        mtu=mtu,
        lease_time=adapter.positive("lease_time", int, 3600),
        dc_address=dc.endpoint("address"),
        dc_public_key=dc.public_key("public_key"),
        dns_upstream=dns.endpoint("upstream", None, default_port=53),
        ntm_suffixes=_suffixes(dns),
        log=_log(data, base),
        key_path=adapter.path("private_key_file"),
        devices=_devices(data.get("devices", {})),
        default_device=adapter.get("default_device", bool, True),
        host_names=_host_names(adapter),
        inbound=_inbound(adapter.get("inbound", list, None), "adapter.inbound"),
        max_devices=_max_devices(adapter),
        leases_file=adapter.path("leases_file", None) if "leases_file" in adapter.data else None,
        dc_address6=dc.endpoint("address6", None),
        metrics_listen=adapter.endpoint("metrics_listen", None),
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


def _devices(table: Any) -> tuple[DeviceConfig, ...]:
    """[devices]: "MAC" = "name" or "MAC" = { name = "...", inbound = [...] }."""
    if not isinstance(table, dict):
        raise ConfigError("devices", "must be a table", 'write [devices] then "MAC" = "NAME"')
    devices, names = [], set()
    for mac_text, value in table.items():
        where = f"devices.{mac_text}"
        entry = value if isinstance(value, dict) else {"name": value}
        name, inbound = entry.get("name"), entry.get("inbound")
        if not isinstance(name, str) or set(entry) - {"name", "inbound"}:
            raise ConfigError(where, "needs a name (and at most inbound)", 'write "MAC" = "NAME"')
        if inbound is not None and not isinstance(inbound, list):
            raise ConfigError(f"{where}.inbound", "must be a list", 'write ["tcp/80"]')
        fqdn = _admitted_name(name, where)
        if fqdn in names:
            raise ConfigError(where, f"{fqdn} is named twice", "give each device its own name")
        names.add(fqdn)
        devices.append(DeviceConfig(_mac(mac_text, where), fqdn, _inbound(inbound, where)))
    return tuple(devices)


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
    metrics_listen: Endpoint | None = None  # Prometheus metrics over HTTP; None: off


def load_relay_config(path: Path) -> RelayConfig:
    data, base = _load(path)
    relay = _section(data, "relay", base)
    dc = _section(data, "dc", base)
    return RelayConfig(
        listen=relay.endpoint("listen"),
        key=relay.key_file("private_key_file"),
        dc_public_key=dc.public_key("public_key"),
        idle_timeout=relay.positive("idle_timeout", float, 60.0),
        log=_log(data, base),
        metrics_listen=relay.endpoint("metrics_listen", None),
    )
