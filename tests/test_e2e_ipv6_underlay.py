"""The tunnel over an IPv6 underlay on the lab (issue 13): `lab up --mn-net ... --cn-net ...`
puts 2001:db8::/64 on the Internet segment (the DC, RS and web host dual-stack). Two
dual-stack public nodes take a direct IPv6 path (their DC sessions kept alive in both
families); an IPv6-only mn (no IPv4 at all) reaches an IPv4-only cn through the RS, each in
its own family; so does a GN behind an adapter whose only uplink is IPv6. curl, nc -u and
iperf3 by name, unmodified, through the tunnel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import log_events, ns_run

from .netns_util import (
    dig,
    gn_dhclient,
    iperf,
    last_tunnel_up,
    nc_one_way,
    serve_dir,
    stop,
)

pytestmark = pytest.mark.netns

CN_NAME = "cn.ntm.example"
RS6 = "2001:db8::60"


def _v4(ns: str) -> list[str]:
    info = json.loads(ns_run(ns, "ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
    return [a["local"] for i in info for a in i.get("addr_info", [])]


@pytest.fixture(params=[("dual", "dual"), ("v6", "v4")], ids=["dual-dual", "v6only-v4only"])
def underlay_lab(request, tmp_path: Path, open_lab) -> Iterator[tuple[str, str, Any, Path]]:
    mn_net, cn_net = request.param
    options = {"mn_nat": "none", "cn_nat": "none", "mn_net": mn_net, "cn_net": cn_net}
    with open_lab(tmp_path / "run", **options) as state:
        www = tmp_path / "www"
        www.mkdir()
        (www / "hello.txt").write_text("hello over the IPv6 underlay\n")
        server = serve_dir("ntma-cn", www, tmp_path / "http.log")
        try:
            yield mn_net, cn_net, state, tmp_path
        finally:
            stop(server)


def _cn_vip(state: Any) -> str:
    registered = [e for e in log_events(state.daemons["cn"].log) if e["event"] == "registered"]
    return registered[-1]["vip"]


def _reaches_cn(ns: str, tmp: Path, text: str, port: int) -> None:
    """curl and nc -u from `ns` to cn by name, through the tunnel."""
    hello = ns_run(
        ns, "curl", "-sS", "--max-time", "20", f"http://{CN_NAME}:8080/hello.txt", timeout=30
    )
    assert hello.stdout == text
    assert nc_one_way(ns, "ntma-cn", CN_NAME, port, tmp) == f"datagram from {ns} to ntma-cn\n"


def _iperf_to_cn(ns: str, state: Any) -> None:
    report = iperf(ns, "ntma-cn", _cn_vip(state), 3)
    assert report["end"]["sum_received"]["bytes"] > 1_000_000 and not report.get("error")


def test_the_tunnel_rides_the_ipv6_underlay(underlay_lab) -> None:
    mn_net, _, state, tmp = underlay_lab
    if mn_net == "v6":
        assert _v4("ntma-mn") == []  # nothing of mn can use IPv4
    _reaches_cn("ntma-mn", tmp, "hello over the IPv6 underlay\n", 9300)
    up = last_tunnel_up(state, "mn")
    host = up["peer_endpoint"].rsplit(":", 1)[0]
    if mn_net == "dual":  # direct, over IPv6, to cn's IPv6 address
        assert up["route"] == "direct" and host == "2001:db8::30", up
    else:  # no family in common: the relay, which mn reaches over IPv6
        assert up["route"] == "relay" and host == RS6, up
        cn_up = last_tunnel_up(state, "cn")
        assert cn_up["peer_endpoint"].rsplit(":", 1)[0] == "198.51.100.60", cn_up
        _iperf_to_cn("ntma-mn", state)


@pytest.fixture
def v6_uplink_lab(tmp_path: Path, open_lab) -> Iterator[tuple[Any, Path]]:
    options = {"adapter_nat": "none", "adapter_net": "v6", "cn_nat": "none"}
    with open_lab(tmp_path / "run", **options) as state:
        www = tmp_path / "www"
        www.mkdir()
        (www / "hello.txt").write_text("hello to a GN on an IPv6-only uplink\n")
        server = serve_dir("ntma-cn", www, tmp_path / "http.log")
        try:
            yield state, tmp_path
        finally:
            stop(server)
            gn_dhclient(tmp_path, "-x")


def test_a_gn_behind_an_adapter_on_an_ipv6_only_uplink_reaches_an_ipv4_only_cn(v6_uplink_lab):
    state, tmp = v6_uplink_lab
    assert _v4("ntma-adapter") == []  # the adapter's uplink has no IPv4 at all
    assert gn_dhclient(tmp).returncode == 0  # the GN itself is an IPv4 host
    assert dig("ntma-gn", CN_NAME) == _cn_vip(state)
    _reaches_cn("ntma-gn", tmp, "hello to a GN on an IPv6-only uplink\n", 9301)
    _iperf_to_cn("ntma-gn", state)
    up = last_tunnel_up(state, "adapter")
    assert up["route"] == "relay" and up["peer_endpoint"].rsplit(":", 1)[0] == RS6, up
    cn_up = last_tunnel_up(state, "cn")
    assert cn_up["peer_endpoint"].rsplit(":", 1)[0] == "198.51.100.60", cn_up
