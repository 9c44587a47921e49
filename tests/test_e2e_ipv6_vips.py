"""IPv6 inside the tunnel on the lab (issue 13, IPv6 VIPs): the DC's IPv6 pool gives every
node an IPv6 VIP beside its IPv4 one; the node's TUN carries it; the node's resolver and the
DC's zone answer AAAA; unmodified ping, curl and iperf3 reach the other node over IPv6 by
name, through the tunnel (over the IPv4 underlay), with mn behind a NAT and cn public
(`lab up --vip6`)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from typing import Any

import pytest

from ntma.lab import DC_IP, events_named, ns_run

from .netns_util import dig, iperf, start_in_ns, stop, wait_for

pytestmark = pytest.mark.netns

CN_NAME, MN_NAME = "cn.ntm.example", "mn.ntm.example"
POOL6 = ipaddress.IPv6Network("fd00:99::/64")
ONE_MB = os.urandom(1 << 20)


def _vip6(state: Any, name: str) -> str:
    return events_named(state.daemons[name].log, "registered")[-1]["vip6"]


def _tun_v6(ns: str) -> list[str]:
    info = json.loads(ns_run(ns, "ip", "-j", "-6", "addr", "show", "dev", "ntm0").stdout)[0]
    return [a["local"] for a in info.get("addr_info", []) if a.get("scope") == "global"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("ipv6-vips")
    with open_lab(tmp / "run", mn_nat="cone", cn_nat="none", vip6=True) as state:
        www = tmp / "www"
        www.mkdir()
        (www / "one-mb.bin").write_bytes(ONE_MB)
        server = start_in_ns(
            "ntma-cn", "python3", "-m", "http.server", "8080", "--bind", "::",
            "--directory", str(www), log=tmp / "http.log",
        )
        try:
            wait_for(
                lambda: ":8080" in ns_run("ntma-cn", "ss", "-ltn6").stdout, 10, "http.server"
            )
            yield state, tmp
        finally:
            stop(server)


def test_every_node_has_an_ipv6_vip_on_its_tun_and_in_the_zone(lab):
    state, _ = lab
    for ns, name in (("ntma-mn", "mn"), ("ntma-cn", "cn")):
        vip6 = _vip6(state, name)
        assert ipaddress.IPv6Address(vip6) in POOL6
        assert _tun_v6(ns) == [vip6]
    assert dig("ntma-web", CN_NAME, "AAAA", f"@{DC_IP}") == _vip6(state, "cn")


def test_mn_reaches_cn_over_ipv6_by_name(lab):
    state, _ = lab
    cn6 = _vip6(state, "cn")
    assert dig("ntma-mn", CN_NAME, "AAAA") == cn6  # the node's resolver: tunnel first
    ping = ns_run("ntma-mn", "ping", "-6", "-c", "3", "-W", "2", CN_NAME, check=False, timeout=20)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    fetched = ns_run(
        "ntma-mn",
        "sh",
        "-c",
        f"curl -6 -sS --max-time 20 http://{CN_NAME}:8080/one-mb.bin | sha256sum",
        timeout=30,
    )
    assert fetched.stdout.split()[0] == hashlib.sha256(ONE_MB).hexdigest()


def test_iperf3_over_ipv6_through_the_tunnel(lab):
    state, _ = lab
    report = iperf("ntma-mn", "ntma-cn", _vip6(state, "cn"), 3)
    assert report["end"]["sum_received"]["bytes"] > 1_000_000
    assert not report.get("error")
