"""Tests for `ntma lab` on the real namespace lab (root only, marked netns): layouts and
their traffic, NAT and --block-direct rules, keys and configs on disk, status, and the
lifecycle (down after a crash, readiness, one-line errors).

The lab is built with ``daemons=False`` (or with stand-in daemons that just print the
readiness events), and every fixture tears the lab down even on failure. The lab's own
tests: besides its public API they patch two of its parts (`ntma.lab.state.daemon_specs`,
`ntma.lab.lifecycle.write_keys_and_configs`).
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from ntma import lab
from ntma.lab import (
    ETC_NETNS,
    DaemonSpec,
    LabError,
    LabNotReady,
    LabState,
    lab_down,
    lab_status,
    lab_up,
    lifecycle,
    live_namespaces,
    ns_exec,
    ns_run,
    root_link_names,
    start_daemon,
    stop_daemon,
    wait_log_events,
)
from ntma.lab import state as lab_state

from .netns_util import DEFAULT_NAMESPACES, GN_NAMESPACES

netns = pytest.mark.netns
OpenLab = Callable[..., AbstractContextManager[LabState]]


def _lab(open_lab: OpenLab, run_dir: Path, **kwargs: Any) -> Iterator[LabState]:
    with open_lab(run_dir, daemons=False, **kwargs) as state:
        yield state


# --------------------------------------------------------------------------- probes


def ping(ns: str, dst: str) -> bool:
    """One ICMP echo from `ns`: `ping -c1 -W2`, or a raw-socket stand-in without iputils."""
    if shutil.which("ping"):
        return ns_run(ns, "ping", "-c1", "-W2", dst, check=False).returncode == 0
    return ns_run(ns, sys.executable, "-c", ICMP_ECHO, dst, check=False).returncode == 0


ICMP_ECHO = r"""
import os, socket, struct, sys
def csum(b):
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF
dst, ident, body = sys.argv[1], os.getpid() & 0xFFFF, b"ntma-lab"
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
s.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, 1) + body, (dst, 0))
while True:
    data, (src, _) = s.recvfrom(2048)
    ihl = (data[0] & 0xF) * 4
    kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    if kind == 0 and rid == ident and src == dst:
        sys.exit(0)
"""

UDP_ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
try:
    data, peer = s.recvfrom(2048)
except TimeoutError:
    print("nothing", flush=True)
    sys.exit(0)
s.sendto(data, peer)
print(peer[0], peer[1], flush=True)
"""

UDP_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.sendto(b"hello ntma", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recvfrom(2048)[0].decode(), flush=True)
except TimeoutError:
    print("no echo", flush=True)
