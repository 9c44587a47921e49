"""Ordinary IPv6 from the GN through an adapter with IPv6 upstream (issue 13, deliver 3):
the adapter public and dual-stack (`--adapter-nat none --adapter-net dual --vip6`) has an
IPv6 default route, so its RAs make it the GN's default router, and the GN's ordinary IPv6
(here to the web host's 2001:db8::20) leaves through the kernel with NAT66: the web host
sees the adapter's address, as the GN's ULA is not routed. Tunnel traffic to cn's IPv6 VIP
still takes the on-link pool route."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ntma.lab import events_named, ns_run

from .netns_util import gn_dhclient, start_in_ns, stop, wait_for

pytestmark = pytest.mark.netns

GN = "ntma-gn"
WEB6 = "2001:db8::20"


def _slaac(ns: str = GN) -> str | None:
    info = json.loads(ns_run(ns, "ip", "-j", "-6", "addr", "show", "dev", "eth0").stdout)[0]
    found = [
        a["local"]
        for a in info.get("addr_info", [])
        if a.get("scope") == "global" and a.get("dynamic") and not a.get("tentative")
    ]
    return found[0] if found else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("gn-nat66")
    options = {"vip6": True, "adapter_nat": "none", "adapter_net": "dual", "cn_nat": "none"}
    with open_lab(tmp / "run", **options) as state:
        www = tmp / "www"
        www.mkdir()
        (www / "hello.txt").write_text("hello over ordinary IPv6\n")
        log = tmp / "web6.log"
        server = start_in_ns(
            "ntma-web", "python3", "-m", "http.server", "8081", "--bind", "::",
            "--directory", str(www), log=log,
        )
        try:
            wait_for(lambda: ":8081" in ns_run("ntma-web", "ss", "-ltn6").stdout, 10, "server")
            assert gn_dhclient(tmp).returncode == 0
            wait_for(lambda: _slaac() is not None, 30, "the GN's SLAAC address")
            yield state, log
        finally:
            stop(server)
            gn_dhclient(tmp, "-x")


def test_the_gns_ordinary_ipv6_leaves_through_nat66(lab):
    state, log = lab
    assert events_named(state.daemons["adapter"].log, "gn_ipv6")[-1]["upstream"] is True
    routes = ns_run(GN, "ip", "-6", "route", "show").stdout
    assert "default via fe80::" in routes and "proto ra" in routes  # the adapter's RA
    page = ns_run(
        GN, "curl", "-6", "-sS", "--max-time", "10", f"http://[{WEB6}]:8081/hello.txt",
        timeout=20,
    )
    assert page.stdout == "hello over ordinary IPv6\n"
    seen = log.read_text()
    adapter6 = "2001:db8::" + state.adapter.address.rsplit(".", 1)[1]  # the lab's rule
    assert f"{adapter6} - -" in seen and _slaac() not in seen  # masqueraded to the adapter's


def test_tunnel_traffic_still_takes_the_pool_route(lab):
    state, _ = lab
    cn6 = events_named(state.daemons["cn"].log, "registered")[-1]["vip6"]
    assert ns_run(GN, "dig", "+short", "cn.ntm.example", "AAAA").stdout.strip() == cn6
    ping = ns_run(GN, "ping", "-6", "-c", "2", "-W", "2", cn6, check=False, timeout=20)
    assert ping.returncode == 0, ping.stdout
