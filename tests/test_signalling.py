"""Node and DC state machines talking over an in-memory network (no sockets)."""

import ipaddress
import random
from collections import Counter

from ntma.dc.coordinator import Coordinator
from ntma.dc.events import NodeNat, RouteDecided
from ntma.dc.store import NodeStore
from ntma.proto.crypto import StaticKey
from ntma.proto.messages import Status
from ntma.proto.node import (
    DirectionResolved,
    Registered,
    RegistrationFailed,
    RouteFallback,
    TunnelUp,
)

from .sim import Net


def _of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def _net(mn_nat: bool = True, cn_nat: bool = False) -> Net:
    net = Net()
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


def test_registration_gives_vips_and_nat_view():
    net = _net()
    mn = _of(net.events["mn"], Registered)[0]
    cn = _of(net.events["cn"], Registered)[0]
    assert mn.vip != cn.vip and mn.vip.startswith("10.99.")
    assert mn.behind_nat and not cn.behind_nat
    assert mn.observed == ("198.51.100.41", 7401)


def _tunnel_between(net: Net):
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(2.0)
    resolved = _of(net.events["mn"], DirectionResolved)
    assert resolved and resolved[-1].status == Status.OK
    mn_tunnel = _of(net.events["mn"], TunnelUp)[-1].tunnel
    cn_tunnel = _of(net.events["cn"], TunnelUp)[-1].tunnel
    return resolved[-1], mn_tunnel, cn_tunnel


def test_initiator_behind_nat_builds_tunnel_and_keys_match():
    net = _net(mn_nat=True, cn_nat=False)
    resolved, mn_t, cn_t = _tunnel_between(net)
    assert resolved.vip == _of(net.events["cn"], Registered)[0].vip
    assert mn_t.tunnel_id == cn_t.tunnel_id
    assert cn_t.peer_endpoint == ("198.51.100.41", 7401)  # learnt from the request
    datagram = mn_t.seal(b"hello")
    from ntma.proto.packet import unpack_data_header

    _, counter = unpack_data_header(datagram)
    assert cn_t.open(datagram, counter) == b"hello"
    back = cn_t.seal(b"world")
    assert mn_t.open(back, unpack_data_header(back)[1]) == b"world"


def test_peer_behind_nat_is_directed_to_open_the_tunnel():
    net = _net(mn_nat=False, cn_nat=True)
    _, mn_t, cn_t = _tunnel_between(net)
    assert mn_t.peer_endpoint == ("198.51.100.31", 7401)  # cn's NAT mapping
    assert mn_t.tunnel_id == cn_t.tunnel_id


def test_both_symmetric_without_relay_has_no_route():
    net = Net(relays=False)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401), ("198.51.100.41", 40001))
    net.add_node("cn", ("10.10.2.2", 7401), ("198.51.100.31", 7401), ("198.51.100.31", 40002))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(1.0)
    assert _of(net.events["mn"], DirectionResolved)[-1].status == Status.NO_ROUTE


def test_names_outside_zone_and_unknown_names():
    net = _net()
    mn = net.nodes["mn"]
    mn.request_direction("www.example.org", net.now)
    mn.request_direction("nobody.ntm.example", net.now)
    net.run(1.0)
    got = {e.fqdn: e.status for e in _of(net.events["mn"], DirectionResolved)}
    assert got == {"www.example.org": Status.NOT_NTM, "nobody.ntm.example": Status.UNKNOWN}


def test_unadmitted_key_is_refused_with_a_reason():
    net = _net()
    net.add_node("xn", ("198.51.100.50", 7401))
    net.nodes["xn"].fqdn = "cn.ntm.example"  # tries to take cn's name with another key
    net.nodes["xn"].start(net.now)
    net.run(1.0)
    failed = _of(net.events["xn"], RegistrationFailed)
    assert failed and failed[0].status == Status.REFUSED
    assert "public key is not the one admitted" in failed[0].reason


def test_lossy_link_retransmits_and_stays_idempotent():
    net = Net()
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
    assert _of(net.events["mn"], DirectionResolved)[-1].status == Status.OK
    assert len(_of(net.events["cn"], TunnelUp)) == 1  # one tunnel despite retransmits


def test_dc_restart_makes_nodes_register_again_with_same_vip():
    net = _net()
    vip = _of(net.events["mn"], Registered)[0].vip

    net.dc = net.make_dc()  # a restarted DC: same key and database, no sessions
    net.run(8.0)
    again = _of(net.events["mn"], Registered)
    assert len(again) >= 2 and again[-1].vip == vip


def test_dc_silence_leads_to_reregistration():
    net = _net()
    net.drop = lambda d, s, t: t == ("198.51.100.10", 7400)
    net.run(15.0)
    from ntma.proto.node import DcUnreachable

    assert _of(net.events["mn"], DcUnreachable)
    net.drop = lambda d, s, t: False
    net.run(10.0)
    assert len(_of(net.events["mn"], Registered)) >= 2


def _nat_net(mn_symmetric: bool = False, cn_symmetric: bool = False) -> Net:
    net = Net()
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


