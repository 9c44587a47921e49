"""Configuration loading and the command line.

Bad configurations go through the real CLI (`python -m ntma ...` in a subprocess): exit
status 2 and exactly one line on stderr naming the key and the fix. Valid configurations
would start a daemon (root, TUN, namespaces), so those are only parsed in-process with
load_node_config / load_dc_config.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ntma.config import (
    ConfigError,
    DcConfig,
    LogConfig,
    NodeConfig,
    load_adapter_config,
    load_dc_config,
    load_node_config,
    parse_endpoint,
)
from ntma.proto.crypto import StaticKey, load_key_file, write_key_file

DELETE = object()  # marks a key (or, with key None, a whole table) to remove


class Raw(str):
    """A TOML value written as is (for values JSON cannot express, like nan)."""


def _value(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # a TOML basic string


def _toml(sections: dict[str, dict]) -> str:
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            bare = re.fullmatch(r"[A-Za-z0-9_-]+", key)
            lines.append(f"{key if bare else json.dumps(key)} = {_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _write(path: Path, sections: dict[str, dict], edits=()) -> Path:
    sections = {name: dict(table) for name, table in sections.items()}
    for section, key, value in edits:
        if key is None:
            sections.pop(section, None)
        elif value is DELETE:
            sections[section].pop(key, None)
        else:
            sections.setdefault(section, {})[key] = value
    path.write_text(_toml(sections))
    return path


@pytest.fixture
def dc_key() -> StaticKey:
    return StaticKey.generate()


@pytest.fixture
def node_sections(tmp_path, dc_key) -> dict[str, dict]:
    write_key_file(tmp_path / "mn.key", StaticKey.generate())
    return {
        "node": {
            "fqdn": "mn.ntm.example",
            "private_key_file": "mn.key",
            "listen": "0.0.0.0:7401",
            "tun_name": "ntm0",
            "mtu": 1400,
        },
        "dc": {"address": "198.51.100.10:7400", "public_key": dc_key.public_base64()},
        "dns": {"listen": "127.0.0.1:5353", "ntm_suffixes": ["ntm.example"]},
        "log": {"level": "info"},
    }


@pytest.fixture
def dc_sections(tmp_path, dc_key) -> dict[str, dict]:
    write_key_file(tmp_path / "dc.key", dc_key)
    return {
        "dc": {
            "listen": "0.0.0.0:7400",
            "private_key_file": "dc.key",
            "zone": "ntm.example",
            "vip_pool": "10.99.0.0/16",
            "dns_listen": "127.0.0.1:5300",
            "database": "dc.sqlite",
        },
        "admission": {"mn.ntm.example": StaticKey.generate().public_base64()},
        "log": {"level": "info"},
    }


def ntma(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ntma", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def _check_config_error(result, role: str, key: str, *expected: str) -> None:
    line = _one_error_line(result)
    assert line.startswith(f"ntma {role}: error: config key '{key}': "), line
    for text in expected:
        assert text in line, (text, line)


# --- the CLI with bad configurations --------------------------------------------------

NODE_CASES = [
    # (edits, key, texts the line must contain: the problem and what to do)
    pytest.param(
        [("node", "fqdn", DELETE)],
        "node.fqdn",
        ["missing", "add fqdn to [node]"],
        id="fqdn-missing",
    ),
    pytest.param(
        [("node", "fqdn", 5)],
        "node.fqdn",
        ["expected str", "set fqdn to a str"],
        id="fqdn-not-a-string",
    ),
    pytest.param(
        [("dc", "address", "nonsense")],
        "dc.address",
        ["'nonsense' is not ADDRESS:PORT", 'write it like "198.51.100.10:7400"'],
        id="endpoint-garbage",
    ),
    pytest.param(
        [("dc", "address", "198.51.100.10:70000")],
        "dc.address",
        ["is not ADDRESS:PORT", "write it like"],
        id="endpoint-port-range",
    ),
    pytest.param(
        [("dc", "address", "198.51.100.10")],
        "dc.address",
        ["is not ADDRESS:PORT", "write it like"],
        id="endpoint-no-port",
    ),
    pytest.param(
        [("dc", "address", DELETE)],
        "dc.address",
        ["missing", 'set address = "ADDRESS:PORT"'],
        id="endpoint-missing",
    ),
    pytest.param(
        [("node", "listen", "999.1.1.1:7401")],
        "node.listen",
        ["is not ADDRESS:PORT"],
        id="listen-bad-address",
    ),
    pytest.param(
        [("dns", "upstream", "resolver")],
        "dns.upstream",
        ["is not ADDRESS:PORT"],
        id="upstream-garbage",
    ),
    pytest.param(
        [("dc", "public_key", "not base64!")],
        "dc.public_key",
        ["not valid base64", "use the base64 public key printed by 'ntma keygen'"],
        id="public-key-not-base64",
    ),
    pytest.param(
        [("dc", "public_key", base64.b64encode(bytes(16)).decode())],
        "dc.public_key",
        ["decodes to 16 bytes, expected 32", "ntma keygen"],
        id="public-key-wrong-length",
    ),
    pytest.param(
        [("dc", "public_key", DELETE)], "dc.public_key", ["missing"], id="public-key-missing"
    ),
    pytest.param(
        [("node", "private_key_file", "nowhere.key")],
        "node.private_key_file",
        ["no such file", "nowhere.key", "create one with 'ntma keygen --out FILE'"],
        id="key-file-missing",
    ),
    pytest.param(
        [("node", "private_key_file", "garbage.key")],
        "node.private_key_file",
        ["is not an ntma key file", "create one with 'ntma keygen --out FILE'"],
        id="key-file-garbage",
    ),
    pytest.param(
        [("node", "private_key_file", DELETE)],
        "node.private_key_file",
        ["missing", 'set private_key_file = "PATH"'],
        id="key-file-key-missing",
    ),
    pytest.param(
        [("node", "mtu", 9000)],
        "node.mtu",
        ["9000 is out of range", "use 576..1440"],
        id="mtu-too-big",
    ),
    pytest.param(
        [("node", "mtu", 575)], "node.mtu", ["out of range", "576..1440"], id="mtu-too-small"
    ),
    pytest.param(
        [("node", "mtu", 0)],
        "node.mtu",
        ["must be positive", "set mtu to a number above 0"],
        id="mtu-zero",
    ),
    pytest.param(
        [("node", "mtu", "1400")], "node.mtu", ["expected int", "set mtu to a int"], id="mtu-string"
    ),
    pytest.param([("node", "mtu", True)], "node.mtu", ["expected int"], id="mtu-bool"),
    pytest.param(
        [("log", "level", "loud")],
        "log.level",
        ["unknown level 'loud'", "use debug, info, warning or error"],
        id="log-level-unknown",
    ),
    pytest.param(
        [("log", "stats_interval", -1)],
        "log.stats_interval",
        ["must be positive"],
        id="stats-interval-negative",
    ),
    pytest.param(
        [("node", "tun_name", "a-very-long-tun-name")],
        "node.tun_name",
        ["1..15 characters", "pick a shorter name"],
        id="tun-name-long",
    ),
    pytest.param(
        [("dns", "ntm_suffixes", [1, 2])],
        "dns.ntm_suffixes",
        ["list of strings", 'write it like ["ntm.example"]'],
        id="suffixes-not-str",
    ),
    pytest.param(
        [("dc", None, None)], "dc", ["missing table", "add a [dc] table"], id="dc-table-missing"
    ),
    pytest.param(
        [("node", None, None)],
        "node",
        ["missing table", "add a [node] table"],
        id="node-table-missing",
    ),
]


@pytest.mark.parametrize(("edits", "key", "expected"), NODE_CASES)
def test_node_cli_bad_config(tmp_path, node_sections, edits, key, expected):
    (tmp_path / "garbage.key").write_text("not a key\n")
    config = _write(tmp_path / "node.toml", node_sections, edits)
    result = ntma("node", "--config", str(config), cwd=tmp_path)
    _check_config_error(result, "node", key, *expected)


DC_CASES = [
    pytest.param(
        [("dc", "metrics_listen", "localhost:9400")],
        "dc.metrics_listen",
        ["'localhost:9400' is not ADDRESS:PORT", 'write it like "198.51.100.10:7400"'],
        id="metrics-listen-not-an-address",
    ),
    pytest.param(
        [("dc", "metrics_listen", "127.0.0.1")],
        "dc.metrics_listen",
        ["'127.0.0.1' is not ADDRESS:PORT"],
        id="metrics-listen-without-port",
    ),
    pytest.param(
        [("dc", "vip_pool", "10.99.0.1/16")],
        "dc.vip_pool",
        ["has host bits set", 'write a network like "10.99.0.0/16"'],
        id="vip-pool-host-bits",
    ),
    pytest.param(
        [("dc", "vip_pool", "banana")],
        "dc.vip_pool",
        ["write a network like"],
        id="vip-pool-garbage",
    ),
    pytest.param(
        [("dc", "vip_pool", "2001:db8::/64")],
        "dc.vip_pool",
        ["write a network like"],
        id="vip-pool-ipv6",
    ),
    pytest.param(
        [("dc", "vip_pool", "10.99.0.0/30")],
        "dc.vip_pool",
        ["too small", "use a prefix of /29 or larger"],
        id="vip-pool-too-small",
    ),
    pytest.param(
        [("dc", "vip_pool", DELETE)],
        "dc.vip_pool",
        ["missing", "add vip_pool to [dc]"],
        id="vip-pool-missing",
    ),
    pytest.param(
        [("dc", "vip_pool", 16)], "dc.vip_pool", ["expected str"], id="vip-pool-not-a-string"
    ),
    pytest.param(
        [("dc", "private_key_file", "nowhere.key")],
        "dc.private_key_file",
        ["no such file", "ntma keygen --out FILE"],
        id="key-file-missing",
    ),
    pytest.param(
        [("dc", "zone", DELETE)], "dc.zone", ["missing", "add zone to [dc]"], id="zone-missing"
    ),
    pytest.param(
        [("dc", "listen", "0.0.0.0")], "dc.listen", ["is not ADDRESS:PORT"], id="listen-no-port"
    ),
    pytest.param(
        [("dc", "keepalive_interval", 0)],
        "dc.keepalive_interval",
        ["must be positive", "set keepalive_interval to a number above 0"],
        id="keepalive-zero",
    ),
    pytest.param(
        [("admission", "mn.ntm.example", "AAAA")],
        "admission.mn.ntm.example",
        ["decodes to 3 bytes", "ntma keygen"],
        id="admission-bad-key",
    ),
    pytest.param(
        [("log", "level", "verbose")],
        "log.level",
        ["unknown level 'verbose'", "use debug, info, warning or error"],
        id="log-level-unknown",
    ),
    pytest.param(
        [("dc", None, None)], "dc", ["missing table", "add a [dc] table"], id="dc-table-missing"
    ),
]


@pytest.mark.parametrize(("edits", "key", "expected"), DC_CASES)
def test_dc_cli_bad_config(tmp_path, dc_sections, edits, key, expected):
    config = _write(tmp_path / "dc.toml", dc_sections, edits)
    result = ntma("dc", "--config", str(config), cwd=tmp_path)
    _check_config_error(result, "dc", key, *expected)


@pytest.mark.parametrize("role", ["dc", "node"])
def test_cli_missing_config_file(tmp_path, role):
    result = ntma(role, "--config", str(tmp_path / "absent.toml"))
    _check_config_error(result, role, "--config", "no such file", "pass an existing TOML file")


@pytest.mark.parametrize("role", ["dc", "node"])
@pytest.mark.parametrize(
    "text",
    ['[node\nfqdn = "x"\n', 'fqdn = "unterminated\n', "[node]\nmtu = 1400\nmtu = 1400\n"],
    ids=["bad-table", "unterminated-string", "duplicate-key"],
)
def test_cli_invalid_toml(tmp_path, role, text):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = ntma(role, "--config", str(config))
    _check_config_error(
        result, role, "--config", "is not valid TOML", "line", "fix the syntax at the position"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["frob"], ["ntma: error:", "invalid choice: 'frob'", "see --help"]),
        (["node"], ["ntma node: error:", "required: --config", "see --help"]),
        (["dc"], ["ntma dc: error:", "required: --config"]),
        (["dc", "--config"], ["ntma dc: error:", "--config", "expected one argument"]),
        (["keygen"], ["ntma keygen: error:", "required: --out"]),
        (["node", "--config", "x.toml", "--log-format", "xml"], ["invalid choice: 'xml'"]),
        (["node", "--config", "x.toml", "--bogus"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_cli_usage_errors_are_one_line(tmp_path, args, expected):
    line = _one_error_line(ntma(*args, cwd=tmp_path))
    for text in expected:
        assert text in line, (text, line)


def test_cli_help_lists_roles():
    result = ntma("--help")
    assert result.returncode == 0
    for role in ("dc", "node", "keygen", "lab"):
        assert re.search(rf"^\s+{role}\s+\S", result.stdout, re.MULTILINE), role


def test_cli_without_role_prints_help_and_fails():
    result = ntma()
    assert result.returncode == 2
    assert "roles:" in result.stdout


# --- keygen ---------------------------------------------------------------------------


def test_keygen_writes_private_key_and_prints_public(tmp_path):
    out = tmp_path / "node.key"
    result = ntma("keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    printed = result.stdout.strip()
    assert result.stdout == printed + "\n"
    assert len(base64.b64decode(printed, validate=True)) == 32
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert load_key_file(out).public_base64() == printed

    # A second run without --force refuses and leaves the file alone.
    before = out.read_bytes()
    again = ntma("keygen", "--out", str(out))
    line = _one_error_line(again)
    assert line.startswith("ntma keygen: error:") and "exists" in line and "--force" in line
    assert out.read_bytes() == before

    # With --force it makes a new key.
    forced = ntma("keygen", "--out", str(out), "--force")
    assert forced.returncode == 0
    assert forced.stdout.strip() != printed
    assert load_key_file(out).public_base64() == forced.stdout.strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_keygen_key_works_in_a_node_config(tmp_path, node_sections):
    result = ntma("keygen", "--out", "made.key", cwd=tmp_path)
    assert result.returncode == 0
    config = _write(
        tmp_path / "node.toml", node_sections, [("node", "private_key_file", "made.key")]
    )
    assert load_node_config(config).key.public_base64() == result.stdout.strip()


# --- valid configurations, parsed in-process ------------------------------------------


def test_load_node_config_values(tmp_path, node_sections, dc_key, monkeypatch):
    sections = node_sections
    sections["node"]["fqdn"] = "MN.ntm.Example."
    sections["dns"] = {
        "listen": "127.0.0.1",
        "upstream": "[2001:db8::53]:53",
        "ntm_suffixes": ["NTM.Example.", "lab.test"],
    }
    sections["log"] = {"level": "DEBUG", "stats_interval": 2}
    config = _write(tmp_path / "node.toml", sections)
    monkeypatch.chdir("/")  # relative paths are relative to the config file, not the cwd
    cfg = load_node_config(config)
    assert isinstance(cfg, NodeConfig)
    assert cfg.fqdn == "mn.ntm.example"
    assert cfg.key.public == load_key_file(tmp_path / "mn.key").public
    assert cfg.listen == ("0.0.0.0", 7401)
    assert cfg.tun_name == "ntm0"
    assert cfg.mtu == 1400
    assert cfg.dc_address == ("198.51.100.10", 7400)
    assert cfg.dc_public_key == dc_key.public
    assert cfg.dns_listen == ("127.0.0.1", 53)
    assert cfg.dns_upstream == ("2001:db8::53", 53)
    assert cfg.ntm_suffixes == ["ntm.example", "lab.test"]
    assert cfg.log == LogConfig("debug", 2.0)
    assert isinstance(cfg.log.stats_interval, float)


def test_load_node_config_defaults(tmp_path, dc_key):
    key_path = tmp_path / "keys" / "n.key"
    key_path.parent.mkdir()
    write_key_file(key_path, StaticKey.generate())
    config = _write(
        tmp_path / "node.toml",
        {
            "node": {"fqdn": "n.ntm.example", "private_key_file": str(key_path)},
            "dc": {"address": "[2001:db8::10]:7400", "public_key": dc_key.public_base64()},
        },
    )
    cfg = load_node_config(config)
    assert cfg.listen == ("0.0.0.0", 7401)
    assert cfg.tun_name == "ntm0"
    assert cfg.mtu == 1400
    assert cfg.dc_address == ("2001:db8::10", 7400)
    assert cfg.dns_listen == ("127.0.0.1", 53)
    assert cfg.dns_upstream is None
    assert cfg.ntm_suffixes == []
    assert cfg.log == LogConfig("info", 10.0)


@pytest.mark.parametrize("mtu", [576, 1440])
def test_node_mtu_bounds_accepted(tmp_path, node_sections, mtu):
    config = _write(tmp_path / "node.toml", node_sections, [("node", "mtu", mtu)])
    assert load_node_config(config).mtu == mtu


@pytest.mark.parametrize(
    ("edits", "key"),
    [
        ([("node", "mtu", 1441)], "node.mtu"),
        ([("node", "tun_name", "")], "node.tun_name"),
        ([("log", "level", 3)], "log.level"),
        ([("dns", "ntm_suffixes", "ntm.example")], "dns.ntm_suffixes"),
    ],
)
def test_load_node_config_errors_carry_the_key(tmp_path, node_sections, edits, key):
    config = _write(tmp_path / "node.toml", node_sections, edits)
    with pytest.raises(ConfigError) as info:
        load_node_config(config)
    assert info.value.key == key
    assert str(info.value).startswith(f"config key '{key}': ")


def test_load_dc_config_values(tmp_path, dc_sections, dc_key):
    dc_sections["dc"]["zone"] = "NTM.Example."
    dc_sections["dc"]["dns_listen"] = "0.0.0.0"
    dc_sections["dc"]["keepalive_interval"] = 20
    admitted = StaticKey.generate()
    dc_sections["admission"] = {
        "mn.ntm.example": admitted.public_base64(),
        "cn": "  " + dc_key.public_base64() + " ",
    }
    config = _write(tmp_path / "dc.toml", dc_sections)
    cfg = load_dc_config(config)
    assert isinstance(cfg, DcConfig)
    assert cfg.listen == ("0.0.0.0", 7400)
    assert cfg.key.public == dc_key.public
    assert cfg.database == tmp_path.resolve() / "dc.sqlite"
    assert cfg.zone == "ntm.example"
    assert cfg.vip_pool == ipaddress.IPv4Network("10.99.0.0/16")
    assert cfg.dns_listen == ("0.0.0.0", 53)
    assert cfg.keepalive_interval == 20
    assert cfg.keepalive_misses == 3
    assert cfg.admission == {"mn.ntm.example": admitted.public, "cn": dc_key.public}
    assert cfg.log == LogConfig()


def test_load_dc_config_defaults(tmp_path, dc_key):
    write_key_file(tmp_path / "dc.key", dc_key)
    config = _write(
        tmp_path / "dc.toml",
        {
            "dc": {
                "listen": "198.51.100.10:7400",
                "private_key_file": "dc.key",
                "zone": "ntm.example",
                "vip_pool": "10.99.0.0/29",  # the smallest accepted
            }
        },
    )
    cfg = load_dc_config(config)
    assert cfg.database == tmp_path / "dc.sqlite"  # persistent by default, beside the config
    assert cfg.dns_listen is None
    assert (cfg.keepalive_interval, cfg.keepalive_misses) == (15, 3)
    assert cfg.admission == {}
    assert cfg.vip_pool.num_addresses == 8
    assert cfg.log == LogConfig("info", 10.0)


@pytest.mark.parametrize(
    ("text", "default_port", "expected"),
    [
        ("198.51.100.10:7400", None, ("198.51.100.10", 7400)),
        ("[2001:db8::1]:53", None, ("2001:db8::1", 53)),
        ("[2001:DB8:0::1]:0", None, ("2001:db8::1", 0)),
        ("127.0.0.1", 53, ("127.0.0.1", 53)),
        ("127.0.0.1:65535", 53, ("127.0.0.1", 65535)),
    ],
)
def test_parse_endpoint_accepts(text, default_port, expected):
    assert parse_endpoint(text, "k", default_port) == expected


@pytest.mark.parametrize(
    ("text", "default_port"),
    [
        ("", None),
        ("198.51.100.10", None),
        ("198.51.100.10:", None),
        ("198.51.100.10:-1", None),
        ("198.51.100.10:65536", None),
        ("198.51.100.10:http", None),
        ("host.example:53", None),
        ("256.0.0.1:53", 53),
    ],
)
def test_parse_endpoint_refuses(text, default_port):
    with pytest.raises(ConfigError) as info:
        parse_endpoint(text, "dns.listen", default_port)
    assert info.value.key == "dns.listen"
    assert "is not ADDRESS:PORT" in str(info.value)


# --- regressions: each of these was a bug once ----------------------------------------


@pytest.mark.parametrize("role", ["dc", "node"])
def test_cli_non_utf8_config_is_one_line(tmp_path, role):
    config = tmp_path / "latin1.toml"
    config.write_bytes('[node]\nfqdn = "b\xfccher"\n'.encode("latin-1"))
    _check_config_error(ntma(role, "--config", str(config)), role, "--config")


def test_cli_config_is_a_directory(tmp_path):
    _check_config_error(ntma("node", "--config", str(tmp_path)), "node", "--config")


@pytest.mark.parametrize("key_file", [".", "keys"], ids=["dot", "subdir"])
def test_cli_key_file_is_a_directory(tmp_path, node_sections, key_file):
    (tmp_path / "keys").mkdir()
    config = _write(tmp_path / "node.toml", node_sections, [("node", "private_key_file", key_file)])
    result = ntma("node", "--config", str(config))
    _check_config_error(result, "node", "node.private_key_file", "ntma keygen")


def test_keygen_into_missing_directory_is_one_line(tmp_path):
    line = _one_error_line(ntma("keygen", "--out", str(tmp_path / "no" / "such" / "k.key")))
    assert line.startswith("ntma keygen: error:")


def test_keygen_force_makes_the_file_0600(tmp_path):
    out = tmp_path / "node.key"
    out.write_text("old\n")
    out.chmod(0o644)
    assert ntma("keygen", "--out", str(out), "--force").returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize("text", ["[::1]", "[2001:db8::53]"])
def test_parse_endpoint_bracketed_ipv6_with_default_port(text):
    assert parse_endpoint(text, "dns.upstream", 53) == (text.strip("[]"), 53)


def test_stats_interval_nan_is_refused(tmp_path, node_sections):
    config = _write(tmp_path / "node.toml", node_sections, [("log", "stats_interval", Raw("nan"))])
    with pytest.raises(ConfigError):
        load_node_config(config)


# --- the adapter's config ----------------------------------------------------------------


@pytest.fixture
def adapter_sections(tmp_path, dc_key) -> dict[str, dict]:
    write_key_file(tmp_path / "adapter.key", StaticKey.generate())
    return {
        "adapter": {
            "fqdn": "gn.ntm.example",
            "private_key_file": "adapter.key",
            "gn_interface": "gn0",
            "listen": "0.0.0.0:7401",
            "passthrough_tun": "ntmpt0",
            "mtu": 1400,
            "lease_time": 600,
        },
        "dc": {"address": "198.51.100.10:7400", "public_key": dc_key.public_base64()},
        "dns": {"upstream": "198.51.100.20:53", "ntm_suffixes": ["ntm.example"]},
    }


def test_adapter_devices_in_the_config(tmp_path, adapter_sections):
    sections = adapter_sections | {
        "devices": {
            "02:00:00:00:0a:02": "printer.ntm.example",
            "02:00:00:00:0a:03": {"name": "Web.ntm.example", "inbound": ["TCP/80", "udp/53"]},
        }
    }
    sections["adapter"] = sections["adapter"] | {"host_names": "site1.ntm.example"}
    cfg = load_adapter_config(_write(tmp_path / "adapter.toml", sections))
    assert [(d.mac.hex(), d.fqdn, d.inbound) for d in cfg.devices] == [
        ("020000000a02", "printer.ntm.example", None),
        ("020000000a03", "web.ntm.example", ("tcp/80", "udp/53")),
    ]
    assert cfg.host_names == "site1.ntm.example" and cfg.default_device and cfg.max_devices == 64
    assert cfg.leases_file is None and cfg.inbound is None


def test_load_adapter_config(tmp_path, adapter_sections):
    cfg = load_adapter_config(_write(tmp_path / "adapter.toml", adapter_sections))
    assert (cfg.fqdn, cfg.gn_interface, cfg.passthrough_tun) == ("gn.ntm.example", "gn0", "ntmpt0")
    assert (cfg.mtu, cfg.lease_time, cfg.dns_upstream) == (1400, 600, ("198.51.100.20", 53))
    assert cfg.ntm_suffixes == ["ntm.example"] and cfg.listen == ("0.0.0.0", 7401)


@pytest.mark.parametrize(
    ("edit", "key", "text"),
    [
        (("adapter", "gn_interface", DELETE), "adapter.gn_interface", "missing"),
        (
            ("adapter", "gn_interface", "a-very-long-interface-name"),
            "adapter.gn_interface",
            "pick a shorter name",
        ),
        (("adapter", "mtu", 1500), "adapter.mtu", "576..1440"),
        (("adapter", "lease_time", 0), "adapter.lease_time", "above 0"),
        (("adapter", "fqdn", DELETE), "adapter.fqdn", "missing"),
        (("dc", "public_key", "short"), "dc.public_key", "ntma keygen"),
        (("dns", "upstream", "not-an-address"), "dns.upstream", "ADDRESS:PORT"),
        (("adapter", None, None), "adapter", "add a [adapter] table"),
        (("devices", "02:00:00:0a:zz", "gn2.ntm.example"), "devices.02:00:00:0a:zz", "MAC"),
        (
            ("devices", "02:00:00:00:0a:02", {"name": "x.ntm.example", "inbound": ["tcp/0"]}),
            "devices.02:00:00:00:0a:02",
            "1..65535",
        ),
        (
            ("devices", "02:00:00:00:0a:02", {"inbound": []}),
            "devices.02:00:00:00:0a:02.name",
            "missing",
        ),
        (("adapter", "inbound", ["smtp/25"]), "adapter.inbound", "unknown protocol"),
        (("adapter", "max_devices", 300), "adapter.max_devices", "1..255"),
        (("adapter", "host_names", "bad_zone!"), "adapter.host_names", "labels"),
    ],
)
def test_adapter_cli_bad_config(tmp_path, adapter_sections, edit, key, text):
    config = _write(tmp_path / "adapter.toml", adapter_sections, [edit])
    _check_config_error(ntma("adapter", "--config", str(config)), "adapter", key, text)


def test_one_key_admitted_for_several_names_and_a_sub_zone(tmp_path, dc_sections):
    """One party (an adapter) may hold several names and a sub-zone (NAME_ADD)."""
    from ntma.config import load_dc_config

    key = StaticKey.generate()
    edits = [
        ("admission", "gn.ntm.example", key.public_base64()),
        ("admission", "gn2.ntm.example", key.public_base64()),
        ("admission", "*.site1.ntm.example", {"key": key.public_base64(), "max_names": 8}),
    ]
    config = load_dc_config(_write(tmp_path / "dc.toml", dc_sections, edits))
    assert config.admission["gn.ntm.example"] == config.admission["gn2.ntm.example"] == key.public
    (zone,) = config.subzones
    assert (zone.suffix, zone.key, zone.max_names) == ("site1.ntm.example", key.public, 8)


@pytest.mark.parametrize(
    ("value", "key", "text"),
    [
        ("not-a-table", "admission.*.site1.ntm.example", "a sub-zone needs a table"),
        ({"max_names": 8}, "admission.*.site1.ntm.example.key", "missing"),
        ({"key": "AAAA", "max_names": 8}, "admission.*.site1.ntm.example.key", "ntma keygen"),
    ],
)
def test_a_bad_sub_zone_is_one_line(tmp_path, dc_sections, value, key, text):
    edits = [("admission", "*.site1.ntm.example", value)]
    config = _write(tmp_path / "dc.toml", dc_sections, edits)
    _check_config_error(ntma("dc", "--config", str(config)), "dc", key, text)


def test_dc_reset_timestamp_clears_a_stored_timestamp(tmp_path, dc_sections):
    import base64
    import ipaddress

    from ntma.dc.store import NodeStore

    config = _write(tmp_path / "dc.toml", dc_sections)
    key = base64.b64decode(dc_sections["admission"]["mn.ntm.example"])
    store = NodeStore(tmp_path / "dc.sqlite", ipaddress.IPv4Network("10.99.0.0/16"))
    store.record_timestamp(key, bytes.fromhex("4000000080000000000000ff"))
    store.close()
    result = ntma("dc", "--config", str(config), "--reset-timestamp", "MN.ntm.example.")
    assert result.returncode == 0, result.stderr
    assert "mn.ntm.example" in result.stdout
    store = NodeStore(tmp_path / "dc.sqlite", ipaddress.IPv4Network("10.99.0.0/16"))
    assert store.last_timestamp(key) is None
    store.close()
    unknown = ntma("dc", "--config", str(config), "--reset-timestamp", "xx.ntm.example")
    assert unknown.returncode == 2 and "no such name in [admission]" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("role", ["dc", "node"])
def test_metrics_listen_is_off_unless_set_and_takes_ipv6(
    tmp_path, role, dc_sections, node_sections
):
    sections, load = {
        "dc": (dc_sections, load_dc_config),
        "node": (node_sections, load_node_config),
    }[role]
    assert load(_write(tmp_path / "a.toml", sections)).metrics_listen is None
    edits = [(role, "metrics_listen", "[::1]:9400")]
    assert load(_write(tmp_path / "b.toml", sections, edits)).metrics_listen == ("::1", 9400)
