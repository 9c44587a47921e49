"""`ntma check`: every problem of a config, one line each, the role from its tables.

In process for the kinds of problem (check_config returns them), and through the real CLI
for the output contract: one stderr line per problem naming the key and the fix, exit 2;
one "ok" line and exit 0. The examples in examples/ pass once installed: their keys made
with `ntma keygen` and their state directory created (here under tmp_path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ntma.config_check import check_config
from ntma.proto.crypto import StaticKey, write_key_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PUB = StaticKey.generate().public_base64()


def ntma(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "ntma", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def _keys(tmp: Path, *names: str) -> None:
    for name in names:
        write_key_file(tmp / name, StaticKey.generate())


def _problems(tmp: Path, text: str, role: str | None = None) -> dict[str, str]:
    """key -> the line of each problem check_config found in `text`."""
    path = tmp / "config.toml"
    path.write_text(text)
    problems, ok = check_config(path, role)
    assert bool(ok) != bool(problems)
    lines = {p.key: str(p) for p in problems}
    assert len(lines) == len(problems), problems  # one line per key
    return lines


GOOD_NODE = f"""
[node]
fqdn = "mn.ntm.example"
private_key_file = "mn.key"
[dc]
address = "198.51.100.10:7400"
public_key = "{PUB}"
"""


def test_a_good_config_is_one_ok_line_naming_the_role_and_why(tmp_path):
    _keys(tmp_path, "mn.key")
    (tmp_path / "node.toml").write_text(GOOD_NODE)
    result = ntma("check", "--config", str(tmp_path / "node.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"ntma check: ok: {tmp_path / 'node.toml'} is a valid node config "
        "(role from its [node] table)"
    ]


def test_every_problem_of_a_dc_config_at_once(tmp_path):
    (tmp_path / "bad.key").write_text("not a key\n")
    lines = _problems(
        tmp_path,
        f"""
[dc]
listen = "198.51.100.10:99999"
probe_listen = "198.51.100.10:7400x"
private_key_file = "bad.key"
database = "no/such/dir/dc.sqlite"
zone = "ntm.example"
vip_pool = "10.99.0.0/30"
vip6_pool = "fd00:99::/126"
dns_lisen = "198.51.100.10:53"
keepalive_interval = 0
keepalive_misses = "3"

[admission]
"mn.ntm.example" = "short"
"bad_name!.ntm.example" = "{PUB}"
"*.site1.ntm.example" = {{ key = "{PUB}", max_name = 8 }}

[[relays]]
address = "rs:7500"
public_key = "{PUB}"

[logs]
level = "info"
""",
    )
    expected = {
        "dc.listen": "is not ADDRESS:PORT",
        "dc.probe_listen": "is not ADDRESS:PORT",
        "dc.private_key_file": "is not an ntma key file",
        "dc.database": "no directory",
        "dc.vip_pool": "/29 or larger",
        "dc.dns_lisen": "did you mean dns_listen?",
        "dc.keepalive_interval": "must be positive",
        "dc.keepalive_misses": "expected int",
        "admission.mn.ntm.example": "ntma keygen",
        "admission.bad_name!.ntm.example": "a-z, 0-9 and - labels",
        "admission.*.site1.ntm.example.max_name": "did you mean max_names?",
        "relays[0].address": "is not ADDRESS:PORT",
        "logs": "unknown table; did you mean log?",
    }
    assert lines.keys() == expected.keys(), lines
    for key, text in expected.items():
        assert f"config key '{key}': " in lines[key] and text in lines[key], lines[key]


def test_every_problem_of_an_adapter_config_at_once(tmp_path):
    _keys(tmp_path, "adapter.key")
    lines = _problems(
        tmp_path,
        f"""
[adapter]
fqdn = "gn.ntm.example"
private_key_file = "adapter.key"
gn_interface = "a-very-long-interface-name"
mtu = 1500
inbound = ["smtp/25"]
max_devices = 300
leases_file = "gone/devices.json"
lease_tme = 600

