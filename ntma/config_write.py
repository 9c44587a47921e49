"""Writing configs: the loaders' inverse (ntma.config reads). The lab builds its configs as
ntma.config's dataclasses and writes them with `write_config` (one schema, round-trip tested).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from .config import AdapterConfig, DcConfig, DeviceConfig, LogConfig, NodeConfig, RelayConfig
from .dc.admission import SUBZONE_PREFIX
from .proto.buffer import Endpoint
from .proto.ether import mac_text

#: Any role's config: what `write_config` writes and the matching `load_*_config` reads.
RoleConfig = DcConfig | NodeConfig | AdapterConfig | RelayConfig
_Sections = dict[str, dict[str, Any] | list[dict[str, Any]]]


def format_endpoint(endpoint: Endpoint) -> str:
    """ "198.51.100.10:7400", "[2001:db8::1]:7400": what `parse_endpoint` reads back."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _log_table(log: LogConfig) -> dict[str, Any]:
    return {"level": log.level, "stats_interval": log.stats_interval}


def _metrics(listen: Endpoint | None) -> dict[str, str]:
    return {} if listen is None else {"metrics_listen": format_endpoint(listen)}


def _dc_sections(c: DcConfig, key_file: Path) -> _Sections:
    dc: dict[str, Any] = {"listen": format_endpoint(c.listen)}
    if c.probe_listen is not None:
        dc["probe_listen"] = format_endpoint(c.probe_listen)
    if c.filter_probe_listen is not None:
        dc["filter_probe_listen"] = format_endpoint(c.filter_probe_listen)
    dc |= {"private_key_file": key_file, "database": c.database, "zone": c.zone}
    dc["vip_pool"] = str(c.vip_pool)
    if c.vip6_pool is not None:
        dc["vip6_pool"] = str(c.vip6_pool)
    if c.dns_listen is not None:
        dc["dns_listen"] = format_endpoint(c.dns_listen)
    dc |= {"keepalive_interval": c.keepalive_interval, "keepalive_misses": c.keepalive_misses}
    dc |= _control(c.control_socket) | _metrics(c.metrics_listen)
    return {
        "dc": dc,
        "admission": {name: _b64(key) for name, key in c.admission.items()}
        | {
            SUBZONE_PREFIX + z.suffix: {"key": _b64(z.key), "max_names": z.max_names}
            for z in c.subzones
        },
        "relays": [{"address": format_endpoint(a), "public_key": _b64(k)} for a, k in c.relays],
        "log": _log_table(c.log),
    }


def _control(path: Path | None) -> dict[str, Any]:
    return {} if path is None else {"control_socket": path}


def _dc_link(
    address: Endpoint, public_key: bytes, address6: Endpoint | None = None
) -> dict[str, Any]:
    link = {"address": format_endpoint(address), "public_key": _b64(public_key)}
    return link | ({"address6": format_endpoint(address6)} if address6 else {})


def _dns_table(upstream: Endpoint | None, suffixes: list[str], **first: str) -> dict[str, Any]:
    dns: dict[str, Any] = dict(first)
    if upstream is not None:
        dns["upstream"] = format_endpoint(upstream)
    return dns | {"ntm_suffixes": list(suffixes)}


def _node_sections(c: NodeConfig, key_file: Path) -> _Sections:
    node = {"fqdn": c.fqdn, "private_key_file": key_file, "listen": format_endpoint(c.listen)}
    return {
        "node": node
        | {"tun_name": c.tun_name, "mtu": c.mtu}
        | _control(c.control_socket)
        | _metrics(c.metrics_listen),
        "dc": _dc_link(c.dc_address, c.dc_public_key, c.dc_address6),
        "dns": _dns_table(c.dns_upstream, c.ntm_suffixes, listen=format_endpoint(c.dns_listen)),
        "log": _log_table(c.log),
    }


def _adapter_sections(c: AdapterConfig, key_file: Path) -> _Sections:
    adapter = {"fqdn": c.fqdn, "private_key_file": key_file, "gn_interface": c.gn_interface}
    adapter |= {"listen": format_endpoint(c.listen), "passthrough_tun": c.passthrough_tun}
    adapter |= {"mtu": c.mtu, "lease_time": c.lease_time}
    adapter |= {"default_device": c.default_device, "max_devices": c.max_devices}
    if c.host_names is not None:
        adapter["host_names"] = c.host_names
    if c.inbound is not None:
        adapter["inbound"] = list(c.inbound)
    if c.leases_file is not None:
        adapter["leases_file"] = c.leases_file
    adapter |= _control(c.control_socket) | _metrics(c.metrics_listen)
    sections: _Sections = {
        "adapter": adapter,
        "dc": _dc_link(c.dc_address, c.dc_public_key, c.dc_address6),
        "dns": _dns_table(c.dns_upstream, c.ntm_suffixes),
    }
    if c.devices:
        sections["devices"] = {mac_text(d.mac): _device_entry(d) for d in c.devices}
    return sections | {"log": _log_table(c.log)}


def _device_entry(device: DeviceConfig) -> str | dict[str, Any]:
    if device.inbound is None:
        return device.fqdn
    return {"name": device.fqdn, "inbound": list(device.inbound)}


def _relay_sections(c: RelayConfig, key_file: Path) -> _Sections:
    relay = {"listen": format_endpoint(c.listen), "private_key_file": key_file}
    return {
        "relay": relay
        | {"idle_timeout": c.idle_timeout}
        | _control(c.control_socket)
        | _metrics(c.metrics_listen),
        "dc": {"public_key": _b64(c.dc_public_key)},
        "log": _log_table(c.log),
    }


def config_sections(config: RoleConfig, key_file: Path) -> _Sections:
    """The TOML tables of `config`, keys in the order the README documents them; its
    private key is named by `key_file` (the dataclasses hold the key, not where it lives)."""
    if isinstance(config, DcConfig):
        return _dc_sections(config, key_file)
    if isinstance(config, NodeConfig):
        return _node_sections(config, key_file)
    if isinstance(config, AdapterConfig):
        return _adapter_sections(config, key_file)
    return _relay_sections(config, key_file)


def config_toml(config: RoleConfig, key_file: Path) -> str:
    """`config` as the TOML its role's loader reads back into an equal dataclass."""
    return to_toml(config_sections(config, key_file))


def write_config(path: Path, config: RoleConfig, key_file: Path) -> None:
    path.write_text(config_toml(config, key_file))


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(int(value))  # "60", as people write it; the loaders take ints for floats
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON strings are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: an admitted sub-zone
        pairs = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_table(header: str, table: dict[str, Any]) -> str:
    lines = [header] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def to_toml(sections: _Sections) -> str:
    """Tables in order; a list of tables becomes an array of tables ([[name]] blocks)."""
    blocks = []
    for name, table in sections.items():
        if isinstance(table, list):
            blocks += [_toml_table(f"[[{_toml_key(name)}]]", t) for t in table]
        else:
            blocks.append(_toml_table(f"[{_toml_key(name)}]", table))
    return "\n".join(blocks)
