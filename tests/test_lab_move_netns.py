"""`lab move`, `lab restart` and `lab nat-reset` on the real namespace lab (root only,
marked netns), on one lab with its daemons: mn moved cone -> public -> symmetric -> cone,
the adapter's uplink moved, a NAT's mappings flushed, a daemon killed and restarted, and
`lab down` after it all. Tunnels across a move are not tested here (the protocol's part).

The tests run in file order on one lab (module fixture): the moves, then nat-reset on mn's
final cone NAT, then restart, then down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ntma import lab
from ntma.lab import (
    DC_IP,
    lab_down,
    lab_move,
    lab_nat_reset,
    lab_restart,
    lab_status,
    live_namespaces,
    load_state,
    log_size,
    ns_run,
    pid_alive,
    wait_log_events,
)

from .test_lab_netns import ping

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, open_lab: Any) -> Iterator[Path]:
    run = tmp_path_factory.mktemp("move-lab") / "run"
    with open_lab(run):
        yield run


def _ipv4(ns: str, ifname: str) -> list[str]:
    info = json.loads(ns_run(ns, "ip", "-j", "-4", "addr", "show", ifname).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for entry in info for a in entry["addr_info"]]


def _default_via(ns: str) -> str | None:
    out = ns_run(ns, "ip", "-j", "-4", "route", "show", "default").stdout.strip()
    routes = json.loads(out) if out else []
    return routes[0]["gateway"] if routes else None


def _link(ns: str, ifname: str) -> dict[str, Any]:
    """What identifies a veth end: its index, MAC and peer's index (a rebuilt link differs)."""
    (info,) = json.loads(ns_run(ns, "ip", "-j", "link", "show", ifname).stdout)
    return {k: info.get(k) for k in ("ifindex", "address", "link_index", "operstate")}


def _conntrack(ns: str, *args: str) -> int:
    return len(ns_run(ns, "conntrack", "-L", *args).stdout.splitlines())


MN_MOVES = [
    # to, new address on eth0, default route, public address, router now, router gone
    ("public", "198.51.100.40/24", None, "198.51.100.40", None, "ntma-mn-nat"),
    ("symmetric", "10.10.11.2/24", "10.10.11.1", "198.51.100.43", "ntma-mn-nat2", None),
    ("cone", "10.10.1.2/24", "10.10.1.1", "198.51.100.41", "ntma-mn-nat", "ntma-mn-nat2"),
]


def test_mn_moves_while_its_daemon_runs(run_dir: Path) -> None:
    before = load_state(run_dir)
    assert before is not None and before.nodes["mn"].nat == "cone"
    pid, starttime = before.daemons["mn"].pid, before.daemons["mn"].starttime
    for to, cidr, gateway, public, router, gone in MN_MOVES:
        record = lab_move(run_dir, "mn", to)
        assert (record["node"], record["to"], record["new_public_address"]) == ("mn", to, public)
        assert record["started_at"] <= record["down_at"] <= record["up_at"]
        assert record["up_at"] - record["started_at"] < 1.0  # a benchmark times from there
        assert _ipv4("ntma-mn", "eth0") == [cidr]
        assert _default_via("ntma-mn") == gateway
        assert ping("ntma-mn", DC_IP), f"mn cannot reach the DC after moving to {to}"
        namespaces = set(live_namespaces())
        assert gone is None or gone not in namespaces
        if router:
            assert router in namespaces and _ipv4(router, "wan0") == [f"{public}/24"]
        assert pid_alive(pid, starttime)  # the same daemon throughout
        mn = lab_status(run_dir)["nodes"]["mn"]
        assert (mn["public_address"], mn["nat_ns"]) == (public, router)
    assert not {"ntma-mn-nat2"} & set(live_namespaces())


def test_adapter_moves_its_uplink_only(run_dir: Path) -> None:
    gn_side, adapter_side = _link("ntma-gn", "eth0"), _link("ntma-adapter", "gn0")
    record = lab_move(run_dir, "adapter", "symmetric", down_for=0.2)
    assert record["down_at"] + 0.2 <= record["up_at"]
    assert (record["from"], record["new_public_address"]) == ("cone", "198.51.100.53")
    assert _ipv4("ntma-adapter", "eth0") == ["10.10.13.2/24"]
    assert ping("ntma-adapter", DC_IP)
    assert "ntma-adapter-nat" not in live_namespaces()
    assert (_link("ntma-gn", "eth0"), _link("ntma-adapter", "gn0")) == (gn_side, adapter_side)


@pytest.mark.skipif(shutil.which("conntrack") is None, reason="needs conntrack (install.sh)")
def test_nat_reset_flushes_the_mappings(run_dir: Path) -> None:
    assert ping("ntma-mn", DC_IP)  # an ICMP mapping in ntma-mn-nat, besides the daemon's UDP
    before, icmp = _conntrack("ntma-mn-nat"), _conntrack("ntma-mn-nat", "-p", "icmp")
    assert icmp >= 1
    record = lab_nat_reset(run_dir, "mn")
    assert (record["nat_ns"], record["flushed"] >= icmp) == ("ntma-mn-nat", True)
    assert _conntrack("ntma-mn-nat", "-p", "icmp") == 0
    assert _conntrack("ntma-mn-nat") < before
    assert ping("ntma-mn", DC_IP)  # a new mapping for the next packet
    with pytest.raises(lab.LabRefused, match="cn has no NAT of its own"):
        lab_nat_reset(run_dir, "cn")


def test_restart_kills_and_starts_again(run_dir: Path) -> None:
    state = load_state(run_dir)
    assert state is not None
    old = state.daemons["mn"]
    since = log_size(state, "mn")
    record = lab_restart(run_dir, "mn")
    assert record["old_pid"] == old.pid and record["pid"] != old.pid
    assert record["killed_at"] < record["ready_at"]
    assert not pid_alive(old.pid, old.starttime)
    state = load_state(run_dir)
    assert state is not None and state.daemons["mn"].pid == record["pid"]
    wait_log_events(state, {"mn": "registered"}, since={"mn": since}, timeout=5)


def test_down_leaves_no_lab_namespace(run_dir: Path) -> None:
    lab_down(run_dir)
    assert live_namespaces() == []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ntma-" not in out
