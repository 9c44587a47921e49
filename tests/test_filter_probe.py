"""The NAT type learnt per family, and a stateful firewall told from none (issue 13; protocol
7.1, dc/probes.py): the sans-IO DC and nodes over tests/sim.py, whose `firewalled6` nodes
hear on IPv6 only from endpoints they have sent to, as a home router's IPv6 firewall does."""

from __future__ import annotations

import pytest

from ntma.dc.events import NodeNat, RouteDecided
from ntma.proto.bodies_v2 import Probe, ProbeAck
from ntma.proto.handshake import T_SIGNAL
from ntma.proto.messages_v2 import encode
from ntma.proto.node import TunnelUp

from .sim import DC_FILTER6, DC_PROBE, DC_PROBE6, Net

V6_MN, V6_CN = ("2001:db8:1::2", 7401), ("2001:db8:2::2", 7401)


def _dual_net(**options) -> Net:
    """mn and cn each behind a cone IPv4 NAT, each with a global IPv6 address of its own."""
    net = Net(filtering=True, **options)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401), outside6=V6_MN)
    net.add_node("cn", ("10.10.2.2", 7401), ("198.51.100.31", 7401), outside6=V6_CN)
    for node in net.nodes.values():
        node.start(net.now)
    net.run(7.0)  # registered, probed, and a keep-alive round in both families
    return net


def _reach(net: Net, name: str) -> dict[int, str]:
    session = net.dc.sessions[net.keys[name].public]
    return {family: session.reach(family).value for family in (4, 6)}


def _nat_events(net: Net, name: str) -> dict[int, str]:
    nat = [e for e in net.dc_events if isinstance(e, NodeNat) and e.fqdn.startswith(name)]
    return {e.family: e.reach for e in nat}


def _route(net: Net, requester: str, target: str) -> RouteDecided:
    net.nodes[requester].request_direction(f"{target}.ntm.example", net.now)
    net.run(3.0)
    return [e for e in net.dc_events if isinstance(e, RouteDecided)][-1]


def _tunnel_endpoint(net: Net, name: str):
    (up,) = [e for e in net.events[name] if isinstance(e, TunnelUp)]
    return up.tunnel.endpoint


def test_two_ends_behind_ipv6_firewalls_are_filtered_and_punch_over_ipv6():
    net = _dual_net(filter_port=True, firewalled6=("mn", "cn"))
    assert _reach(net, "mn") == {4: "cone", 6: "filtered"}
    assert _nat_events(net, "cn") == {4: "cone", 6: "filtered"}
    decided = _route(net, "mn", "cn")
    assert (decided.route, decided.family) == ("punch", 6), decided
    assert decided.requester_reach == decided.target_reach == "filtered"
    assert "stateful firewalls" in decided.why
    assert _tunnel_endpoint(net, "mn") == V6_CN  # the punch went through both firewalls
    (at_cn,) = list(net.nodes["cn"].tunnels)
    assert at_cn.endpoint == V6_MN
    assert net.nat_dropped["mn"] >= 1  # the filter port's unasked PROBE_ACK, at least


def test_without_a_firewall_the_unasked_probe_ack_arrives_and_the_end_is_public():
    net = _dual_net(filter_port=True)
    assert _reach(net, "mn") == {4: "cone", 6: "public"}
    assert _nat_events(net, "mn") == {4: "cone", 6: "public"}
    decided = _route(net, "mn", "cn")
    assert (decided.route, decided.family) == ("direct", 6), decided
    assert _tunnel_endpoint(net, "mn") == V6_CN


def test_an_end_open_in_both_families_is_public_in_both():
    net = Net(filter_port=True)
    net.add_node("mn", ("198.51.100.40", 7401), outside6=V6_MN)  # no NAT, no firewall
    net.nodes["mn"].start(net.now)
    net.run(7.0)
    assert _reach(net, "mn") == {4: "public", 6: "public"}  # one echo per family


def test_a_public_end_and_a_filtered_one_meet_directly_and_the_filtered_end_opens():
    net = _dual_net(filter_port=True, firewalled6=("cn",))
    assert _reach(net, "mn")[6] == "public" and _reach(net, "cn")[6] == "filtered"
    decided = _route(net, "mn", "cn")  # the target is filtered: it opens toward mn
    assert (decided.route, decided.family, decided.initiator) == (
        "direct",
        6,
        "cn.ntm.example",
    ), decided
    assert _tunnel_endpoint(net, "mn") == V6_CN


def test_without_a_filter_port_an_end_with_its_own_address_is_taken_as_public():
    net = _dual_net(firewalled6=("mn", "cn"))
    assert _reach(net, "mn") == {4: "cone", 6: "public"}
    assert not net.dc.filter_datagrams_to_send()


