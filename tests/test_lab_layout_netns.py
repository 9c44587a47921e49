"""The lab with two GNs behind the adapter and a second adapter (`--gns 2 --adapters 2`) on
real namespaces (root only, marked netns): the switch and its ports, the GNs' MACs and
resolv.conf, adapter2 behind its NAT and its GN, `lab move` of adapter2, `lab up --dhcp`
naming each GN without a lease, and `lab down` leaving nothing behind.

With the real daemons: both adapters register, and ntma-gn and ntma-gnb each get a VIP
of their own by DHCP, and ntma-gn and ntma-gn2 on one link each get their own (dhclient and
udhcpc).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ntma import lab
from ntma.lab import ETC_NETNS, LabNotReady, LabState, lab_down, lab_up, live_namespaces, ns_run
from ntma.lab import state as lab_state

from .netns_util import wait_for

pytestmark = pytest.mark.netns

LAYOUT = {"gns": 2, "adapters": 2}
NEW_NAMESPACES = {"ntma-gnsw", "ntma-gn2", "ntma-adapter2", "ntma-adapter2-nat", "ntma-gnb"}
GN_MACS = {"ntma-gn": "02:00:00:00:0a:01", "ntma-gn2": "02:00:00:00:0a:02"}


def _links(ns: str, *args: str) -> list[dict[str, Any]]:
    out = ns_run(ns, "ip", "-j", "link", "show", *args).stdout.strip()
    return json.loads(out) if out else []


def _mac(ns: str, ifname: str = "eth0") -> str:
    return _links(ns, "dev", ifname)[0]["address"]


def _ping(ns: str, dst: str) -> bool:
    return ns_run(ns, "ping", "-c1", "-W2", dst, check=False).returncode == 0


def _v4(ns: str, ifname: str = "eth0") -> list[str]:
    info = json.loads(ns_run(ns, "ip", "-j", "addr", "show", ifname).stdout)[0]
    return [a["local"] for a in info.get("addr_info", []) if a["family"] == "inet"]


def _nothing_left(root_links_before: list[str]) -> None:
    assert [n for n in live_namespaces() if n.startswith("ntma-")] == []
    assert sorted(p.name for p in ETC_NETNS.glob("ntma-*")) == []
    assert lab.root_link_names() == root_links_before


@pytest.fixture(scope="class")
def topology_lab(
    tmp_path_factory: pytest.TempPathFactory, root_links_before: list[str]
) -> Iterator[LabState]:
    run_dir = tmp_path_factory.mktemp("layout-lab")
    try:
        yield lab_up(run_dir, daemons=False, **LAYOUT)
    finally:
        lab_down(run_dir)
    _nothing_left(root_links_before)


class TestTopology:
    """`lab up --gns 2 --adapters 2 --no-daemons`; `lab down` at the end leaves nothing."""

    def test_namespaces_switch_and_macs(self, topology_lab: LabState) -> None:
        assert set(live_namespaces()) >= NEW_NAMESPACES | {"ntma-gn", "ntma-adapter"}
        ports = {link["ifname"] for link in _links("ntma-gnsw", "master", "sw0")}
        assert ports == {"p-adapter", "p-gn", "p-gn2"}
        assert ns_run("ntma-gnsw", "sysctl", "-n", "net.ipv6.conf.sw0.disable_ipv6").stdout == "1\n"
        assert {ns: _mac(ns) for ns in GN_MACS} == GN_MACS
        assert _mac("ntma-gnb") == "02:00:00:00:0b:01"
        assert {link["ifname"] for link in _links("ntma-adapter2")} == {"lo", "eth0", "gn0"}
        for ns in ("ntma-gn", "ntma-gn2", "ntma-gnb"):
            assert (ETC_NETNS / ns / "resolv.conf").read_text() == lab.GN_RESOLV_CONF
            assert _v4(ns) == []  # no address until DHCP
        assert _v4("ntma-adapter2") == ["10.10.4.2"]
        assert _ping("ntma-adapter2", lab.DC_IP)

    def test_gns_reach_gn0_and_each_other_across_the_switch(self, topology_lab: LabState) -> None:
        test_addresses = {("ntma-adapter", "gn0"): "192.0.2.1", ("ntma-gn", "eth0"): "192.0.2.2"}
        test_addresses[("ntma-gn2", "eth0")] = "192.0.2.3"
        try:
            for (ns, dev), address in test_addresses.items():
                ns_run(ns, "ip", "addr", "add", f"{address}/24", "dev", dev)
            assert _ping("ntma-gn2", "192.0.2.1") and _ping("ntma-gn", "192.0.2.1")
            assert _ping("ntma-gn2", "192.0.2.2")
        finally:
            for (ns, dev), address in test_addresses.items():
                ns_run(ns, "ip", "addr", "del", f"{address}/24", "dev", dev, check=False)

    def test_status_and_move_of_adapter2(self, topology_lab: LabState) -> None:
        run_dir = topology_lab.run_dir
        status = lab.lab_status(run_dir)
        assert list(status["adapters"]) == ["adapter", "adapter2"]
        assert list(status["gns"]) == ["ntma-gn", "ntma-gn2", "ntma-gnb"]
        assert status["namespaces"]["ntma-gnsw"]["role"] == "switch"
        moved = lab.lab_move(run_dir, "adapter2", "public")
        assert moved["new_public_address"] == "198.51.100.70"
        assert "ntma-adapter2-nat" not in live_namespaces()
        assert _v4("ntma-adapter2") == ["198.51.100.70"] and _ping("ntma-adapter2", lab.DC_IP)
        assert lab.load_state(run_dir).adapters["adapter2"].nat == "none"  # type: ignore[union-attr]
        assert {link["ifname"] for link in _links("ntma-adapter2")} == {"lo", "eth0", "gn0"}


def _no_daemons_answer(real: Any = lab_state.daemon_specs) -> Any:
    """daemon_specs with stand-ins for the DC, relay, nodes and adapters: each prints its
    readiness event and sleeps, so no adapter answers the GNs' DHCP clients."""

    def specs(run_dir: Path, hosts: Any) -> dict[str, lab.DaemonSpec]:
        out = real(run_dir, hosts)
        events = {"dc": "dc_ready", "relay": "relay_ready"}
        for spec in out.values():
            if spec.cmd[2:3] == ["ntma"]:
                line = json.dumps({"event": events.get(spec.cmd[3], "registered")})
                code = f"print({line!r}, flush=True); import time; time.sleep(60)"
                spec.cmd = [sys.executable, "-c", code]
        return out

    return specs