"""


def udp_exchange(
    client_ns: str, server_ns: str, server_ip: str, port: int, *, timeout: float = 5.0
) -> str | None:
    """One datagram from `client_ns` to a one-shot echo server at server_ip:port in
    `server_ns`: the source address the server saw (after any NAT), with the echo checked to
    have come back; None when the datagram never arrived within `timeout`."""
    server = ns_exec(
        server_ns,
        sys.executable,
        "-c",
        UDP_ECHO_SERVER,
        server_ip,
        str(port),
        str(timeout),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        reply = ns_run(
            client_ns,
            sys.executable,
            "-c",
            UDP_CLIENT,
            server_ip,
            str(port),
            str(timeout),
            timeout=timeout + 10,
        ).stdout.strip()
        out, err = server.communicate(timeout=timeout + 10)
        assert server.returncode == 0, err
        if out.split() == ["nothing"]:
            assert reply == "no echo"
            return None
        assert reply == "hello ntma"
        return out.split()[0]
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def udp_source_seen_by_dc(client_ns: str, port: int = 9999) -> str:
    """Send a datagram from `client_ns` to a one-shot echo server in ntma-dc.

    Returns the source address the DC side saw (after any NAT); asserts the echo came back.
    """
    seen = udp_exchange(client_ns, "ntma-dc", lab.DC_IP, port)
    assert seen is not None, f"a datagram from {client_ns} did not reach the DC"
    return seen


def nft_counter(ns: str, family: str, table: str) -> int:
    """Packets counted by the (first) counter in nftables table `family table` of `ns`."""
    out = ns_run(ns, "nft", "list", "table", family, table).stdout
    return int(out.split("counter packets ", 1)[1].split()[0])


def addresses(status: dict[str, Any], ns: str) -> dict[str, list[str]]:
    return {i["ifname"]: i["addresses"] for i in status["namespaces"][ns]["interfaces"]}


def has_v4(status: dict[str, Any], ns: str, ifname: str, cidr: str) -> bool:
    return cidr in addresses(status, ns).get(ifname, [])


def v4(status: dict[str, Any], ns: str, ifname: str) -> list[str]:
    return [a for a in addresses(status, ns)[ifname] if ":" not in a]


def sysctl(ns: str, name: str) -> str:
    return ns_run(ns, "sysctl", "-n", name).stdout.strip()


def routes(ns: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ip", "-j", "-n", ns, "-4", "route"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return json.loads(out) if out else []


def expected_adapter_toml(run_dir: Path, dc_public_key: str) -> str:
    return (
        "[adapter]\n"
        'fqdn = "gn.ntm.example"\n'
        f'private_key_file = "{run_dir}/keys/adapter.key"\n'
        'gn_interface = "gn0"\n'
        'listen = "0.0.0.0:7401"\n'
        'passthrough_tun = "ntmpt0"\n'
        "mtu = 1400\n"
        "lease_time = 600\n"
        "default_device = false\n"
        "max_devices = 64\n"
        f'control_socket = "{run_dir}/ctl/adapter.sock"\n'
        'metrics_listen = "127.0.0.1:9400"\n'
        "\n"
        "[dc]\n"
        'address = "198.51.100.10:7400"\n'
        f'public_key = "{dc_public_key}"\n'
        "\n"
        "[dns]\n"
        'upstream = "198.51.100.20:53"\n'
        'ntm_suffixes = ["ntm.example"]\n'
        "\n"
        "[devices]\n"
        '"02:00:00:00:0a:01" = "gn.ntm.example"\n'
        "\n"
        "[log]\n"
        'level = "info"\n'
        "stats_interval = 2\n"
    )


# --------------------------------------------------------------------------- default lab


@netns
class TestDefaultLab:
    """mn behind a cone NAT, cn directly on the Internet segment (the defaults)."""

    @pytest.fixture(scope="class")
    def run_dir(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp("lab")

    @pytest.fixture(scope="class")
    def state(
        self, root_links_before: list[str], run_dir: Path, open_lab: OpenLab
    ) -> Iterator[LabState]:
        yield from _lab(open_lab, run_dir)

    def test_ping_dc_from_behind_nat(self, state: dict[str, Any]) -> None:
        assert ping("ntma-mn", lab.DC_IP)
        assert ping("ntma-cn", lab.DC_IP)

    def test_dc_sees_nat_public_address(self, state: dict[str, Any]) -> None:
        assert udp_source_seen_by_dc("ntma-mn") == "198.51.100.41"
        assert udp_source_seen_by_dc("ntma-cn", port=9998) == "198.51.100.30"
        assert state["nodes"]["mn"]["public_address"] == "198.51.100.41"

    def test_relay_host_reachable_and_nothing_blocked(
        self, state: dict[str, Any], run_dir: Path
    ) -> None:
        status = lab_status(run_dir)
        assert v4(status, "ntma-rs", "eth0") == ["198.51.100.60/24"]
        rs = status["namespaces"]["ntma-rs"]
        assert (rs["role"], rs["daemon"]) == ("relay", "relay")
        assert rs["config"] == str(run_dir / "configs" / "relay.toml")
        assert udp_exchange("ntma-mn", "ntma-rs", lab.RS_IP, 7500) == "198.51.100.41"
        # without --block-direct, NTM ends reach each other directly
        assert ns_run("ntma-inet", "nft", "list", "ruleset").stdout.strip() == ""
        assert udp_exchange("ntma-mn", "ntma-cn", "198.51.100.30", 9996) == "198.51.100.41"
        assert status["block_direct"]["enabled"] is False
        assert status["routes"] == [] and status["fallbacks"] == [] and status["nat_types"] == {}

    def test_dns_via_dnsmasq(self, state: dict[str, Any]) -> None:
        out = ns_run(
            "ntma-mn", "dig", "+short", "+time=2", "+tries=2", "@198.51.100.20", "web.example"
        )
        assert out.stdout.split() == ["198.51.100.20"]

    def test_http_from_behind_nat(self, state: dict[str, Any]) -> None:
        out = ns_run("ntma-mn", "curl", "-s", "--max-time", "5", "http://198.51.100.20/")
        assert "ordinary web host" in out.stdout

    def test_node_resolv_conf(self, state: dict[str, Any]) -> None:
        for ns in ("ntma-mn", "ntma-cn"):
            assert (ETC_NETNS / ns / "resolv.conf").read_text() == "nameserver 127.0.0.1\n"
        # `ip netns exec` bind-mounts it over /etc/resolv.conf inside the namespace
        assert "nameserver 127.0.0.1" in ns_run("ntma-mn", "cat", "/etc/resolv.conf").stdout

    def test_gn_resolv_conf(self, state: dict[str, Any]) -> None:
        """dhclient-script in ntma-gn writes this file, never the machine's resolv.conf."""
        path = ETC_NETNS / "ntma-gn" / "resolv.conf"
        assert path.read_text() == lab.GN_RESOLV_CONF
        assert lab.GN_RESOLV_CONF.startswith("#") and lab.GN_RESOLV_CONF.count("\n") == 1
        assert state["gn"]["resolv_conf"] == str(path)
        assert ns_run("ntma-gn", "cat", "/etc/resolv.conf").stdout == lab.GN_RESOLV_CONF

    def test_gn_has_one_unaddressed_interface(self, state: dict[str, Any], run_dir: Path) -> None:
        status = lab_status(run_dir)
        assert set(addresses(status, "ntma-gn")) == {"lo", "eth0"}
        eth0 = next(
            i for i in status["namespaces"]["ntma-gn"]["interfaces"] if i["ifname"] == "eth0"
        )
        assert eth0["addresses"] == []  # no IPv4, and no IPv6 link-local either
        assert eth0["state"] == "UP"
        assert routes("ntma-gn") == []
        assert sysctl("ntma-gn", "net.ipv6.conf.eth0.disable_ipv6") == "1"

    def test_adapter_interfaces(self, state: dict[str, Any], run_dir: Path) -> None:
        status = lab_status(run_dir)
        assert set(addresses(status, "ntma-adapter")) == {"lo", "gn0", "eth0"}
        assert addresses(status, "ntma-adapter")["gn0"] == []
        assert v4(status, "ntma-adapter", "eth0") == ["10.10.3.2/24"]
        assert has_v4(status, "ntma-adapter-nat", "wan0", "198.51.100.51/24")
        assert has_v4(status, "ntma-adapter-nat", "lan0", "10.10.3.1/24")
        default = [r for r in routes("ntma-adapter") if r["dst"] == "default"]
        assert [(r["gateway"], r["dev"]) for r in default] == [("10.10.3.1", "eth0")]
        assert sysctl("ntma-adapter", "net.ipv4.ip_forward") == "1"
        assert sysctl("ntma-adapter", "net.ipv6.conf.gn0.disable_ipv6") == "1"

    def test_gn_link_with_static_test_addresses(self, state: dict[str, Any]) -> None:
        ip_gn = ["ip", "-n", "ntma-gn", "addr", "{}", "192.0.2.2/24", "dev", "eth0"]
        ip_ad = ["ip", "-n", "ntma-adapter", "addr", "{}", "192.0.2.1/24", "dev", "gn0"]
        try:
            for cmd in (ip_gn, ip_ad):
                subprocess.run([c.format("add") for c in cmd], check=True, capture_output=True)
            assert ping("ntma-gn", "192.0.2.1")
            assert ping("ntma-adapter", "192.0.2.2")
        finally:
            for cmd in (ip_gn, ip_ad):
                subprocess.run([c.format("del") for c in cmd], capture_output=True)
        status = lab_status(Path(state["run_dir"]))
        assert addresses(status, "ntma-gn")["eth0"] == []
        assert addresses(status, "ntma-adapter")["gn0"] == []

    def test_adapter_reaches_dc_through_its_nat(self, state: dict[str, Any]) -> None:
        assert ping("ntma-adapter", lab.DC_IP)
        assert udp_source_seen_by_dc("ntma-adapter", port=9997) == "198.51.100.51"
        adapter = state["adapter"]
        assert (adapter["address"], adapter["public_address"]) == ("10.10.3.2", "198.51.100.51")
        assert (adapter["nat"], adapter["nat_ns"]) == ("cone", "ntma-adapter-nat")

    def test_status_lists_namespaces_and_addresses(
        self, state: dict[str, Any], run_dir: Path
    ) -> None:
        status = json.loads(json.dumps(lab_status(run_dir)))  # JSON-serialisable
        assert status["up"] is True
        assert set(status["namespaces"]) >= DEFAULT_NAMESPACES
        assert all(status["namespaces"][ns]["exists"] for ns in DEFAULT_NAMESPACES)
        assert has_v4(status, "ntma-dc", "eth0", "198.51.100.10/24")
        assert has_v4(status, "ntma-web", "eth0", "198.51.100.20/24")
        assert has_v4(status, "ntma-cn", "eth0", "198.51.100.30/24")
        assert has_v4(status, "ntma-mn", "eth0", "10.10.1.2/24")
        assert has_v4(status, "ntma-mn-nat", "wan0", "198.51.100.41/24")
        assert has_v4(status, "ntma-mn-nat", "lan0", "10.10.1.1/24")
        assert "br0" in addresses(status, "ntma-inet")
        mn = status["namespaces"]["ntma-mn"]
        assert (mn["role"], mn["fqdn"], mn["nat"]) == ("node", "mn.ntm.example", "cone")
        assert status["namespaces"]["ntma-cn"]["nat"] == "none"
        assert status["daemons"]["web"]["alive"] and status["daemons"]["dnsmasq"]["alive"]
        assert status["daemons"]["dc"]["pid"] is None  # daemons=False
        assert status["daemons"]["adapter"]["pid"] is None
        assert status["daemons"]["adapter"]["ns"] == "ntma-adapter"
        assert set(status["keys"]) == {"dc", "rs", "mn", "cn", "adapter"}
        assert status["daemons"]["relay"]["ns"] == "ntma-rs"
        assert status["daemons"]["relay"]["pid"] is None
        assert status["logs"]["dc"].endswith("/logs/dc.log")

    def test_status_lists_gn_and_adapter(self, state: dict[str, Any], run_dir: Path) -> None:
        status = json.loads(json.dumps(lab_status(run_dir)))
        nss = status["namespaces"]
        assert {ns: nss[ns]["role"] for ns in GN_NAMESPACES} == {
            "ntma-gn": "general-node",
            "ntma-adapter": "adapter",
            "ntma-adapter-nat": "nat",
        }
        assert all(nss[ns]["exists"] for ns in GN_NAMESPACES)
        adapter = nss["ntma-adapter"]
        assert (adapter["fqdn"], adapter["nat"]) == ("gn.ntm.example", "cone")
        assert adapter["config"] == str(run_dir / "configs" / "adapter.toml")
        assert adapter["log"] == str(run_dir / "logs" / "adapter.log")
        assert nss["ntma-adapter-nat"]["nat"] == "cone"
        assert "config" not in nss["ntma-gn"]
        assert status["adapter"]["fqdn"] == "gn.ntm.example"
        assert status["adapter"]["config"] == adapter["config"]
        assert status["adapter"]["log"] == adapter["log"]
        assert status["adapter"]["autostart"] is False  # daemons=False
        assert status["gn"]["ns"] == "ntma-gn" and status["nat"]["adapter"] == "cone"

    def test_cli_status(
        self, state: dict[str, Any], run_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert lab.main(["status", "--run-dir", str(run_dir), "--json"]) == 0
        namespaces = json.loads(capsys.readouterr().out)["namespaces"]
        assert set(namespaces) >= DEFAULT_NAMESPACES
        assert namespaces["ntma-gn"]["role"] == "general-node"
        assert namespaces["ntma-adapter"]["role"] == "adapter"
        assert namespaces["ntma-adapter-nat"]["role"] == "nat"
        assert lab.main(["status", "--run-dir", str(run_dir)]) == 0
        text = capsys.readouterr().out
        assert "ntma-mn-nat" in text and "198.51.100.41/24" in text
        assert "general-node" in text and "fqdn=gn.ntm.example" in text
        assert "10.10.3.2/24" in text and "198.51.100.51/24" in text

    def test_keys_and_configs(self, state: dict[str, Any], run_dir: Path) -> None:
        keys = state["keys"]
        for name in ("dc", "rs", "mn", "cn", "adapter"):
            key_file = Path(keys[name]["private_key_file"])
            assert key_file.parent == run_dir / "keys"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            assert len(base64.b64decode(key_file.read_text().strip())) == 32
        dc = tomllib.loads((run_dir / "configs" / "dc.toml").read_text())
        assert dc["dc"]["listen"] == "198.51.100.10:7400"
        assert dc["dc"]["private_key_file"] == keys["dc"]["private_key_file"]
        assert dc["dc"]["database"] == str(run_dir / "dc.sqlite")
        assert dc["admission"] == {
            "mn.ntm.example": keys["mn"]["public_key"],
            "cn.ntm.example": keys["cn"]["public_key"],
            "gn.ntm.example": keys["adapter"]["public_key"],
        }
        assert dc["dc"]["probe_listen"] == "198.51.100.10:7401"
        assert dc["relays"] == [
            {"address": "198.51.100.60:7500", "public_key": keys["rs"]["public_key"]}
        ]
        assert dc["log"] == {"level": "info", "stats_interval": 2}
        relay = tomllib.loads((run_dir / "configs" / "relay.toml").read_text())
        assert relay == {
            "relay": {
                "listen": "198.51.100.60:7500",
                "private_key_file": str(run_dir / "keys" / "rs.key"),
                "idle_timeout": 60,
                "control_socket": str(run_dir / "ctl" / "relay.sock"),
                "metrics_listen": "127.0.0.1:9400",  # in its own namespace
            },
            "dc": {"public_key": keys["dc"]["public_key"]},
            "log": {"level": "info", "stats_interval": 2},
        }
        mn = tomllib.loads((run_dir / "configs" / "mn.toml").read_text())
        assert mn["node"]["fqdn"] == "mn.ntm.example"
        assert mn["dc"] == {"address": "198.51.100.10:7400", "public_key": keys["dc"]["public_key"]}
        assert mn["dns"]["upstream"] == "198.51.100.20:53"
        cn = tomllib.loads((run_dir / "configs" / "cn.toml").read_text())
        assert cn["node"]["private_key_file"] == keys["cn"]["private_key_file"]

    def test_adapter_key_and_config(self, state: dict[str, Any], run_dir: Path) -> None:
        keys = state["keys"]
        assert keys["adapter"]["private_key_file"] == str(run_dir / "keys" / "adapter.key")
        path = run_dir / "configs" / "adapter.toml"
        assert state["configs"]["adapter"] == str(path)
        assert path.read_text() == expected_adapter_toml(run_dir, keys["dc"]["public_key"])
        adapter = tomllib.loads(path.read_text())["adapter"]
        assert adapter["private_key_file"] == keys["adapter"]["private_key_file"]
        cmd = state["daemons"]["adapter"]["cmd"]
        assert cmd[1:] == ["-m", "ntma", "adapter", "--config", str(path)]
        assert state["daemons"]["adapter"]["log"] == str(run_dir / "logs" / "adapter.log")

    def test_configs_load_with_the_project_loader(self, state: dict[str, Any]) -> None:
        config = pytest.importorskip("ntma.config")
        dc = config.load_dc_config(Path(state["configs"]["dc"]))
        mn = config.load_node_config(Path(state["configs"]["mn"]))
        cn = config.load_node_config(Path(state["configs"]["cn"]))
        assert dc.listen == mn.dc_address == (lab.DC_IP, lab.DC_PORT)
        assert mn.dc_public_key == dc.key.public
        adapter_pub = base64.b64decode(state["keys"]["adapter"]["public_key"])
        assert dc.admission == {
            "mn.ntm.example": mn.key.public,
            "cn.ntm.example": cn.key.public,
            "gn.ntm.example": adapter_pub,
        }

    def test_nat_ruleset_installed(self, state: dict[str, Any]) -> None:
        for ns in ("ntma-mn-nat", "ntma-adapter-nat"):
            rules = ns_run(ns, "nft", "list", "ruleset").stdout
            assert 'oifname "wan0" masquerade' in rules and "fully-random" not in rules
            assert 'iifname "wan0" ct state new meta l4proto udp counter' in rules
            assert sysctl(ns, "net.ipv4.ip_forward") == "1"

    def test_nat_router_drops_unsolicited_udp(self, state: dict[str, Any]) -> None:
        """As a home router: nothing unsolicited gets in (and leaves no conntrack entry)."""
        before = nft_counter("ntma-mn-nat", "ip", "filter")
        assert udp_exchange("ntma-cn", "ntma-mn-nat", "198.51.100.41", 9995, timeout=1) is None
        assert nft_counter("ntma-mn-nat", "ip", "filter") > before
        # ...while replies to its own mappings come back (the echo from the DC)
        assert udp_source_seen_by_dc("ntma-mn", port=9994) == "198.51.100.41"

    def test_root_namespace_untouched(
        self, state: dict[str, Any], root_links_before: list[str]
    ) -> None:
        assert root_link_names() == root_links_before

    def test_restart_daemon_with_stand_in(self, state: dict[str, Any]) -> None:
        """start_daemon / wait_log_events / stop_daemon, with a stand-in for the DC."""
        fake = [
            sys.executable,
            "-c",
            "import json, time; print(json.dumps({'event': 'dc_ready'})); time.sleep(60)",
        ]
        state.daemons["dc"].cmd = fake
        for _ in range(2):  # the second round must not match the first round's log line
            pid = start_daemon(state, "dc")
            wait_log_events(state, {"dc": "dc_ready"}, timeout=10)
            assert lab.daemon_alive(state, "dc")
            stop_daemon(state, "dc")
            assert not lab.pid_alive(pid)
            assert state["daemons"]["dc"]["pid"] is None
        assert Path(state["daemons"]["dc"]["log"]).read_text().count("dc_ready") == 2


# --------------------------------------------------------------------------- other NAT layout


@netns
class TestCnBehindNat:
    @pytest.fixture(scope="class")
    def run_dir(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp("lab-cn-nat")

    @pytest.fixture(scope="class")
    def state(
        self, root_links_before: list[str], run_dir: Path, open_lab: OpenLab
    ) -> Iterator[LabState]:
        yield from _lab(
            open_lab,
            run_dir,
            mn_nat="none",
            cn_nat="cone",
            adapter_nat="symmetric",
            block_direct=True,
        )

    def test_layout(self, state: dict[str, Any], run_dir: Path) -> None:
        status = lab_status(run_dir)
        assert "ntma-cn-nat" in live_namespaces()
        assert "ntma-mn-nat" not in live_namespaces()
        assert has_v4(status, "ntma-mn", "eth0", "198.51.100.40/24")
        assert has_v4(status, "ntma-cn", "eth0", "10.10.2.2/24")
        assert has_v4(status, "ntma-cn-nat", "wan0", "198.51.100.31/24")

    def test_traffic(self, state: dict[str, Any]) -> None:
        assert ping("ntma-cn", lab.DC_IP)
        assert udp_source_seen_by_dc("ntma-cn") == "198.51.100.31"
        assert udp_source_seen_by_dc("ntma-mn", port=9998) == "198.51.100.40"

    def test_adapter_behind_symmetric_nat(self, state: dict[str, Any], run_dir: Path) -> None:
        rules = ns_run("ntma-adapter-nat", "nft", "list", "ruleset").stdout
        assert 'oifname "wan0" masquerade fully-random' in rules
        assert lab_status(run_dir)["namespaces"]["ntma-adapter"]["nat"] == "symmetric"
        assert udp_source_seen_by_dc("ntma-adapter", port=9997) == "198.51.100.51"

    def test_block_direct_drops_udp_between_ntm_ends_only(
        self, state: dict[str, Any], run_dir: Path
    ) -> None:
        rules = ns_run("ntma-inet", "nft", "list", "table", "bridge", lab.BLOCK_DIRECT_TABLE)
        assert "ip saddr @ntm_ends ip daddr @ntm_ends" in rules.stdout
        assert lab_status(run_dir)["block_direct"]["enabled"] is True
        # cn (behind its NAT, .31) -> the public mn (.40): dropped on the Internet segment
        before = nft_counter("ntma-inet", "bridge", lab.BLOCK_DIRECT_TABLE)
        assert udp_exchange("ntma-cn", "ntma-mn", "198.51.100.40", 9990, timeout=2) is None
        assert nft_counter("ntma-inet", "bridge", lab.BLOCK_DIRECT_TABLE) > before
        # the public mn -> the adapter's NAT (.51): dropped too
        assert udp_exchange("ntma-mn", "ntma-adapter-nat", "198.51.100.51", 9991, timeout=2) is None
        # the DC, the relay and the web host stay reachable from every end
        assert udp_source_seen_by_dc("ntma-cn", port=9992) == "198.51.100.31"
        assert udp_exchange("ntma-cn", "ntma-rs", lab.RS_IP, 9993) == "198.51.100.31"
        assert udp_exchange("ntma-mn", "ntma-web", lab.WEB_IP, 9994) == "198.51.100.40"
        # ...and it is UDP only: ICMP between the ends passes
        assert ping("ntma-cn", "198.51.100.40")

    def test_zz_without_the_block_the_same_datagram_arrives(self, state: dict[str, Any]) -> None:
        """Runs last in the class (it removes the block)."""
        ns_run("ntma-inet", "nft", "delete", "table", "bridge", lab.BLOCK_DIRECT_TABLE)
        assert udp_exchange("ntma-cn", "ntma-mn", "198.51.100.40", 9989) == "198.51.100.31"


@netns
class TestSymmetricEverywhere:
    """Every NTM end behind a symmetric NAT, with direct UDP between them blocked."""

    @pytest.fixture(scope="class")
    def run_dir(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp("lab-symmetric")

    @pytest.fixture(scope="class")
    def state(
        self, root_links_before: list[str], run_dir: Path, open_lab: OpenLab
    ) -> Iterator[LabState]:
        yield from _lab(
            open_lab,
            run_dir,
            mn_nat="symmetric",
            cn_nat="symmetric",
            adapter_nat="symmetric",
            block_direct=True,
        )

    def test_every_router_is_symmetric(self, state: dict[str, Any], run_dir: Path) -> None:
        status = lab_status(run_dir)
        for name in ("mn", "cn", "adapter"):
            rules = ns_run(f"ntma-{name}-nat", "nft", "list", "ruleset").stdout
            assert 'oifname "wan0" masquerade fully-random' in rules
            assert status["namespaces"][f"ntma-{name}"]["nat"] == "symmetric"
            assert status["nat"][name] == "symmetric"
        assert udp_source_seen_by_dc("ntma-mn", port=9980) == "198.51.100.41"
        assert udp_source_seen_by_dc("ntma-cn", port=9981) == "198.51.100.31"
        assert udp_source_seen_by_dc("ntma-adapter", port=9982) == "198.51.100.51"

    def test_block_direct(self, state: dict[str, Any]) -> None:
        # cn -> mn's NAT WAN address: dropped on the Internet segment (it never gets to the
        # router, whose own firewall counter stays put); cn -> the DC and the relay: arrive
        blocked = nft_counter("ntma-inet", "bridge", lab.BLOCK_DIRECT_TABLE)
        firewall = nft_counter("ntma-mn-nat", "ip", "filter")
        assert udp_exchange("ntma-cn", "ntma-mn-nat", "198.51.100.41", 9983, timeout=2) is None
        assert nft_counter("ntma-inet", "bridge", lab.BLOCK_DIRECT_TABLE) > blocked
        assert nft_counter("ntma-mn-nat", "ip", "filter") == firewall
        assert udp_source_seen_by_dc("ntma-cn", port=9984) == "198.51.100.31"
        assert udp_exchange("ntma-adapter", "ntma-rs", lab.RS_IP, 9985) == "198.51.100.51"


@netns
class TestCnBehindMnsNat:
    """--cn-nat same: cn on mn's NAT LAN (a bridge in ntma-mn-nat), no ntma-cn-nat."""

    @pytest.fixture(scope="class")
    def run_dir(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp("lab-same-nat")

    @pytest.fixture(scope="class")
    def state(
        self, root_links_before: list[str], run_dir: Path, open_lab: OpenLab
    ) -> Iterator[LabState]:
        yield from _lab(open_lab, run_dir, mn_nat="cone", cn_nat="same", adapter_nat="none")

    def test_layout(self, state: dict[str, Any], run_dir: Path) -> None:
        status = lab_status(run_dir)
        assert "ntma-cn-nat" not in live_namespaces()
        assert set(live_namespaces()) == (DEFAULT_NAMESPACES - {"ntma-adapter-nat"})
        assert v4(status, "ntma-mn-nat", "lan0") == ["10.10.1.1/24"]
        assert v4(status, "ntma-mn", "eth0") == ["10.10.1.2/24"]
        assert v4(status, "ntma-cn", "eth0") == ["10.10.1.3/24"]
        ports = json.loads(
            ns_run("ntma-mn-nat", "ip", "-j", "link", "show", "master", "lan0").stdout
        )
        assert sorted(p["ifname"] for p in ports) == ["lan-cn", "lan-mn"]
        default = [r for r in routes("ntma-cn") if r["dst"] == "default"]
        assert [r["gateway"] for r in default] == ["10.10.1.1"]
        assert status["namespaces"]["ntma-cn"]["nat"] == "same"
        cn = status["nodes"]["cn"]
        assert (cn["nat_ns"], cn["address"], cn["public_address"]) == (
            "ntma-mn-nat",
            "10.10.1.3",
            "198.51.100.41",
        )

    def test_traffic(self, state: dict[str, Any]) -> None:
        assert ping("ntma-cn", "10.10.1.2")  # across the shared LAN, not through the NAT
        assert udp_exchange("ntma-mn", "ntma-cn", "10.10.1.3", 9970) == "10.10.1.2"
        assert udp_source_seen_by_dc("ntma-cn", port=9971) == "198.51.100.41"
        assert udp_source_seen_by_dc("ntma-mn", port=9972) == "198.51.100.41"
        assert ping("ntma-cn", lab.RS_IP)


# --------------------------------------------------------------------------- lifecycle


@netns
def test_down_removes_everything_and_is_idempotent(
    tmp_path: Path, root_links_before: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        assert lab.main(["up", "--no-daemons", "--run-dir", str(tmp_path)]) == 0
        assert "lab up in" in capsys.readouterr().out
        assert (ETC_NETNS / "ntma-gn" / "resolv.conf").is_file()
        # a stray process inside a lab namespace that state.json knows nothing about
        stray = ns_exec("ntma-dc", "sleep", "300")
        gn_stray = ns_exec("ntma-gn", "sleep", "300")  # e.g. a dhclient left behind
        assert (tmp_path / "state.json").exists()
        web_pid = json.loads((tmp_path / "state.json").read_text())["daemons"]["web"]["pid"]
    finally:
        lab_down(tmp_path)
    assert stray.wait(timeout=5) is not None
    assert gn_stray.wait(timeout=5) is not None
    assert not lab.pid_alive(web_pid)
    assert not [n for n in live_namespaces() if n.startswith("ntma-")]
    assert not any(
        line.startswith("ntma-")
        for line in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True
        ).stdout.splitlines()
    )
    assert not (ETC_NETNS / "ntma-mn").exists()
    assert not (ETC_NETNS / "ntma-cn").exists()
    assert not (ETC_NETNS / "ntma-gn").exists()
    assert not (tmp_path / "state.json").exists()
    assert root_link_names() == root_links_before
    lab_down(tmp_path)  # second down: no error
    assert lab.main(["down", "--run-dir", str(tmp_path)]) == 0
    assert lab.main(["status", "--run-dir", str(tmp_path)]) == 3


@netns
def test_up_replaces_running_lab_and_cleans_after_crash(
    tmp_path: Path, root_links_before: list[str]
) -> None:
    try:
        lab_up(tmp_path / "a", daemons=False)
        # a second `up` (even with another run dir) first removes the running lab
        state = lab_up(tmp_path / "b", daemons=False, mn_nat="none")
        assert "ntma-mn-nat" not in live_namespaces()
        assert state["nodes"]["mn"]["address"] == "198.51.100.40"
    finally:
        lab_down(tmp_path / "b")
        lab_down(tmp_path / "a")
    assert live_namespaces() == []


@netns
def test_failed_up_tears_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_links_before: list[str]
) -> None:
    def boom(state: dict[str, Any]) -> None:
        raise LabError("injected failure")

    monkeypatch.setattr(lifecycle, "write_keys_and_configs", boom)
    try:
        with pytest.raises(LabError, match="injected failure"):
            lab_up(tmp_path, daemons=False)
        assert live_namespaces() == []
        assert not (ETC_NETNS / "ntma-mn").exists()
        assert not (ETC_NETNS / "ntma-gn").exists()
        assert not (tmp_path / "state.json").exists()
        assert root_link_names() == root_links_before
    finally:
        lab_down(tmp_path)


def _stand_in_daemons(
    event_by_role: dict[str, str | None], fail_by_role: dict[str, str] | None = None
) -> Any:
    """Wrap the lab's daemon_specs so dc/relay/node/adapter commands are stand-ins.

    A stand-in prints the readiness event for its role (the relay: relay_ready, the adapter:
    as the nodes, unless given), or, for a role in `fail_by_role`, writes that message to
    stderr and exits 1.
    """
    real = lab_state.daemon_specs
    event_by_role = {"relay": "relay_ready", **event_by_role}

    def specs(run_dir: Path, nodes: Any) -> dict[str, DaemonSpec]:
        out = real(run_dir, nodes)
        for spec in out.values():
            if spec.cmd[2:3] != ["ntma"]:
                continue
            role = spec.cmd[3]  # dc | relay | node | adapter
            if role in (fail_by_role or {}):
                message = (fail_by_role or {})[role]
                spec.cmd = [sys.executable, "-c", f"import sys; sys.exit({message!r})"]
                continue
            event = event_by_role.get(role, event_by_role["node"])
            line = f"print({json.dumps(json.dumps({'event': event}))})" if event else "pass"
            spec.cmd = [
                sys.executable,
                "-c",
                f"import time; print('not json'); {line}; time.sleep(60)",
            ]
        return out

    return specs


@netns
def test_up_waits_for_daemon_readiness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        lab_state, "daemon_specs", _stand_in_daemons({"dc": "dc_ready", "node": "registered"})
    )
    try:
        state = lab_up(tmp_path, daemons=True, wait_s=15)
        status = lab_status(tmp_path)
        names = ("dc", "relay", "mn", "cn", "adapter", "web")
        assert all(status["daemons"][n]["alive"] for n in names)
        assert state["daemons"]["relay"]["ns"] == "ntma-rs"
        assert state["daemons"]["mn"]["ns"] == "ntma-mn"
        assert state["daemons"]["adapter"]["ns"] == "ntma-adapter"
        assert status["adapter"]["autostart"] is True
    finally:
        lab_down(tmp_path)
    assert not lab.pid_alive(state["daemons"]["dc"]["pid"])
    assert not lab.pid_alive(state["daemons"]["adapter"]["pid"])


@netns
def test_up_no_adapter_skips_only_the_adapter_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        lab_state, "daemon_specs", _stand_in_daemons({"dc": "dc_ready", "node": "registered"})
    )
    try:
        assert lab.main(["up", "--no-adapter", "--wait", "15", "--run-dir", str(tmp_path)]) == 0
        status = lab_status(tmp_path)
        assert all(status["daemons"][n]["alive"] for n in ("dc", "mn", "cn", "web"))
        assert status["daemons"]["adapter"]["pid"] is None
        assert status["adapter"]["autostart"] is False
        assert set(live_namespaces()) >= DEFAULT_NAMESPACES  # the topology is still built
    finally:
        lab_down(tmp_path)


@netns
def test_adapter_exit_is_one_clear_line_and_nodes_stay_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """E.g. while the `adapter` role does not exist yet: argparse rejects it and exits."""
    why = "ntma: error: argument ROLE: invalid choice: 'adapter' (see --help)"
    monkeypatch.setattr(
        lab_state,
        "daemon_specs",
        _stand_in_daemons({"dc": "dc_ready", "node": "registered"}, {"adapter": why}),
    )
    try:
        with pytest.raises(LabNotReady) as info:
            lab_up(tmp_path, daemons=True, wait_s=15)
        message = str(info.value)
        assert "\n" not in message
        assert message == (
            "adapter exited with status 1 before logging 'registered': "
            f"{why}; read {tmp_path}/logs/adapter.log"
        )
        status = lab_status(tmp_path)  # left up; DC, relay and nodes ready and running
        assert all(status["daemons"][n]["alive"] for n in ("dc", "relay", "mn", "cn"))
        assert not status["daemons"]["adapter"]["alive"]
        # the CLI reports it on one line too
        assert lab.main(["up", "--wait", "15", "--run-dir", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert err.startswith("ntma lab: error: adapter exited with status 1") and why in err
    finally:
        lab_down(tmp_path)


@netns
def test_relay_exit_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    why = "ntma relay: error: relay.listen: cannot bind"
    monkeypatch.setattr(
        lab_state,
        "daemon_specs",
        _stand_in_daemons({"dc": "dc_ready", "node": "registered"}, {"relay": why}),
    )
    try:
        with pytest.raises(LabNotReady) as info:
            lab_up(tmp_path, daemons=True, wait_s=15)
        assert str(info.value) == (
            "relay exited with status 1 before logging 'relay_ready': "
            f"{why}; read {tmp_path}/logs/relay.log"
        )
        status = lab_status(tmp_path)  # left up for inspection
        assert status["daemons"]["dc"]["alive"] and not status["daemons"]["relay"]["alive"]
    finally:
        lab_down(tmp_path)


@netns
def test_cli_adapter_nat_none_puts_adapter_on_the_internet(
    tmp_path: Path, root_links_before: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        argv = ["up", "--no-daemons", "--adapter-nat", "none", "--run-dir", str(tmp_path)]
        assert lab.main(argv) == 0
        assert "198.51.100.50/24" in capsys.readouterr().out
        status = lab_status(tmp_path)
        assert "ntma-adapter-nat" not in live_namespaces()
        assert {"ntma-gn", "ntma-adapter"} <= set(live_namespaces())
        assert v4(status, "ntma-adapter", "eth0") == ["198.51.100.50/24"]
        assert addresses(status, "ntma-adapter")["gn0"] == []
        assert status["namespaces"]["ntma-adapter"]["nat"] == "none"
        assert status["adapter"]["public_address"] == "198.51.100.50"
        assert sysctl("ntma-adapter", "net.ipv4.ip_forward") == "1"
        assert udp_source_seen_by_dc("ntma-adapter", port=9997) == "198.51.100.50"
    finally:
        lab_down(tmp_path)
    assert live_namespaces() == []
    assert root_link_names() == root_links_before


@netns
def test_up_times_out_and_leaves_lab_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        lab_state, "daemon_specs", _stand_in_daemons({"dc": "dc_ready", "node": None})
    )
    try:
        with pytest.raises(LabNotReady, match=r"did not log 'registered'.*logs/mn\.log"):
            lab_up(tmp_path, daemons=True, wait_s=1.5)
        assert set(live_namespaces()) >= DEFAULT_NAMESPACES  # left up for inspection
        assert (tmp_path / "state.json").exists()
    finally:
        lab_down(tmp_path)
