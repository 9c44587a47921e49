"""`ntma.config`'s writer is its loaders' inverse: build a config, write it, load it back,
get the same dataclass (one schema for the lab and for people writing configs by hand)."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from ntma.config import (
    AdapterConfig,
    DcConfig,
    DeviceConfig,
    LogConfig,
    NodeConfig,
    RelayConfig,
    load_adapter_config,
    load_dc_config,
    load_node_config,
    load_relay_config,
    parse_endpoint,
)
from ntma.config_write import RoleConfig, config_toml, format_endpoint, write_config
from ntma.dc.admission import SubZone
from ntma.proto.crypto import StaticKey, write_key_file

LOADERS = {
    DcConfig: load_dc_config,
    NodeConfig: load_node_config,
    AdapterConfig: load_adapter_config,
    RelayConfig: load_relay_config,
}


def _pub() -> bytes:
    return StaticKey.generate().public


def _configs(tmp: Path, key: StaticKey) -> list[RoleConfig]:
    log = LogConfig("debug", 2.5)
    return [
        DcConfig(
            listen=("198.51.100.10", 7400),
            key=key,
            database=tmp / "dc.sqlite",
            zone="ntm.example",
            vip_pool=ipaddress.IPv4Network("10.99.0.0/16"),
            dns_listen=("198.51.100.10", 53),
            keepalive_interval=5,
            keepalive_misses=3,
            admission={"mn.ntm.example": _pub(), "gn.ntm.example": _pub()},
            log=log,
            probe_listen=("198.51.100.10", 7401),
            relays=[(("198.51.100.60", 7500), _pub()), (("2001:db8::60", 7500), _pub())],
            subzones=(SubZone("site1.ntm.example", _pub(), 64),),
        ),
        DcConfig(  # the optional parts left out
            listen=("2001:db8::10", 7400),
            key=key,
            database=tmp / "db" / "dc.sqlite",
            zone="ntm.example",
            vip_pool=ipaddress.IPv4Network("10.98.0.0/24"),
            vip6_pool=ipaddress.IPv6Network("fd00:98::/120"),
            dns_listen=None,
            keepalive_interval=15,
            keepalive_misses=3,
            admission={},
            log=LogConfig(),
        ),
        NodeConfig(
            fqdn="mn.ntm.example",
            key=key,
            listen=("0.0.0.0", 7401),
            tun_name="ntm0",
            mtu=1400,
            dc_address=("198.51.100.10", 7400),
            dc_public_key=_pub(),
            dns_listen=("127.0.0.1", 53),
            dns_upstream=("198.51.100.20", 53),
            ntm_suffixes=["ntm.example", "other.example"],
            log=log,
            dc_address6=("2001:db8::10", 7400),
        ),
        NodeConfig(
            fqdn="cn.ntm.example",
            key=key,
            listen=("0.0.0.0", 7402),
            tun_name="ntm1",
            mtu=1280,
            dc_address=("198.51.100.10", 7400),
            dc_public_key=_pub(),
            dns_listen=("127.0.0.53", 5353),
            dns_upstream=None,
        ),
        AdapterConfig(
            fqdn="gn.ntm.example",
            key=key,
            gn_interface="gn0",
            listen=("0.0.0.0", 7401),
            passthrough_tun="ntmpt0",
            mtu=1400,
            lease_time=600,
            dc_address=("198.51.100.10", 7400),
            dc_public_key=_pub(),
            dns_upstream=("198.51.100.20", 53),
            ntm_suffixes=["ntm.example"],
            log=log,
        ),
        AdapterConfig(  # several devices behind it (issue 12)
            fqdn="adapter.site1.ntm.example",
            key=key,
            gn_interface="gn0",
            listen=("0.0.0.0", 7401),
            passthrough_tun="ntmpt0",
            mtu=1400,
            lease_time=600,
            dc_address=("198.51.100.10", 7400),
            dc_public_key=_pub(),
            dns_upstream=None,
            ntm_suffixes=["ntm.example"],
            log=log,
            devices=(
                DeviceConfig(bytes.fromhex("020000000a02"), "gn.site1.ntm.example"),
                DeviceConfig(
                    bytes.fromhex("020000000a03"), "web.site1.ntm.example", ("tcp/80", "udp/5353")
                ),
            ),
            default_device=False,
            host_names="site1.ntm.example",
            inbound=("tcp/22",),
            max_devices=8,
            leases_file=tmp / "leases.json",
        ),
        RelayConfig(
            listen=("198.51.100.60", 7500),
            key=key,
            dc_public_key=_pub(),
            idle_timeout=60.0,
            log=LogConfig("warning", 0.5),
        ),
    ]


@pytest.mark.parametrize("index", range(7))
def test_build_write_load_gives_the_same_config(tmp_path: Path, index: int) -> None:
    key = StaticKey.generate()
    key_file = tmp_path / "keys" / "role.key"
    key_file.parent.mkdir()
    (tmp_path / "db").mkdir()  # a database's directory must exist (the loader checks)
    write_key_file(key_file, key)
    built = _configs(tmp_path, key)[index]
    path = tmp_path / "role.toml"
    write_config(path, built, key_file)
    loaded = LOADERS[type(built)](path)
    assert loaded.key.public == built.key.public  # keys compare by identity: check the bytes
    assert replace(loaded, key=built.key) == built


def test_written_toml_keeps_the_documented_order_and_plain_numbers(tmp_path: Path) -> None:
    dc, *_, relay = _configs(tmp_path, StaticKey.generate())
    text = config_toml(dc, tmp_path / "dc.key")
    assert text.index("[dc]") < text.index("[admission]") < text.index("[[relays]]")
    assert text.index("[[relays]]") < text.index("[log]")
    assert text.count("[[relays]]") == 2
    assert 'address = "[2001:db8::60]:7500"' in text
    assert "idle_timeout = 60\n" in config_toml(relay, tmp_path / "rs.key")  # not 60.0
    parsed = tomllib.loads(text)
    assert list(parsed["dc"]) == [
        "listen",
        "probe_listen",
        "private_key_file",
        "database",
        "zone",
        "vip_pool",
        "dns_listen",
        "keepalive_interval",
        "keepalive_misses",
    ]
    assert parsed["dc"]["private_key_file"] == str(tmp_path / "dc.key")


@pytest.mark.parametrize(
    "endpoint", [("198.51.100.10", 7400), ("2001:db8::1", 53), ("0.0.0.0", 0), ("::", 65535)]
)
def test_format_endpoint_is_what_parse_endpoint_reads(endpoint: tuple[str, int]) -> None:
    assert parse_endpoint(format_endpoint(endpoint), "x") == endpoint
