"""The NAT type learnt per family, on the lab (issue 13): nodes behind home routers that NAT
IPv4 and route IPv6 to their LAN with a stateful firewall (`lab up --mn-nat cone --mn-net
dual`, lab/ipv6.py). The DC's filter port shows each router's firewall (the unasked
PROBE_ACK is dropped there), so the IPv6 reach is "filtered", not "public", and two such
nodes punch over IPv6; a public IPv6 node is shown open. curl and nc -u by name through the
tunnel, unmodified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import log_events, ns_run

from .netns_util import last_tunnel_up, nc_one_way, serve_dir, stop, wait_for

pytestmark = pytest.mark.netns

MN_LAN6, CN_LAN6 = "2001:db8:10:1::2", "2001:db8:10:2::2"  # lan_ipv6_of(10.10.x.2)
CN_PUBLIC6 = "2001:db8::30"


def _dc_events(state: Any, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(state.daemons["dc"].log) if e.get("event") == event]


def _reach(state: Any, fqdn: str) -> dict[int, str]:
    """The DC's latest node_nat per family for `fqdn`."""
    nat = [e for e in _dc_events(state, "node_nat") if e["fqdn"] == fqdn]
    return {e.get("family", 4): e["reach"] for e in nat}


def _wait_reach(state: Any, fqdn: str, want: dict[int, str]) -> None:
    try:
        wait_for(lambda: _reach(state, fqdn) == want, 15, f"{fqdn}'s reach {want}")
    except AssertionError:
        assert _reach(state, fqdn) == want  # shows what the DC said instead


def _firewall_drops(router: str) -> int:
    out = ns_run(router, "nft", "list", "chain", "ip6", "firewall6", "forward").stdout
    (line,) = [ln for ln in out.splitlines() if "counter" in ln and "drop" in ln]
    return int(line.split("packets")[1].split()[0])


@pytest.fixture
def www(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello through two IPv6 firewalls\n")
    return www


@pytest.fixture(params=[("cone", "cone"), ("symmetric", "cone")], ids=["cone-cone", "sym-cone"])
def firewalled_lab(request, tmp_path: Path, www: Path, open_lab) -> Iterator[tuple[str, Any]]:
    mn_nat, cn_nat = request.param
    options = {"mn_nat": mn_nat, "cn_nat": cn_nat, "mn_net": "dual", "cn_net": "dual"}
    with open_lab(tmp_path / "run", **options) as state:
        server = serve_dir("ntma-cn", www, tmp_path / "http.log")
        try:
            yield mn_nat, state
        finally:
            stop(server)


def test_two_nodes_behind_ipv6_firewalls_are_filtered_and_punch_over_ipv6(
    firewalled_lab, tmp_path: Path
) -> None:
    mn_nat, state = firewalled_lab
    _wait_reach(state, "mn.ntm.example", {4: mn_nat, 6: "filtered"})
    _wait_reach(state, "cn.ntm.example", {4: "cone", 6: "filtered"})
    for router in ("ntma-mn-nat", "ntma-cn-nat"):  # the unasked PROBE_ACK, dropped there
        wait_for(lambda router=router: _firewall_drops(router) >= 1, 10, f"{router}'s drop")
    hello = ns_run(
        "ntma-mn", "curl", "-sS", "--max-time", "20", "http://cn.ntm.example:8080/hello.txt",
        timeout=30,
    )
    assert hello.stdout == "hello through two IPv6 firewalls\n"
    assert nc_one_way("ntma-mn", "ntma-cn", "cn.ntm.example", 9310, tmp_path) == (
        "datagram from ntma-mn to ntma-cn\n"
    )
    (decided,) = _dc_events(state, "route_decided")
    # In IPv4 a symmetric NAT would send this pair to the relay; IPv6 punches either way.
    assert (decided["route"], decided["family"]) == ("punch", 6), decided
    assert decided["requester_reach"] == decided["target_reach"] == "filtered"
    up = last_tunnel_up(state, "mn")
    host = up["peer_endpoint"].rsplit(":", 1)[0]
    # Both ends punch to every endpoint of the Direction and keep the first that answers:
    # with cone NATs IPv4 may win the race; behind a symmetric NAT only IPv6 can.
    assert up["route"] == "punch" and host in (CN_LAN6, "198.51.100.31"), up
    if mn_nat == "symmetric":
        assert host == CN_LAN6, up
        assert last_tunnel_up(state, "cn")["peer_endpoint"].rsplit(":", 1)[0] == MN_LAN6


@pytest.fixture
def half_open_lab(tmp_path: Path, www: Path, open_lab) -> Iterator[Any]:
    options = {"mn_nat": "cone", "cn_nat": "none", "mn_net": "dual", "cn_net": "dual"}
    with open_lab(tmp_path / "run", **options) as state:
        server = serve_dir("ntma-cn", www, tmp_path / "http.log")
        try:
            yield state
        finally:
            stop(server)


def test_a_public_ipv6_node_is_shown_open_and_the_filtered_one_reaches_it_directly(
    half_open_lab, tmp_path: Path
) -> None:
    state = half_open_lab
    _wait_reach(state, "cn.ntm.example", {4: "public", 6: "public"})  # no firewall
    _wait_reach(state, "mn.ntm.example", {4: "cone", 6: "filtered"})
    assert nc_one_way("ntma-mn", "ntma-cn", "cn.ntm.example", 9311, tmp_path) == (
        "datagram from ntma-mn to ntma-cn\n"
    )
    (decided,) = _dc_events(state, "route_decided")
    assert (decided["route"], decided["family"]) == ("direct", 6), decided
    assert decided["initiator"] == "mn.ntm.example"  # the filtered end opens
    up = last_tunnel_up(state, "mn")
    assert up["peer_endpoint"].rsplit(":", 1)[0] == CN_PUBLIC6, up
