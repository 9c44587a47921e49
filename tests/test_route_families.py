"""The route decision per address family (issue 13, docs/protocol.md 14): two dual-stack ends
take direct IPv6 when both have it in the open, an IPv4-only end and an IPv6-only one meet
at the relay, which each reaches in its own family, and IPv4-only pairs decide as before."""

from __future__ import annotations

from ntma.dc.directions import RelayChoice, peer_endpoints, plan_route, relay_choices
from ntma.dc.sessions import NodeSession
from ntma.proto.fields_v2 import Route
from ntma.testing.tunnels import keypair_pair

V4_NAT, V4_LAN = ("198.51.100.41", 7401), ("10.10.1.2", 7401)
V6_A, V6_B = ("2001:db8::40", 7401), ("2001:db8::30", 7401)
V4_PUBLIC = ("198.51.100.30", 7401)
RS4, RS6 = ("198.51.100.60", 7500), ("2001:db8::60", 7500)


def _session(name: str, endpoints: dict, local: list, probe=None) -> NodeSession:
    session = NodeSession(
        name.encode().ljust(32, b"\0"), f"{name}.ntm.example", 1, "10.99.0.2", dict(endpoints),
        0.0, keypair_pair()[0],
    )
    session.local_endpoints = list(local)
    if probe is not None:
        session.probe_observed = {4 if "." in probe[0] else 6: probe}
    return session


def test_two_dual_stack_ends_take_direct_ipv6_over_punched_ipv4():
    a = _session("a", {4: V4_NAT, 6: V6_A}, [V4_LAN, V6_A], probe=V4_NAT)  # cone v4, open v6
    b = _session("b", {4: ("198.51.100.31", 7401), 6: V6_B}, [("10.10.2.2", 7401), V6_B],
                 probe=("198.51.100.31", 7401))
    plan = plan_route(a, b, relay_available=True)
    assert (plan.route, plan.family) == (Route.DIRECT, 6)
    assert peer_endpoints(b, plan.private_endpoints, plan.family)[0] == V6_B


def test_an_ipv4_only_end_and_an_ipv6_only_end_meet_at_the_relay_in_their_own_families():
    v4_only = _session("a", {4: V4_PUBLIC}, [V4_PUBLIC])
    v6_only = _session("b", {6: V6_B}, [V6_B])
    plan = plan_route(v4_only, v6_only, relay_available=True)
    assert plan.route == Route.RELAY and "no address family in common" in plan.why
    assert plan_route(v4_only, v6_only, relay_available=False) is None
    (choice,) = relay_choices([(RS4, b"k" * 32), (RS6, b"k" * 32)], lambda key: b"s")
    assert choice.endpoints == {4: RS4, 6: RS6}
    assert choice.endpoint_for(v4_only) == RS4 and choice.endpoint_for(v6_only) == RS6
    only4 = RelayChoice({4: RS4}, b"k" * 32, b"s")
    assert only4.endpoint_for(v6_only) == RS4  # nothing better to give it


def test_ipv4_only_pairs_decide_as_before_and_a_probe_counts_only_in_its_family():
    a = _session("a", {4: V4_NAT}, [V4_LAN], probe=V4_NAT)
    b = _session("b", {4: ("198.51.100.31", 7401)}, [("10.10.2.2", 7401)],
                 probe=("198.51.100.31", 7401))
    plan = plan_route(a, b, relay_available=True)
    assert (plan.route, plan.family) == (Route.PUNCH, 4)
    dual = _session("c", {4: V4_NAT, 6: ("2001:db8::99", 7401)}, [V4_LAN], probe=V4_NAT)
    assert dual.reach(4).value == "cone" and dual.reach(6).value == "unknown"


def test_two_dual_stack_nodes_behind_ipv4_nats_meet_directly_over_ipv6():
    """The sans-IO DC and nodes over tests/sim.py: both behind cone IPv4 NATs that filter,
    both with a public IPv6 address; each keeps its DC session alive in both families, the
    DC decides direct IPv6, and DATA flows between the IPv6 endpoints."""
    from ntma.dc.events import RouteDecided
    from ntma.proto.node import DirectionResolved, TunnelUp

    from .sim import Net

    net = Net(filtering=True)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401),
                 ("198.51.100.41", 40001), outside6=V6_A)
    net.add_node("cn", ("10.10.2.2", 7401), ("198.51.100.31", 7401),
                 ("198.51.100.31", 40002), outside6=V6_B)
    for node in net.nodes.values():
        node.start(net.now)
    net.run(7.0)  # registered, and a keep-alive round in both families
    sessions = net.dc.sessions
    assert all(set(s.endpoints) == {4, 6} for s in sessions.values())
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(3.0)
    (decided,) = [e for e in net.dc_events if isinstance(e, RouteDecided)]
    assert decided.route == "direct", decided
    resolved = [e for e in net.events["mn"] if isinstance(e, DirectionResolved)][-1]
    assert resolved.vip is not None
    (up,) = [e for e in net.events["mn"] if isinstance(e, TunnelUp)]
    assert up.tunnel.endpoint == V6_B
    (at_cn,) = list(net.nodes["cn"].tunnels)
    assert at_cn.endpoint == V6_A