[devices]
"02:00:00:00:0a:02" = "printer.ntm.example"
"02:00:00:00:0a:03" = "printer.ntm.example"
"02:00:00:0a:zz" = "x.ntm.example"
"02:00:00:00:0a:04" = {{ name = "web.ntm.example", inbound = ["tcp/0"], inbnd = [] }}

[dc]
address = "198.51.100.10:7400"
public_key = "{PUB}"

[dns]
upstream = "resolver"
ntm_suffixes = ["ntm.example", 5]
""",
    )
    expected = {
        "adapter.gn_interface": "1..15 characters",
        "adapter.mtu": "576..1440",
        "adapter.inbound": "unknown protocol",
        "adapter.max_devices": "1..255",
        "adapter.leases_file": "no directory",
        "adapter.lease_tme": "did you mean lease_time?",
        "devices.02:00:00:00:0a:03": "named twice",
        "devices.02:00:00:0a:zz": "not a MAC address",
        "devices.02:00:00:00:0a:04": "1..65535",
        "devices.02:00:00:00:0a:04.inbnd": "did you mean inbound?",
        "dns.upstream": "is not ADDRESS:PORT",
        "dns.ntm_suffixes": "list of strings",
    }
    assert lines.keys() == expected.keys(), lines
    for key, text in expected.items():
        assert text in lines[key], lines[key]


def test_missing_tables_are_reported_once_not_per_key(tmp_path):
    lines = _problems(tmp_path, "[node]\nfqdn = 5\n", role="node")
    assert lines.keys() == {"dc", "node.fqdn", "node.private_key_file"}
    assert "add a [dc] table" in lines["dc"]


def test_a_world_readable_key_and_an_unreadable_one(tmp_path):
    _keys(tmp_path, "mn.key")
    os.chmod(tmp_path / "mn.key", 0o644)
    lines = _problems(tmp_path, GOOD_NODE)
    assert "readable by every user" in lines["node.private_key_file"]
    assert "chmod 600" in lines["node.private_key_file"]
    os.chmod(tmp_path / "mn.key", 0o600)
    (tmp_path / "mn.key").unlink()
    (tmp_path / "mn.key").mkdir()  # a directory: readable as a file by nobody, root too
    assert "cannot read" in _problems(tmp_path, GOOD_NODE)["node.private_key_file"]


def test_the_probe_port_may_not_be_the_listen_port(tmp_path):
    _keys(tmp_path, "dc.key")
    text = """
[dc]
listen = "[::]:7400"
probe_listen = "198.51.100.10:7400"
private_key_file = "dc.key"
database = ":memory:"
zone = "ntm.example"
vip_pool = "10.99.0.0/24"
"""
    assert "listen's port too" in _problems(tmp_path, text)["dc.probe_listen"]


def test_an_unknown_key_without_a_close_one_lists_the_known_keys(tmp_path):
    _keys(tmp_path, "relay.key")
    text = f"""
