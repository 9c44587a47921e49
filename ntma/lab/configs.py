"""The daemons' configs, built as `ntma.config`'s dataclasses and written by its writer.

One schema: what the lab writes is exactly what `load_*_config` reads (the round trip is
tested). Keys are made first (`keys.py`); each config then reads its daemon's key file.
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

from ..config import AdapterConfig, DcConfig, DeviceConfig, LogConfig, NodeConfig, RelayConfig
from ..config_write import RoleConfig, write_config
from ..proto.crypto import StaticKey, decode_key, load_key_file
from .ipv6 import ipv6_of
from .keys import new_key
from .settings import (
    ADAPTER_LEASE_TIME,
    DC_FILTER_PORT,
    DC_KEEPALIVE_INTERVAL,
    DC_KEEPALIVE_MISSES,
    LOG_LEVEL,
    NODE_TUN,
    PASSTHROUGH_TUN,
    RS_IDLE_TIMEOUT,
    STATS_INTERVAL,
    TUNNEL_MTU,
    VIP_POOL,
    WEB_IP,
    ZONE,
)
from .state import HostState, KeyRecord, LabState

LAB_LOG = LogConfig(LOG_LEVEL, float(STATS_INTERVAL))
DNS_PORT = 53
SOCKET_PATH_MAX = 100  # under sun_path's 107 bytes, with room to spare
SHORT_CONTROL_DIR = Path("/run/ntma-lab-ctl")


def control_socket(state: LabState, daemon: str) -> Path:
    """Each daemon's control socket, `ntma status`'s way in (the namespaces share the file
    system): run_dir/ctl/<daemon>.sock, or under a short directory named by a hash of the
    run dir when that is too deep for a Unix socket's path."""
    path = state.run_dir / "ctl" / f"{daemon}.sock"
    if len(str(path).encode()) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(state.run_dir).encode()).hexdigest()[:12]
    return SHORT_CONTROL_DIR / digest / f"{daemon}.sock"
# Every daemon serves its Prometheus metrics on the loopback of its own namespace:
# `ip netns exec ntma-dc curl -s http://127.0.0.1:9400/metrics`; nothing outside sees it.
METRICS_LISTEN = ("127.0.0.1", 9400)


def _key(state: LabState, name: str) -> StaticKey:
    return load_key_file(state.keys[name].private_key_file)


def _public(state: LabState, name: str) -> bytes:
    return decode_key(state.keys[name].public_key)


def admission(state: LabState) -> dict[str, bytes]:
    """name -> the key that may register it: each node's own; each GN's name its adapter's
    (one adapter key holds the names of all its devices)."""
    names = {node.fqdn: _public(state, name) for name, node in state.nodes.items()}
    for name, adapter in state.adapters.items():
        names[adapter.fqdn] = _public(state, name)
        names |= {gn.fqdn: _public(state, name) for gn in state.adapter_gns(name)}
    return names


def dc_config(state: LabState) -> DcConfig:
    dc, relay = state.dc, state.relay
    relays = [((relay.address, relay.port), _public(state, relay.key))]
    if dc.ipv6:  # the same RS in its other family: each end is sent its own
        relays.append(((ipv6_of(relay.address), relay.port), _public(state, relay.key)))
    return DcConfig(
        listen=("::" if dc.ipv6 else dc.address, dc.port),
        probe_listen=(dc.address, dc.probe_port),
        filter_probe_listen=(dc.address, DC_FILTER_PORT),
        key=_key(state, "dc"),
        database=state.run_dir / "dc.sqlite",
        zone=ZONE,
        vip_pool=ipaddress.IPv4Network(VIP_POOL),
        vip6_pool=ipaddress.IPv6Network(dc.vip6_pool) if dc.vip6_pool else None,
        dns_listen=(dc.address, DNS_PORT),
        keepalive_interval=DC_KEEPALIVE_INTERVAL,
        keepalive_misses=DC_KEEPALIVE_MISSES,
        admission=admission(state),
        relays=relays,
        log=LAB_LOG,
        control_socket=control_socket(state, "dc"),
        metrics_listen=METRICS_LISTEN,
    )


