"""Node, DC and RS state machines talking protocol v2 over an in-memory network (no
sockets). Tunnel scenarios build real tunnels with the node's Handshakes (DATA goes through
the data path's open_data, as the stages do); the others run with RecordingHandshakes
(tests/sim.py) and assert what the DC directed."""

import ipaddress
import random
from collections import Counter

from ntma.dc.coordinator import Coordinator
from ntma.dc.directions import RelayChoice, choose_relay
from ntma.dc.events import NodeNat, RegistrationRefused, RouteDecided, RouteDirectionUnacked
from ntma.dc.store import NodeStore
from ntma.proto.bodies_v2 import RouteDirectionAck
from ntma.proto.crypto import StaticKey
from ntma.proto.fields_v2 import Role, Route, Status
from ntma.proto.handshake import T_DATA, T_INIT
from ntma.proto.node import (
    DcUnreachable,
    DirectionResolved,
    Registered,
    RegistrationFailed,
    RouteFallback,
    TunnelUp,
)
from ntma.proto.session import parse_transport

from .sim import DC_EP, RS_EP, Net


def _of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def _net(mn_nat: bool = True, cn_nat: bool = False, fake_tunnels: bool = False) -> Net:
    net = Net(fake_tunnels=fake_tunnels)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401) if mn_nat else None)
    net.add_node(
        "cn",
        ("10.10.2.2", 7401) if cn_nat else ("198.51.100.30", 7401),
        ("198.51.100.31", 7401) if cn_nat else None,
    )
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    return net


def _nat_net(
    mn_symmetric: bool = False, cn_symmetric: bool = False, fake_tunnels: bool = False
) -> Net:
    net = Net(fake_tunnels=fake_tunnels)
    net.add_node(
        "mn",
        ("10.10.1.2", 7401),
        ("198.51.100.41", 7401),
        ("198.51.100.41", 40001) if mn_symmetric else None,
    )
    net.add_node(
        "cn",
        ("10.10.2.2", 7401),
        ("198.51.100.31", 7401),
        ("198.51.100.31", 40002) if cn_symmetric else None,
    )
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    return net


def _decided(net: Net) -> list[RouteDecided]:
    return _of(net.dc_events, RouteDecided)


def _directed(net: Net) -> tuple:
    """Ask mn -> cn with recording handshakes; (mn's Direction, cn's Direction)."""
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(1.0)
    (mine,) = net.handshakes("mn").directions
    (theirs,) = net.handshakes("cn").directions
    assert mine.tunnel_id == theirs.tunnel_id and mine.dc_id == theirs.dc_id == net.dc.dc_id
    return mine, theirs


def _endpoint(tunnel):
    """A tunnel's peer endpoint (part B keeps one per family)."""
    endpoint = tunnel.endpoint
    return endpoint.get(4) if isinstance(endpoint, dict) else endpoint


def _data_flows(a, b_table, now, payload=b"hello"):
    datagram = a.ring.sending(now).seal(T_DATA, payload)
    _, index, counter = parse_transport(datagram)
    _, keypair = b_table.by_index[index]
    assert keypair.open(datagram, counter) == payload
    return datagram


# --- registration -------------------------------------------------------------------------


def test_registration_gives_vips_and_nat_view():
    net = _net(fake_tunnels=True)
    mn = _of(net.events["mn"], Registered)[0]
    cn = _of(net.events["cn"], Registered)[0]
    assert mn.vip != cn.vip and mn.vip.startswith("10.99.")
    assert mn.behind_nat and not cn.behind_nat
    assert mn.observed == ("198.51.100.41", 7401)
    assert set(net.dc.sessions) == {net.keys["mn"].public, net.keys["cn"].public}


def test_unadmitted_key_gets_no_reply_at_all():
    net = _net(fake_tunnels=True)
    net.add_node("xn", ("198.51.100.50", 7401), fqdn="cn.ntm.example")  # cn's name, other key
    net.nodes["xn"].start(net.now)
    net.run(3.0)
    assert not _of(net.events["xn"], Registered) and not _of(net.events["xn"], RegistrationFailed)
    assert net.dc.drops["unadmitted_key"] >= 1
    assert not [d for src, to, d in net.sent if src == DC_EP and to == net.outside["xn"]]


def test_admitted_key_asking_for_another_name_is_refused_with_a_status_only():
    net = _net(fake_tunnels=True)
    net.keys["xn"] = net.keys["mn"]  # mn's key, admitted for mn only
    node = net.add_node("xn", ("198.51.100.50", 7401), fqdn="cn.ntm.example")
    node.start(net.now)
    net.run(1.0)
    (failed,) = _of(net.events["xn"], RegistrationFailed)
    assert failed.status == Status.REFUSED and failed.reason == "REFUSED"
    refused = _of(net.dc_events, RegistrationRefused)[-1]
    assert "public key is not the one admitted" in refused.reason  # the DC logs the detail