[relay]
listen = "198.51.100.60:7500"
private_key_file = "relay.key"
colour = "blue"
[dc]
public_key = "{PUB}"
"""
    line = _problems(tmp_path, text)["relay.colour"]
    known = "control_socket, idle_timeout, listen, metrics_listen, private_key_file"
    assert f"unknown key; remove it (known: {known})" in line


@pytest.mark.parametrize(
    ("text", "role", "keys"),
    [
        ("[dc]\n", None, {"dc.listen", "dc.private_key_file", "dc.zone", "dc.vip_pool"}),
        ("[relay]\n[dc]\n", None, {"relay.listen", "relay.private_key_file", "dc.public_key"}),
        ("[node]\n[dc]\n", "relay", {"relay", "node", "dc.public_key"}),  # --role wins
    ],
)
def test_the_role_is_taken_from_the_tables_or_role(tmp_path, text, role, keys):
    path = tmp_path / "c.toml"
    path.write_text(text)
    problems, _ = check_config(path, role)
    assert {p.key for p in problems} == keys


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[node]\n[adapter]\n[dc]\n", "the file has [node] and [adapter]; keep one, or pass"),
        ("[log]\n", "no role's table in the file"),
        ("[dc\n", "is not valid TOML"),
    ],
)
def test_a_file_without_one_role_is_one_line_with_the_fix(tmp_path, text, problem):
    path = tmp_path / "c.toml"
    path.write_text(text)
    result = ntma("check", "--config", str(path))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("ntma check: error: config key '") and problem in line, line


def test_the_cli_prints_one_line_per_problem_and_exits_2(tmp_path):
    (tmp_path / "node.toml").write_text(GOOD_NODE.replace("mn.ntm", "bad_name!") + "[dnss]\n")
    result = ntma("check", "--config", str(tmp_path / "node.toml"))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line.split("'")[1] for line in lines] == [
        "node.fqdn",
        "node.private_key_file",
        "dnss",
    ], lines
    assert all(line.startswith("ntma check: error: config key '") for line in lines)
    assert "did you mean dns?" in lines[2]


def test_the_daemons_print_the_same_lines(tmp_path):
    """What check reports is what the daemon refuses to start with (one set of rules)."""
    (tmp_path / "node.toml").write_text(GOOD_NODE + "[dnss]\n")
    daemon = ntma("node", "--config", str(tmp_path / "node.toml"))
    check = ntma("check", "--config", str(tmp_path / "node.toml"))
    assert daemon.returncode == check.returncode == 2
    strip = [line.split(": error: ", 1)[1] for line in daemon.stderr.splitlines()]
    assert strip == [line.split(": error: ", 1)[1] for line in check.stderr.splitlines()]
    assert len(strip) == 2


def _install(example: Path, root: Path) -> Path:
    """The example as installed under `root`: /var/lib/ntma made, each key from keygen."""
    text = example.read_text().replace("/var/lib/ntma/", f"{root}/var/lib/ntma/")
    (root / "var/lib/ntma").mkdir(parents=True, exist_ok=True)
    for line in text.splitlines():
        if line.startswith("private_key_file"):
            key = line.split('"')[1]
            if not Path(key).exists():
                assert ntma("keygen", "--out", key).returncode == 0
    path = root / "etc" / "ntma" / example.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_each_example_passes_check_once_installed(tmp_path, name):
    path = _install(EXAMPLES / name, tmp_path)
    result = ntma("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ntma check: ok: "), result.stdout


def test_the_examples_cover_every_role_devices_and_dual_stack():
    roles = {p.name: check_config(p)[0] for p in EXAMPLES.glob("*.toml")}
    assert {"dc.toml", "dc-dual-stack.toml", "node.toml", "adapter.toml", "relay.toml"} <= set(
        roles
    )
    adapter = (EXAMPLES / "adapter.toml").read_text()
    assert adapter.count('"02:00:00:00:0a:') >= 2
    assert 'vip6_pool = "fd' in (EXAMPLES / "dc-dual-stack.toml").read_text()


def test_the_probe_ports_are_addresses_nodes_can_be_sent_and_ports_of_their_own(tmp_path):
    _keys(tmp_path, "dc.key")
    dc = """
[dc]
listen = "[::]:7400"
private_key_file = "dc.key"
database = "dc.sqlite"
zone = "ntm.example"
vip_pool = "10.99.0.0/16"
"""
    wildcard = _problems(tmp_path, dc + 'probe_listen = "0.0.0.0:7401"\n')
    assert "write the DC's own address" in wildcard["dc.probe_listen"]
    alone = _problems(tmp_path, dc + 'filter_probe_listen = "198.51.100.10:7402"\n')
    assert "set dc.probe_listen as well" in alone["dc.filter_probe_listen"]
    same = _problems(
        tmp_path, dc + 'probe_listen = "198.51.100.10:7401"\nfilter_probe_listen = "[::]:7401"\n'
    )
    assert "choose a port other than" in same["dc.filter_probe_listen"]
    ok = dc + 'probe_listen = "198.51.100.10:7401"\nfilter_probe_listen = "[::]:7402"\n'
    assert _problems(tmp_path, ok) == {}