def test_each_family_is_probed_at_its_own_address_of_the_probe_port():
    net = _dual_net(filter_port=True)
    probes = {dst for _, dst, d in net.sent if dst in (DC_PROBE, DC_PROBE6)}
    assert probes == {DC_PROBE, DC_PROBE6}
    session = net.dc.sessions[net.keys["mn"].public]
    assert session.probe_observed == {4: ("198.51.100.41", 7401), 6: V6_MN}
    assert session.unfiltered == {6: V6_MN}  # the IPv4 NATs let in only what was asked for


def test_one_unasked_probe_ack_per_family_and_no_echo_loop():
    net = _dual_net(filter_port=True, firewalled6=("mn",))
    sent_before = len(net.sent)
    net.run(30.0)
    to_probe = [d for src, dst, d in net.sent[sent_before:] if dst in (DC_PROBE, DC_PROBE6)]
    assert to_probe == []  # nothing more to say: no probe, no echo, in 30 s of keep-alives
    session = net.dc.sessions[net.keys["mn"].public]
    assert set(session.filter_txids) == {4, 6}  # still waiting for mn's echoes: none came
    assert not net.dc.filter_datagrams_to_send()


def test_the_filter_port_hears_nothing_and_the_node_echoes_only_the_filter_port():
    net = _dual_net(filter_port=True)
    net.dc.receive_filter(b"\x02\x03junk", ("203.0.113.9", 4000), net.now)
    assert net.dc.drops["filter_port_input"] == 1
    mn = net.nodes["mn"]
    keypair = net.dc.sessions[net.keys["mn"].public].sending(net.now)  # the DC's, to mn
    stray = keypair.seal(T_SIGNAL, encode(ProbeAck(0x1234, V6_MN)))
    mn.receive(stray, DC_PROBE6, net.now)  # from the probe port itself: a late duplicate
    assert mn.drops["unasked_probe_ack"] == 1 and not mn.datagrams_to_send()
    mn.receive(keypair.seal(T_SIGNAL, encode(ProbeAck(0x1235, V6_MN))), DC_FILTER6, net.now)
    (echo,) = mn.datagrams_to_send()
    assert echo[1] == DC_PROBE6
    mn.receive(keypair.seal(T_SIGNAL, encode(ProbeAck(0x1236, V6_MN))), DC_FILTER6, net.now)
    assert not mn.datagrams_to_send() and mn.drops["unasked_probe_ack"] == 2  # 1 per second


def test_an_echo_with_a_txid_the_dc_never_sent_is_an_ordinary_probe():
    net = _dual_net(filter_port=True, firewalled6=("mn",))
    session = net.dc.sessions[net.keys["mn"].public]
    keypair = net.nodes["mn"].session.ring.sending(net.now)
    net.inject(keypair.seal(T_SIGNAL, encode(Probe(0xBEEF))), V6_MN, DC_PROBE6)
    assert session.reach(6).value == "filtered"  # a guess does not open the firewall view


def test_a_move_forgets_what_the_filter_port_showed():
    net = _dual_net(filter_port=True)
    session = net.dc.sessions[net.keys["mn"].public]
    assert session.reach(6).value == "public"
    net.firewalled6.add("mn")
    net.move("mn", ("10.10.3.2", 7401), ("198.51.100.42", 7401))
    net.run(5.0)
    session = net.dc.sessions[net.keys["mn"].public]
    assert session.reach(4).value == "cone" and session.reach(6).value == "filtered"


@pytest.mark.parametrize("probe_first", [False, True], ids=["update-first", "probe-first"])
def test_a_move_to_the_open_is_redirected_once_the_echo_shows_it_public(probe_first):
    """The DC waits for what the filter port shows before it re-directs a mover's tunnels
    (redirects.py), so a node that moved onto a public address is not taken as filtered;
    also when its PROBE from there comes first, while the unasked PROBE_ACK its old NAT
    dropped is still outstanding (a PROBE from a new source gets a new one)."""
    from ntma.dc.events import RouteUpdated

    net = Net(filter_port=True, filtering=True)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401))
    net.add_node("cn", ("198.51.100.30", 7401))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(7.0)
    assert _route(net, "mn", "cn").route == "direct"
    net.move("mn", ("198.51.100.40", 7401))  # now public
    net.nodes["mn"].network_changed(net.now)
    out = net.nodes["mn"].datagrams_to_send()
    if probe_first:
        out.sort(key=lambda d: d[1] != DC_PROBE)
    net.deliver(out, "mn")
    net.run(5.0)
    (updated,) = [e for e in net.dc_events if isinstance(e, RouteUpdated)]
    assert (updated.requester_reach, updated.target_reach) == ("public", "public"), updated