def _decided(net: Net):
    return [e for e in net.dc.events() if isinstance(e, RouteDecided)]


def test_probe_tells_cone_from_symmetric():
    net = _nat_net(mn_symmetric=True)
    nat = {e.fqdn: e.reach for e in net.dc.events() if isinstance(e, NodeNat)}
    assert nat == {"mn.ntm.example": "symmetric", "cn.ntm.example": "cone"}


def test_both_cone_punch_directly():
    net = _nat_net()
    net.dc.events()
    _, mn_t, cn_t = _tunnel_between(net)
    assert _decided(net)[-1].route == "punch"
    assert mn_t.route == cn_t.route == "punch"
    assert mn_t.peer_endpoint == ("198.51.100.31", 7401)
    assert not _of(net.events["mn"], RouteFallback)


def _relayed_data_works(net: Net, mn_t, cn_t) -> None:
    from ntma.proto.packet import unpack_data_header

    assert mn_t.peer_endpoint == cn_t.peer_endpoint == ("198.51.100.60", 7500)
    forwarded_before = net.relay.forwarded
    datagram = mn_t.seal(b"via the relay")
    net.relay.receive(datagram, net.outside["mn"], net.now)
    ((out, to),) = net.relay.datagrams_to_send()
    assert to == net.outside["cn"] and out == datagram  # opaque: forwarded as it came
    assert cn_t.open(out, unpack_data_header(out)[1]) == b"via the relay"
    assert net.relay.forwarded == forwarded_before + 1


def test_symmetric_nat_goes_through_the_relay():
    net = _nat_net(cn_symmetric=True)
    net.dc.events()
    _, mn_t, cn_t = _tunnel_between(net)
    decided = _decided(net)[-1].log_fields()
    assert decided["route"] == "relay" and "symmetric" in decided["why"]
    assert decided["relay"] == "198.51.100.60:7500"
    assert mn_t.route == cn_t.route == "relay"
    _relayed_data_works(net, mn_t, cn_t)


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


def test_same_nat_goes_direct_to_private_addresses():
    net = Net()
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401))
    net.add_node("cn", ("10.10.1.3", 7401), ("198.51.100.41", 7402))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    net.dc.events()
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    sent = []
    original = net._deliver

    def record(datagrams, source_name):
        sent.extend((source_name, target) for _, target in datagrams)
        original(datagrams, source_name)

    net._deliver = record
    net.run(1.0)
    decided = _decided(net)[-1].log_fields()
    assert decided["route"] == "direct" and "same NAT" in decided["why"]
    assert ("mn", ("10.10.1.3", 7401)) in sent  # the private address is tried first


def test_several_relays_spread_tunnels_and_each_tunnel_sticks_to_one():
    relays = [((f"198.51.100.{60 + i}", 7500), StaticKey.generate().public) for i in range(3)]
    store = NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16"))
    dc = Coordinator(
        static=StaticKey.generate(),
        store=store,
        zone="ntm.example",
        admission={},
        keepalive_s=5,
        keepalive_misses=3,
        relays=relays,
    )

    class End:
        public_key = b"\x01" * 32

    picks = Counter(dc._relay_for(tid, End, End, 0.0).endpoint for tid in range(1, 601))
    assert set(picks) == {ep for ep, _ in relays}
    assert min(picks.values()) > 150  # about a third each (rendezvous hashing)
    assert dc._relay_for(42, End, End, 0.0).endpoint == dc._relay_for(42, End, End, 9.0).endpoint


def test_route_direction_ack_only_from_the_directed_node_ends_retransmits():
    from ntma.proto.crypto import SignalBox
    from ntma.proto.messages import RouteDirectionAck
    from ntma.proto.packet import seal_message

    net = _net(mn_nat=False, cn_nat=True)  # the DC directs cn, which must ack
    cn = net.nodes["cn"]
    original = cn._from_dc

    def swallow_acks(msg, addr, now):  # cn handles the direction but its acks get lost
        original(msg, addr, now)
        cn._wire.out[:] = [d for d in cn._wire.out if d[0][1] != 0x08]

    cn._from_dc = swallow_acks
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(0.2)
    (tx,) = net.dc._tx.find("route_direction")
    tunnel_id, _ = tx.context
    forged = seal_message(
        RouteDirectionAck(tx.txid, tunnel_id),
        SignalBox(net.keys["mn"], net.dc_key.public),
        net.keys["mn"].public,
        bytes(12),
    )
    net.dc.receive(forged, net.outside["mn"], net.now)  # mn knows the txid? still not cn
    assert net.dc._tx.get(tx.txid) is not None
    assert net.dc.drops["unexpected route direction ack"] == 1
    genuine = seal_message(
        RouteDirectionAck(tx.txid, tunnel_id),
        SignalBox(net.keys["cn"], net.dc_key.public),
        net.keys["cn"].public,
        bytes(12),
    )
    net.dc.receive(genuine, net.outside["cn"], net.now)
    assert net.dc._tx.get(tx.txid) is None