def test_dc_restart_makes_nodes_register_again_with_same_vip():
    net = _net(fake_tunnels=True)
    vip = _of(net.events["mn"], Registered)[0].vip
    net.dc = net.make_dc()  # a restarted DC: same key and database, no sessions
    net.run(12.0)
    again = _of(net.events["mn"], Registered)
    assert len(again) >= 2 and again[-1].vip == vip
    assert _of(net.events["mn"], DcUnreachable)  # its KEEPALIVE went unanswered
    assert net.dc.drops["unknown_index"] >= 1  # the old session's SIGNAL, dropped silently


def test_dc_silence_leads_to_reregistration():
    net = _net(fake_tunnels=True)
    net.drop = lambda d, s, t: t == DC_EP
    net.run(15.0)
    assert _of(net.events["mn"], DcUnreachable)
    net.drop = lambda d, s, t: False
    net.run(10.0)
    assert len(_of(net.events["mn"], Registered)) >= 2


def test_lossy_link_registers_and_directs_once():
    net = Net(fake_tunnels=True)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401))
    net.add_node("cn", ("198.51.100.30", 7401))
    rng = random.Random(7)
    net.drop = lambda datagram, src, dst: rng.random() < 0.4
    for node in net.nodes.values():
        node.start(net.now)
    net.run(25.0)  # registration retries through a 40% loss in each direction
    assert _of(net.events["mn"], Registered) and _of(net.events["cn"], Registered)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(6.0)
    assert len(_decided(net)) == 1  # retransmissions got the cached answer
    assert len(net.handshakes("mn").directions) == 1
    assert len(net.handshakes("cn").directions) == 1  # every ROUTE_DIRECTION copy acked, one used


def test_lossy_link_builds_one_tunnel():
    net = Net()
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401))
    net.add_node("cn", ("198.51.100.30", 7401))
    rng = random.Random(7)
    net.drop = lambda datagram, src, dst: rng.random() < 0.4
    for node in net.nodes.values():
        node.start(net.now)
    net.run(25.0)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(6.0)
    assert _of(net.events["mn"], DirectionResolved)[-1].status == Status.OK
    assert len(_of(net.events["cn"], TunnelUp)) == 1  # one tunnel despite retransmits


# --- directions ---------------------------------------------------------------------------


def test_names_outside_zone_and_unknown_names():
    net = _net(fake_tunnels=True)
    mn = net.nodes["mn"]
    mn.request_direction("www.example.org", net.now)
    mn.request_direction("nobody.ntm.example", net.now)
    mn.request_direction("bad_name.ntm.example", net.now)  # cannot be a v2 name
    net.run(1.0)
    got = {e.fqdn: e.status for e in _of(net.events["mn"], DirectionResolved)}
    assert got == {
        "www.example.org": Status.NOT_NTM,
        "nobody.ntm.example": Status.UNKNOWN,
        "bad_name.ntm.example": Status.UNKNOWN,
    }


def test_initiator_behind_nat_is_directed_to_the_public_peer():
    net = _net(mn_nat=True, cn_nat=False, fake_tunnels=True)
    mine, theirs = _directed(net)
    assert (mine.route, mine.role, theirs.role) == (Route.DIRECT, Role.INITIATE, Role.RESPOND)
    assert mine.peer_endpoints == (("198.51.100.30", 7401),)
    assert theirs.peer_endpoints == (("198.51.100.41", 7401),)  # observed only: no locals
    assert mine.self_name == "mn.ntm.example" and mine.peer_name == "cn.ntm.example"
    assert mine.peer_key == net.keys["cn"].public and theirs.peer_key == net.keys["mn"].public
    assert mine.peer_vip4 == _of(net.events["cn"], Registered)[0].vip


def test_initiator_behind_nat_builds_tunnel_and_keys_match():
    net = _net(mn_nat=True, cn_nat=False)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(2.0)
    resolved = _of(net.events["mn"], DirectionResolved)[-1]
    assert resolved.status == Status.OK
    assert resolved.vip == _of(net.events["cn"], Registered)[0].vip
    mn_t = _of(net.events["mn"], TunnelUp)[-1].tunnel
    cn_t = _of(net.events["cn"], TunnelUp)[-1].tunnel
    assert mn_t.tunnel_id == cn_t.tunnel_id
    assert _endpoint(cn_t) == ("198.51.100.41", 7401)  # learnt from the init
    _data_flows(mn_t, net.nodes["cn"].tunnels, net.now)
    _data_flows(cn_t, net.nodes["mn"].tunnels, net.now, b"world")


