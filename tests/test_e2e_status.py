"""`ntma status` on the lab, against the running daemons' control sockets (the lab sets one
per daemon; the namespaces share the file system), run as the CLI a person would run.

One lab: mn behind a symmetric NAT and cn behind a cone NAT (their tunnel goes through the
RS), the adapter behind a cone NAT (its tunnel to cn is hole-punched), the GN leased by
ISC dhclient. Traffic is sent from the GN (ping, through the adapter) and from mn."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ntma.control.cli import control_socket_of
from ntma.lab import lab_restart, load_state, ns_run, stop_daemon

from .netns_util import dig, expected_route

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parent.parent
GN = "ntma-gn"
CN, MN, GN_NAME = "cn.ntm.example", "mn.ntm.example", "gn.ntm.example"
PINGS = 5


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    run = tmp_path_factory.mktemp("status-lab") / "run"
    with open_lab(run, mn_nat="symmetric", cn_nat="cone", dhcp=True) as state:
        cn_vip = dig(GN, CN)  # builds the adapter's tunnel (as the GN)
        ping = ns_run(GN, "ping", "-c", str(PINGS), "-i", "0.2", "-W", "2", cn_vip, check=False)
        assert f"{PINGS} received" in ping.stdout, ping.stdout
        assert dig("ntma-mn", CN) == cn_vip  # builds mn's relayed tunnel
        ping = ns_run("ntma-mn", "ping", "-c", "3", "-i", "0.2", "-W", "2", cn_vip, check=False)
        assert "3 received" in ping.stdout, ping.stdout
        yield state


def _status(state: Any, daemon: str, *extra: str) -> subprocess.CompletedProcess:
    """`python3 -m ntma status --config <daemon's config>` from this worktree."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ntma", "status", "--config", str(state["configs"][daemon])]
    return subprocess.run(
        [*cmd, *extra], capture_output=True, text=True, timeout=30, env=env, cwd=REPO
    )


