"""The adapter on the lab, with real clients in the general node's namespace (no ntma
code runs there): ISC dhclient gets the VIP, dig resolves NTM and ordinary names, curl,
nc -u and iperf3 reach cn through the tunnel, and ordinary traffic passes through.
Bad input from the GN link is dropped and counted while the adapter keeps serving."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import log_events, ns_run

from .netns_util import (
    dig,
    gn_dhclient,
    iperf,
    nc_one_way,
    serve_dir,
    start_in_ns,
    stop,
    wait_for,
)

pytestmark = pytest.mark.netns

GN = "ntma-gn"
CN_NAME = "cn.ntm.example"
ONE_MB = bytes(range(256)) * 4096


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("adapter-lab")
    with open_lab(tmp / "run") as state:
        www = tmp / "www"
        www.mkdir()
        (www / "hello.txt").write_text("hello from cn\n")
        (www / "one-mb.bin").write_bytes(ONE_MB)
        server = serve_dir("ntma-cn", www, tmp / "http.log")
        try:
            yield state, tmp
        finally:
            stop(server)
            gn_dhclient(tmp, "-x")  # stop a dhclient left running (no release)


def _gn_address() -> tuple[str | None, int]:
    info = json.loads(ns_run(GN, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    addresses = [a for a in info.get("addr_info", []) if a["family"] == "inet"]
    return (addresses[0]["local"] if addresses else None), info["mtu"]


def _events(state: dict[str, Any], name: str, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(state["daemons"][name]["log"]) if e.get("event") == event]


def _adapter_stats(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for e in _events(state, "adapter", "stage_stats"):
        latest[e["stage"]] = e
    return latest


@pytest.fixture(scope="module")
def leased(lab) -> Any:
    state, tmp = lab
    result = gn_dhclient(tmp)
    assert result.returncode == 0, result.stderr
    return state, tmp


def test_dhclient_gets_the_vip_the_dc_assigned(leased):
    state, _ = leased
    vip = _events(state, "adapter", "registered")[-1]["vip"]
    address, mtu = _gn_address()
    assert address == vip
    assert mtu == 1400  # option 26: fits the tunnel
    dc_view = [e for e in _events(state, "dc", "node_registered") if e["fqdn"] == "gn.ntm.example"]
    assert dc_view[-1]["vip"] == vip
    resolv = Path("/etc/netns/ntma-gn/resolv.conf").read_text()
    assert "nameserver 10.99.0.1" in resolv
    assert "nameserver 10.99.0.1" not in Path("/etc/resolv.conf").read_text()


def test_dig_ntm_name_returns_cn_vip(leased):
    state, _ = leased
    cn_vip = _events(state, "cn", "registered")[-1]["vip"]
    assert dig(GN, CN_NAME) == cn_vip


def test_dig_ordinary_name_returns_real_address(leased):
    assert dig(GN, "web.example") == "198.51.100.20"


def test_dig_over_tcp(leased):
    assert dig(GN, "web.example", "+tcp") == "198.51.100.20"


def test_unknown_ntm_name_is_nxdomain(leased):
    out = ns_run(GN, "dig", "+time=5", "+tries=1", "nobody.ntm.example").stdout
    assert "status: NXDOMAIN" in out


def test_curl_http_and_one_megabyte_through_tunnel(leased):
    hello = ns_run(GN, "curl", "-sS", "--max-time", "20", f"http://{CN_NAME}:8080/hello.txt")
    assert hello.stdout == "hello from cn\n"
    digest = ns_run(
        GN, "sh", "-c", f"curl -sS --max-time 30 http://{CN_NAME}:8080/one-mb.bin | sha256sum"
    )
    assert digest.stdout.split()[0] == hashlib.sha256(ONE_MB).hexdigest()


def test_udp_both_ways(leased):
    _, tmp = leased
    assert f"from {GN}" in nc_one_way(GN, "ntma-cn", CN_NAME, 9100, tmp)
    assert "from ntma-cn" in nc_one_way("ntma-cn", GN, "gn.ntm.example", 9101, tmp)


@pytest.mark.parametrize("reverse", [False, True])
def test_iperf3_both_directions(leased, reverse):
    report = iperf(GN, "ntma-cn", CN_NAME, 5, *(["-R"] if reverse else []))
    assert report["end"]["sum_received"]["bytes"] > 1_000_000


def test_passthrough_to_ordinary_web_host(leased):
    page = ns_run(GN, "curl", "-sS", "--max-time", "10", "http://web.example/")
    assert "ordinary web host" in page.stdout


def test_too_big_with_df_gets_frag_needed_and_without_df_gets_through(leased):
    state, _ = leased
    cn_vip = _events(state, "cn", "registered")[-1]["vip"]
    ns_run(GN, "ip", "link", "set", "eth0", "mtu", "1500")  # a GN that ignores option 26
    try:
        df = ns_run(GN, "ping", "-c", "1", "-W", "3", "-M", "do", "-s", "1420", cn_vip, check=False)
        assert "mtu = 1400" in df.stdout + df.stderr  # ICMP fragmentation needed, next-hop 1400
        no_df = ns_run(
            GN, "ping", "-c", "2", "-W", "3", "-M", "dont", "-s", "1420", cn_vip, check=False
        )
        assert " 0% packet loss" in no_df.stdout
    finally:
        ns_run(GN, "ip", "link", "set", "eth0", "mtu", "1400")
        ns_run(GN, "ip", "route", "flush", "cache", check=False)


def test_ping_to_a_vip_without_tunnel_is_host_unreachable(leased):
    out = ns_run(GN, "ping", "-c", "1", "-W", "3", "10.99.250.250", check=False)
    assert "Destination Host Unreachable" in out.stdout


def test_renew_keeps_the_address(leased):
    state, tmp = leased
    before, _ = _gn_address()
    leases = len(_events(state, "adapter", "dhcp_lease"))
    gn_dhclient(tmp, "-x")  # stop the running client without releasing
    result = gn_dhclient(tmp)  # a new client run reuses its lease: INIT-REBOOT REQUEST
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(_events(state, "adapter", "dhcp_lease")) > leases, 10, "a new lease")
    assert _gn_address()[0] == before


def test_bad_input_from_the_gn_link_is_dropped_and_counted(leased):
    state, tmp = leased
    script = Path(__file__).with_name("gn_junk.py")
    before = {k: dict(v.get("drops", {})) for k, v in _adapter_stats(state).items()}
    ns_run(GN, "python3", str(script), "eth0")
    stages = ("classify", "arp", "dhcp", "dns")

    def counted():
        now = _adapter_stats(state)
        grown = {
            s: sum(now.get(s, {}).get("drops", {}).values()) - sum(before.get(s, {}).values())
            for s in stages
        }
        return grown if all(v > 0 for v in grown.values()) else None

    wait_for(counted, 15, "drops counted in every GN-side stage")
    drops = _adapter_stats(state)["classify"]["drops"]
    assert drops.get("malformed", 0) >= 2 and drops.get("foreign_mac", 0) >= 1
    assert drops.get("foreign_ip", 0) >= 1
    # Still serving after all that.
    assert dig(GN, "web.example") == "198.51.100.20"
    assert (
        ns_run(GN, "curl", "-sS", "--max-time", "10", f"http://{CN_NAME}:8080/hello.txt").stdout
        == "hello from cn\n"
    )


def test_release_then_udhcpc_gets_the_same_lease_and_renews_it(leased):
    state, tmp = leased
    vip = _events(state, "adapter", "registered")[-1]["vip"]
    gn_dhclient(tmp, "-r")  # RELEASE, and the client removes the address
    wait_for(lambda: _events(state, "adapter", "dhcp_released"), 10, "the release")
    assert _gn_address()[0] is None
    log = tmp / "udhcpc.log"
    client = start_in_ns(GN, "udhcpc", "-f", "-i", "eth0", "-t", "5", "-T", "2", log=log)
    try:
        wait_for(lambda: f"lease of {vip} obtained" in log.read_text(), 20, "udhcpc's lease")
        wait_for(lambda: _gn_address()[0] == vip, 10, "udhcpc's script to set the address")
        renewals = [e for e in _events(state, "adapter", "dhcp_lease") if e["renewal"]]
        client.send_signal(signal.SIGUSR1)  # udhcpc: renew now (unicast REQUEST, RENEWING)
        wait_for(
            lambda: (
                len([e for e in _events(state, "adapter", "dhcp_lease") if e["renewal"]])
                > len(renewals)
            ),
            15,
            "a renewal",
        )
        assert _events(state, "adapter", "dhcp_lease")[-1]["ip"] == vip
        assert _gn_address()[0] == vip
    finally:
        stop(client)