def test_peer_behind_nat_is_directed_to_open_the_tunnel():
    net = _net(mn_nat=False, cn_nat=True, fake_tunnels=True)
    mine, theirs = _directed(net)
    assert (mine.role, theirs.role) == (Role.RESPOND, Role.INITIATE)
    assert theirs.peer_endpoints == (("10.10.1.2", 7401),)  # mn is public on its own address


def test_peer_behind_nat_opens_the_tunnel():
    net = _net(mn_nat=False, cn_nat=True)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(2.0)
    mn_t = _of(net.events["mn"], TunnelUp)[-1].tunnel
    cn_t = _of(net.events["cn"], TunnelUp)[-1].tunnel
    assert _endpoint(mn_t) == ("198.51.100.31", 7401)  # cn's NAT mapping
    assert mn_t.tunnel_id == cn_t.tunnel_id


def test_both_symmetric_without_relay_has_no_route():
    net = Net(relays=False, fake_tunnels=True)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401), ("198.51.100.41", 40001))
    net.add_node("cn", ("10.10.2.2", 7401), ("198.51.100.31", 7401), ("198.51.100.31", 40002))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(1.0)
    assert _of(net.events["mn"], DirectionResolved)[-1].status == Status.NO_ROUTE


def test_probe_tells_cone_from_symmetric():
    net = _nat_net(mn_symmetric=True, fake_tunnels=True)
    nat = {e.fqdn: e.reach for e in _of(net.dc_events, NodeNat)}
    assert nat == {"mn.ntm.example": "symmetric", "cn.ntm.example": "cone"}
    assert net.nodes["mn"].nat_probe_observed == ("198.51.100.41", 40001)


def test_both_cone_punch_and_bind_at_the_relay_for_the_fallback():
    net = _nat_net(fake_tunnels=True)
    mine, theirs = _directed(net)
    assert _decided(net)[-1].route == "punch" and mine.route == Route.PUNCH
    assert mine.relay is not None and mine.relay == theirs.relay
    assert mine.peer_endpoints == (("198.51.100.31", 7401),)
    key = (net.dc.dc_id, mine.tunnel_id)
    assert net.handshakes("mn").relay_bound == [key] and net.handshakes("cn").relay_bound == [key]
    entry = net.relay.entries[key]
    assert entry.bound == [net.outside["mn"], net.outside["cn"]] or entry.bound == [
        net.outside["cn"],
        net.outside["mn"],
    ]


def test_both_cone_punch_directly():
    net = _nat_net()
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(2.0)
    assert _decided(net)[-1].route == "punch"
    mn_t = _of(net.events["mn"], TunnelUp)[-1].tunnel
    cn_t = _of(net.events["cn"], TunnelUp)[-1].tunnel
    assert mn_t.route == cn_t.route == "punch"
    assert _endpoint(mn_t) == ("198.51.100.31", 7401)
    assert not _of(net.events["mn"], RouteFallback)
    # Up without the relay: the fallback's bindings and RS sessions are gone at both ends.
    for name in ("mn", "cn"):
        assert not net.nodes[name].relays.bindings and not net.nodes[name].relays.sessions


def test_symmetric_nat_is_directed_through_the_relay():
    net = _nat_net(cn_symmetric=True, fake_tunnels=True)
    mine, _ = _directed(net)
    decided = _decided(net)[-1].log_fields()
    assert decided["route"] == "relay" and "symmetric" in decided["why"]
    assert decided["relay"] == "198.51.100.60:7500"
    assert mine.route == Route.RELAY and mine.relay.endpoint == RS_EP
    assert (net.dc.dc_id, mine.tunnel_id) in net.relay.entries
    assert len(net.handshakes("mn").relay_bound) == 1


def _relayed_data_works(net: Net, mn_t, cn_t) -> None:
    forwarded_before = net.relay.forwarded
    datagram = mn_t.ring.sending(net.now).seal(T_DATA, b"via the relay")
    net.relay.receive(datagram, net.outside["mn"], net.now)
    ((out, to),) = net.relay.datagrams_to_send()
    assert to == net.outside["cn"] and out == datagram  # opaque: forwarded as it came
    _, index, counter = parse_transport(out)
    _, keypair = net.nodes["cn"].tunnels.by_index[index]
    assert keypair.open(out, counter) == b"via the relay"
    assert net.relay.forwarded == forwarded_before + 1


def test_symmetric_nat_goes_through_the_relay():
    net = _nat_net(cn_symmetric=True)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(2.0)
    mn_t = _of(net.events["mn"], TunnelUp)[-1].tunnel
    cn_t = _of(net.events["cn"], TunnelUp)[-1].tunnel
    assert mn_t.route == cn_t.route == "relay"
    _relayed_data_works(net, mn_t, cn_t)
    key = (net.dc.dc_id, mn_t.tunnel_id)
    assert all(key in net.nodes[name].relays.bindings for name in ("mn", "cn"))
    net.nodes["mn"].handshakes.close(*key, net.now)  # the tunnel is forgotten: unbound
    assert key not in net.nodes["mn"].relays.bindings and not net.nodes["mn"].relays.sessions