def relay_config(state: LabState) -> RelayConfig:
    relay = state.relay
    return RelayConfig(
        listen=("::" if state.dc.ipv6 else relay.address, relay.port),
        key=_key(state, relay.key),
        dc_public_key=_public(state, "dc"),
        idle_timeout=float(RS_IDLE_TIMEOUT),
        log=LAB_LOG,
        control_socket=control_socket(state, "relay"),
        metrics_listen=METRICS_LISTEN,
    )


def _underlay(state: LabState, host: HostState) -> dict:
    """An NTM end's listen and DC addresses for its address families (ipv6.py)."""
    dc = state.dc
    dc6 = (ipv6_of(dc.address), dc.port)
    return {
        "listen": ("0.0.0.0" if host.net == "v4" else "::", host.port),
        "dc_address": dc6 if host.net == "v6" else (dc.address, dc.port),
        "dc_address6": dc6 if host.net == "dual" else None,
    }


def node_config(state: LabState, name: str) -> NodeConfig:
    node = state.nodes[name]
    return NodeConfig(
        fqdn=node.fqdn,
        key=_key(state, name),
        tun_name=NODE_TUN,
        mtu=TUNNEL_MTU,
        **_underlay(state, node),
        dc_public_key=_public(state, "dc"),
        dns_listen=("127.0.0.1", DNS_PORT),
        dns_upstream=(WEB_IP, DNS_PORT),
        ntm_suffixes=[ZONE],
        log=LAB_LOG,
        control_socket=control_socket(state, name),
        metrics_listen=METRICS_LISTEN,
    )


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def devices(state: LabState, adapter: str) -> tuple[DeviceConfig, ...]:
    """[devices]: every GN on `adapter`'s link, MAC -> name (the first one's name is the
    adapter's own fqdn, its REGISTER name)."""
    return tuple(DeviceConfig(mac_bytes(gn.mac), gn.fqdn) for gn in state.adapter_gns(adapter))


def adapter_config(state: LabState, name: str | None = None) -> AdapterConfig:
    """Adapter `name`'s config (default: the first adapter). Every GN is listed, so no
    device is left to `default_device` (which would name an unlisted MAC like the first)."""
    adapter = state.adapters[name] if name else state.adapter
    return AdapterConfig(
        fqdn=adapter.fqdn,
        key=_key(state, adapter.name),
        gn_interface=adapter.gn_interface,
        passthrough_tun=PASSTHROUGH_TUN,
        mtu=TUNNEL_MTU,
        lease_time=ADAPTER_LEASE_TIME,
        **_underlay(state, adapter),
        dc_public_key=_public(state, "dc"),
        dns_upstream=(WEB_IP, DNS_PORT),
        ntm_suffixes=[ZONE],
        log=LAB_LOG,
        devices=devices(state, adapter.name),
        default_device=False,
        control_socket=control_socket(state, adapter.name),
        metrics_listen=METRICS_LISTEN,
    )


def lab_configs(state: LabState) -> dict[str, tuple[RoleConfig, str]]:
    """daemon name -> (its config, the name of its key), in start order."""
    configs: dict[str, tuple[RoleConfig, str]] = {
        "dc": (dc_config(state), "dc"),
        "relay": (relay_config(state), state.relay.key),
    }
    configs |= {name: (node_config(state, name), name) for name in state.nodes}
    configs |= {name: (adapter_config(state, name), name) for name in state.adapters}
    return configs


def write_keys_and_configs(state: LabState) -> None:
    """keys/<name>.key for every daemon, then configs/<daemon>.toml; both recorded in state."""
    keys, configs = state.run_dir / "keys", state.run_dir / "configs"
    for name in ("dc", state.relay.key, *state.nodes, *state.adapters):
        path = keys / f"{name}.key"
        state.keys[name] = KeyRecord(path, new_key(path).public_base64())
    for name, (config, key_name) in lab_configs(state).items():
        path: Path = configs / f"{name}.toml"
        write_config(path, config, state.keys[key_name].private_key_file)
        state.configs[name] = path
