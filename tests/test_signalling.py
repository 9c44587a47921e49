"""Node and DC state machines talking over an in-memory network (no sockets)."""

import random

from ntma.proto.messages import Status
from ntma.proto.node_sm import DirectionResolved, Registered, RegistrationFailed, TunnelUp

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


def test_both_behind_nat_has_no_route_yet():
    net = _net(mn_nat=True, cn_nat=True)
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
    net.run(12.0)
    assert _of(net.events["mn"], Registered) and _of(net.events["cn"], Registered)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(6.0)
    assert _of(net.events["mn"], DirectionResolved)[-1].status == Status.OK
    assert len(_of(net.events["cn"], TunnelUp)) == 1  # one tunnel despite retransmits


def test_dc_restart_makes_nodes_register_again_with_same_vip():
    net = _net()
    vip = _of(net.events["mn"], Registered)[0].vip
    from ntma.dc.coordinator import Coordinator

    net.dc = Coordinator(
        static=net.dc_key,
        store=net.store,
        zone="ntm.example",
        admission={
            "mn.ntm.example": net.keys["mn"].public,
            "cn.ntm.example": net.keys["cn"].public,
        },
        keepalive_s=5,
        keepalive_misses=3,
        epoch_offset=1_700_000_000.0,
    )
    net.run(8.0)
    again = _of(net.events["mn"], Registered)
    assert len(again) >= 2 and again[-1].vip == vip


def test_dc_silence_leads_to_reregistration():
    net = _net()
    net.drop = lambda d, s, t: t == ("198.51.100.10", 7400)
    net.run(15.0)
    from ntma.proto.node_sm import DcUnreachable

    assert _of(net.events["mn"], DcUnreachable)
    net.drop = lambda d, s, t: False
    net.run(10.0)
    assert len(_of(net.events["mn"], Registered)) >= 2