def test_dhcp_readiness_names_every_gn_without_a_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_links_before: list[str]
) -> None:
    monkeypatch.setattr(lab_state, "daemon_specs", _no_daemons_answer())
    try:
        with pytest.raises(LabNotReady) as info:
            lab_up(tmp_path, dhcp=True, wait_s=6, **LAYOUT)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("3 of 3 general nodes got no DHCP lease in time: ntma-gn ")
        assert "ntma-gn2 (gn2.ntm.example, 02:00:00:00:0a:02; udhcpc, read " in message
        assert "ntma-gnb (gnb.ntm.example, 02:00:00:00:0b:01; dhclient" in message
        status = lab.lab_status(tmp_path)  # left up, the clients still asking
        assert status["daemons"]["dhcp-gn2"]["alive"] and status["daemons"]["dhcp-gnb"]["alive"]
    finally:
        lab_down(tmp_path)
    _nothing_left(root_links_before)


# --------------------------------------------------------------------------- real daemons


def _dhclient(tmp: Path, ns: str) -> subprocess.CompletedProcess[str]:
    files = tmp / ns
    cmd = ["timeout", "30", "dhclient", "-1", "-pf", f"{files}.pid", "-lf", f"{files}.leases"]
    return ns_run(ns, *cmd, "eth0", check=False, timeout=40)


def _udhcpc(ns: str) -> subprocess.CompletedProcess[str]:
    cmd = ["udhcpc", "-n", "-q", "-i", "eth0", "-t", "5", "-T", "2"]
    return ns_run(ns, *cmd, check=False, timeout=40)


@pytest.fixture(scope="class")
def daemon_lab(tmp_path_factory: pytest.TempPathFactory, open_lab: Any) -> Iterator[LabState]:
    with open_lab(tmp_path_factory.mktemp("layout-daemons"), **LAYOUT) as state:
        yield state


def _vip(state: LabState, adapter: str) -> str:
    return lab.events_named(state.daemons[adapter].log, "registered")[-1]["vip"]


class TestDaemons:
    """`lab up --gns 2 --adapters 2` with the real DC, relay, nodes and adapters."""

    def test_both_adapters_register_and_their_first_gns_get_their_vips(
        self, daemon_lab: LabState, tmp_path: Path
    ) -> None:
        vips = {name: _vip(daemon_lab, name) for name in ("adapter", "adapter2")}
        assert len(set(vips.values())) == 2
        for ns, adapter in (("ntma-gn", "adapter"), ("ntma-gnb", "adapter2")):
            result = _dhclient(tmp_path, ns)
            assert result.returncode == 0, result.stderr
            assert _v4(ns) == [vips[adapter]]
        restarted = lab.lab_restart(daemon_lab.run_dir, "adapter2")
        assert restarted["ready_event"] == "registered" and restarted["pid"] != restarted["old_pid"]

    def test_every_gn_gets_its_own_lease(self, daemon_lab: LabState, tmp_path: Path) -> None:
        """dhclient in ntma-gn, udhcpc in ntma-gn2 on one link: distinct VIPs."""
        if not _v4("ntma-gn"):
            assert _dhclient(tmp_path, "ntma-gn").returncode == 0
        assert _udhcpc("ntma-gn2").returncode == 0
        wait_for(lambda: _v4("ntma-gn2"), 10, "udhcpc's script to set the address")
        assert _v4("ntma-gn2") != _v4("ntma-gn")