def test_blocked_punching_falls_back_to_the_relay_in_bounded_time():
    net = _nat_net()
    ends = {net.outside["mn"], net.outside["cn"]}
    net.drop = lambda datagram, src, dst: src in ends and dst in ends
    asked_at = net.now
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(6.0)
    fallback = _of(net.events["mn"], RouteFallback)
    assert fallback and (fallback[0].from_route, fallback[0].to_route) == ("punch", "relay")
    up = _of(net.events["mn"], TunnelUp)[-1]
    assert up.tunnel.route == "relay"
    resolved = _of(net.events["mn"], DirectionResolved)[-1]
    assert resolved.status == Status.OK and net.now - asked_at < 6.5
    _relayed_data_works(net, up.tunnel, _of(net.events["cn"], TunnelUp)[-1].tunnel)


def _same_nat_net(fake_tunnels: bool) -> Net:
    net = Net(fake_tunnels=fake_tunnels)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401))
    net.add_node("cn", ("10.10.1.3", 7401), ("198.51.100.41", 7402))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    return net


def test_same_nat_is_directed_to_private_addresses():
    net = _same_nat_net(fake_tunnels=True)
    mine, theirs = _directed(net)
    decided = _decided(net)[-1].log_fields()
    assert decided["route"] == "direct" and "same NAT" in decided["why"]
    assert mine.peer_endpoints == (("198.51.100.41", 7402), ("10.10.1.3", 7401))
    assert theirs.peer_endpoints == (("198.51.100.41", 7401), ("10.10.1.2", 7401))


def test_same_nat_goes_direct_to_private_addresses():
    net = _same_nat_net(fake_tunnels=False)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(1.0)
    inits = [to for src, to, d in net.sent if src == net.outside["mn"] and d[1] == T_INIT]
    assert ("10.10.1.3", 7401) in inits  # the private address is tried


def test_several_relays_spread_tunnels_and_each_tunnel_sticks_to_one():
    relays = [
        RelayChoice({4: (f"198.51.100.{60 + i}", 7500)}, StaticKey.generate().public, b"k")
        for i in range(3)
    ]
    picks = Counter(choose_relay(relays, tid).endpoint for tid in range(1, 601))
    assert set(picks) == {r.endpoint for r in relays}
    assert min(picks.values()) > 150  # about a third each (rendezvous hashing)
    assert choose_relay(relays, 42) == choose_relay(relays, 42)
    dc = Coordinator(
        static=StaticKey.generate(),
        store=NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16")),
        zone="ntm.example",
        admission={},
        keepalive_s=5,
        keepalive_misses=3,
        relays=[(r.endpoint, r.public_key) for r in relays],
    )
    assert [r.endpoint for r in dc.relays] == [r.endpoint for r in relays]


def test_route_direction_ack_only_from_the_directed_node_ends_retransmits():
    net = _net(mn_nat=False, cn_nat=True, fake_tunnels=True)  # the DC directs cn, which acks
    cn_out = net.outside["cn"]
    net.drop = lambda d, src, dst: src == cn_out and dst == DC_EP  # cn's acks get lost
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(0.2)
    (tx,) = net.dc.director.tx.find("RouteDirection")
    tunnel_id, _ = tx.context
    mn = net.nodes["mn"]
    mn.session.send(RouteDirectionAck(tx.txid, tunnel_id), net.now)  # mn knows the txid...
    net.deliver(mn.datagrams_to_send(), "mn")
    assert net.dc.director.tx.get(tx.txid) is not None  # ... but is not the directed node
    assert net.dc.drops["unexpected_ack"] == 1
    net.drop = lambda d, s, t: False
    net.run(2.0)  # the DC resends ROUTE_DIRECTION, cn acks the copy
    assert net.dc.director.tx.get(tx.txid) is None
    assert not _of(net.dc_events, RouteDirectionUnacked)


def test_a_tunnel_a_node_drops_is_reported_and_the_dc_forgets_it():
    """A first handshake that finds no route ends the Direction at the node, which tells the
    DC (TUNNEL_CLOSED), so the pair's directed tunnel stops counting (docs/protocol.md 10)."""
    net = _net(mn_nat=True, cn_nat=False)
    net.drop = lambda d, s, t: t == ("198.51.100.30", 7401) and d[1] == 1  # cn never hears inits
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(1.0)
    assert len(net.dc.tunnels) == 1
    net.run(15.0)
    assert _of(net.events["mn"], DirectionResolved)[-1].status == Status.NO_ROUTE
    assert len(net.dc.tunnels) == 0