def _json(state: Any, daemon: str) -> dict[str, Any]:
    result = _status(state, daemon, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _gn_address() -> str:
    info = json.loads(ns_run(GN, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    return next(a["local"] for a in info["addr_info"] if a["family"] == "inet")


def test_the_adapter_lists_its_tunnel_to_cn_with_the_gns_traffic_and_its_device(lab):
    status = _json(lab, "adapter")
    assert status["role"] == "adapter" and status["fqdn"] == GN_NAME
    assert status["registration"]["state"] == "registered"
    assert status["registration"]["nat"] == "cone"
    assert status["dc"]["last_ack_s_ago"] is not None
    (tunnel,) = [t for t in status["tunnels"] if t["peer"] == CN]
    assert tunnel["self"] == GN_NAME
    assert tunnel["route"] == expected_route("cone", "cone")
    assert tunnel["why"].startswith("the DC directed punch")
    assert tunnel["packets_out"] >= PINGS and tunnel["packets_in"] >= PINGS
    assert tunnel["bytes_out"] >= PINGS * 84 and tunnel["bytes_in"] >= PINGS * 84  # ICMP echo
    assert tunnel["handshake_s_ago"] is not None and tunnel["endpoint"]
    (device,) = status["devices"]
    assert (device["name"], device["mac"]) == (GN_NAME, "02:00:00:00:0a:01")
    assert device["vip"] == _gn_address() == status["registration"]["vip"]
    lease = device["lease"]
    assert lease["valid"] and lease["address"] == device["vip"] and lease["expires_in_s"] > 0
    assert device["packets_out"] >= PINGS


def test_the_adapters_table(lab):
    result = _status(lab, "adapter")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"adapter: {GN_NAME}" and "  state: registered" in lines
    assert f"tunnel: {CN}" in lines
    assert any(line.startswith("  route: punch (the DC directed punch") for line in lines)
    assert f"device: {GN_NAME}" in lines
    lease = next(line for line in lines if line.startswith("  lease: "))
    assert "expires in" in lease


def test_the_dc_lists_every_node_and_the_routes_it_decided(lab):
    status = _json(lab, "dc")
    nodes = {n["name"]: n for n in status["nodes"]}
    assert {MN, CN, GN_NAME} <= set(nodes)
    assert all(nodes[name]["online"] for name in (MN, CN, GN_NAME))
    assert nodes[MN]["nat"] == {"ipv4": "symmetric"}
    assert nodes[CN]["nat"] == {"ipv4": "cone"} == nodes[GN_NAME]["nat"]
    routes = {(r["requester"], r["target"]): r for r in status["routes"]}
    assert routes[(MN, CN)]["route"] == "relay" and "symmetric" in routes[(MN, CN)]["why"]
    assert routes[(GN_NAME, CN)]["route"] == "punch"
    table = _status(lab, "dc")
    assert table.returncode == 0
    assert all(name in table.stdout for name in (MN, CN, GN_NAME))
    assert f"{MN} -> {CN}" in table.stdout and "LAST SEEN" in table.stdout


def test_the_relay_lists_the_relayed_tunnels_entry(lab):
    mn_tunnel = next(t for t in _json(lab, "mn")["tunnels"] if t["peer"] == CN)
    assert mn_tunnel["route"] == "relay"
    status = _json(lab, "relay")
    entry = next(e for e in status["entries"] if e["tunnel_id"] == mn_tunnel["tunnel_id"])
    assert all(end["endpoint"] for end in entry["ends"])
    assert entry["packets"] >= 6 and entry["bytes"] > 6 * 84
    assert entry["grant_expires_in_s"] > 0 and entry["idle_expires_in_s"] > 0
    table = _status(lab, "relay")
    assert table.returncode == 0 and str(entry["tunnel_id"]) in table.stdout


def test_cn_a_node_lists_both_peers(lab):
    status = _json(lab, "cn")
    assert status["role"] == "node" and status["registration"]["nat"] == "cone"
    peers = {t["peer"]: t for t in status["tunnels"]}
    assert {MN, GN_NAME} <= set(peers)
    assert peers[GN_NAME]["packets_in"] >= PINGS and peers[MN]["route"] == "relay"
    table = _status(lab, "cn")
    assert table.stdout.splitlines()[0] == f"node: {CN}"
    assert f"tunnel: {MN}" in table.stdout and f"tunnel: {GN_NAME}" in table.stdout


def _socket_of(state: Any, daemon: str) -> Path:
    return control_socket_of(Path(state["configs"][daemon]))[1]


def test_junk_at_the_adapters_socket_leaves_it_answering(lab):
    path = str(_socket_of(lab, "adapter"))
    for junk in (b"\x00" * 5000, b"{}\n", b"[" * 900 + b"\n", b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            try:
                sock.sendall(junk)
                sock.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                pass  # a request too long is cut off unread
    assert _json(lab, "adapter")["registration"]["state"] == "registered"
    ping = ns_run(GN, "ping", "-c", "2", "-i", "0.2", "-W", "2", dig(GN, CN), check=False)
    assert "2 received" in ping.stdout


def test_a_killed_daemons_stale_socket_is_replaced(lab):
    """cn is killed hard (SIGKILL: its socket file stays behind) and started again: the new
    daemon replaces the stale file and answers."""
    path = _socket_of(lab, "cn")
    lab_restart(_run_dir(lab), "cn")
    assert path.is_socket()
    assert _json(lab, "cn")["registration"]["state"] == "registered"


def test_a_stopped_daemon_is_not_running(lab):
    """Last in the module: the relay stays stopped. SIGTERM: it removes its socket."""
    state = load_state(_run_dir(lab))
    stop_daemon(state, "relay")
    assert not _socket_of(lab, "relay").exists()
    result = _status(lab, "relay")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "the relay is not running (nothing listens on" in result.stderr


def _run_dir(state: Any) -> Path:
    return Path(state["run_dir"])
