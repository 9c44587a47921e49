"""Mobility in the sans-IO machines (docs/protocol.md 7.3): a DC, an RS and two nodes over
the in-memory network of tests/sim.py, with NATs that filter (a NATed node hears only from
endpoints it has sent to). Each scenario builds a real tunnel, changes something under it
(a move, a restart, a NAT rebinding, an outage), and checks that DATA flows both ways
again, within the time the issue's targets allow, with nothing done on the other side.
The netns tests (tests/test_e2e_mobility.py) prove the same with real kernels and TCP."""

from __future__ import annotations

import ipaddress
import struct

from ntma.dc.events import NodeMoved, RouteUpdated, TunnelsDormant
from ntma.proto.fields_v2 import Status
from ntma.proto.handshake import T_SIGNAL
from ntma.proto.node import DirectionResolved, PeerGone, TunnelUp
from ntma.proto.session import ExpiredKeys

from .sim import DC_EP, Net

ZONE = "ntm.example"
MN_LAN, CN_LAN = ("10.10.1.2", 7401), ("10.10.2.2", 7401)
MN_NAT, CN_NAT = ("198.51.100.41", 7401), ("198.51.100.31", 7401)
MN_PUBLIC, CN_PUBLIC = ("198.51.100.40", 7401), ("198.51.100.30", 7401)
MN_PUBLIC2, CN_PUBLIC2 = ("198.51.100.42", 7401), ("198.51.100.32", 7401)
MN_NAT2 = ("198.51.100.43", 7401)


def _of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def _net(mn, cn, *, relays: bool = True, grant_lifetime_s: float = 3600.0) -> Net:
    """mn and cn registered; each given as (inside, outside, probe_outside)."""
    net = Net(filtering=True, relays=relays, grant_lifetime_s=grant_lifetime_s)
    net.add_node("mn", *mn)
    net.add_node("cn", *cn)
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    return net


def _tunnel(net: Net, name: str):
    (tunnel,) = net.nodes[name].tunnels.by_ref.values()
    return tunnel


def _connected(net: Net) -> None:
    net.nodes["mn"].request_direction(f"cn.{ZONE}", net.now)
    net.run(4.0)
    assert _of(net.events["mn"], DirectionResolved)[-1].status == Status.OK
    assert _flows(net), "no tunnel before the event"


def _packet(src_vip: str, dst_vip: str) -> bytes:
    """An inner IPv4 packet (UDP, 20 bytes of payload) from one VIP to the other."""
    body = struct.pack("!HHHH", 5000, 5001, 28, 0) + b"m" * 20
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, 17, 0,
        ipaddress.IPv4Address(src_vip).packed, ipaddress.IPv4Address(dst_vip).packed,
    )
    return header + body


def _send(net: Net, src: str, dst: str) -> bool:
    """One DATA datagram src -> dst through the network; did dst's tunnel take it?"""
    tunnel, peer = _tunnel(net, src), _tunnel(net, dst)
    before = peer.packets_in
    try:
        datagram = tunnel.seal(_packet(tunnel.self_vip, tunnel.peer_vip), net.now)
    except ExpiredKeys:
        return False
    net.deliver([(datagram, tunnel.endpoint)], src)
    return peer.packets_in > before


def _flows(net: Net) -> bool:
    try:
        return _send(net, "mn", "cn") and _send(net, "cn", "mn")
    except ValueError:  # a tunnel missing at one end
        return False


def _recovery_s(net: Net, limit_s: float, step: float = 0.05) -> float:
    """Run the world until DATA flows both ways again (as a 20 pps stream would probe);
    the time that took. Fails past limit_s."""
    start = net.now
    while net.now - start <= limit_s:
        if _flows(net):
            return net.now - start
        net.run(step, step)
    raise AssertionError(f"no data both ways within {limit_s} s")


def _move(net: Net, name: str, *where) -> None:
    net.move(name, *where)
    net.nodes[name].network_changed(net.now)  # what the netlink stage reports


# --- a node moves ----------------------------------------------------------------------------


def test_mover_behind_nat_to_public_with_peer_behind_nat():
    """The issue's dead case: cn behind a NAT that drops packets from mn's new address."""
    net = _net((MN_LAN, MN_NAT, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    _move(net, "mn", MN_PUBLIC)
    assert _recovery_s(net, 0.5) <= 0.5
    (update,) = _of(net.dc_events, RouteUpdated)
    assert (update.cause, update.route) == ("moved", "direct")
    assert update.initiator == f"cn.{ZONE}"  # the NATed end opens toward the public mover
    assert _tunnel(net, "cn").endpoint == MN_PUBLIC


def test_mover_public_to_cone_with_peer_behind_nat_punches():
    net = _net((MN_PUBLIC, None, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    _move(net, "mn", MN_LAN, MN_NAT2)
    assert _recovery_s(net, 1.0) <= 1.0
    assert _of(net.dc_events, RouteUpdated)[-1].route == "punch"


def test_mover_to_a_symmetric_nat_goes_through_the_relay():
    net = _net((MN_LAN, MN_NAT, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    _move(net, "mn", MN_LAN, MN_NAT2, (MN_NAT2[0], 40001))
    assert _recovery_s(net, 1.0) <= 1.0
    assert _of(net.dc_events, RouteUpdated)[-1].route == "relay"
    assert _tunnel(net, "mn").route == "relay" and _tunnel(net, "cn").route == "relay"


def test_a_relayed_tunnel_follows_the_mover_at_once():
    """Both symmetric: relayed. mn moves to another symmetric NAT: its RS session and
    binding move with its first packet, and the tunnel is handshaken again through it."""
    net = _net((MN_LAN, MN_NAT, (MN_NAT[0], 40001)), (CN_LAN, CN_NAT, (CN_NAT[0], 40002)))
    _connected(net)
    assert _tunnel(net, "mn").route == "relay"
    _move(net, "mn", MN_LAN, MN_NAT2, (MN_NAT2[0], 40003))
    assert _recovery_s(net, 1.0) <= 1.0


def test_the_responder_moves_public_to_public_with_the_initiator_behind_nat():
    net = _net((MN_LAN, MN_NAT, None), (CN_PUBLIC, None, None))
    _connected(net)
    _move(net, "cn", CN_PUBLIC2)
    assert _recovery_s(net, 0.5) <= 0.5
    assert _tunnel(net, "mn").endpoint == CN_PUBLIC2


def test_both_ends_move_at_once():
    net = _net((MN_LAN, MN_NAT, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    _move(net, "mn", MN_PUBLIC)
    _move(net, "cn", CN_PUBLIC2)
    assert _recovery_s(net, 1.0) <= 1.0


def test_public_mover_to_public_peer_roams_without_waiting_for_the_dc():
    net = _net((MN_PUBLIC, None, None), (CN_PUBLIC, None, None))
    _connected(net)
    net.move("mn", MN_PUBLIC2)  # no netlink: only its next packet tells
    assert _send(net, "mn", "cn") and _send(net, "cn", "mn")  # at once: roaming
    assert _tunnel(net, "cn").endpoint == MN_PUBLIC2


# --- restarts, outages, departures -------------------------------------------------------


def test_a_restarted_peer_is_reached_again_within_two_seconds_without_the_other_side():
    net = _net((MN_LAN, MN_NAT, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    old = _tunnel(net, "mn")
    net.restart("cn")
    assert _recovery_s(net, 2.0) <= 2.0
    assert _tunnel(net, "mn") is old  # the same tunnel (VIPs, id), keyed again
    assert _of(net.events["cn"], TunnelUp)  # the restarted end got it from the DC
    assert _of(net.dc_events, RouteUpdated)[-1].cause == "restarted"


def test_a_restarted_initiator_is_reached_again():
    net = _net((MN_LAN, MN_NAT, None), (CN_PUBLIC, None, None))
    _connected(net)
    net.restart("mn")
    assert _recovery_s(net, 2.0) <= 2.0


def test_an_offline_peer_loses_its_tunnels_and_its_name_says_so():
    net = _net((MN_LAN, MN_NAT, None), (CN_PUBLIC, None, None))
    _connected(net)
    cn = net.nodes.pop("cn")  # gone without a word (power cut)
    net.run(20.0)  # 3 keep-alive misses at 5 s
    assert _of(net.dc_events, TunnelsDormant)
    assert not net.nodes["mn"].tunnels.by_ref  # TUNNEL_GONE: no answer from a dead tunnel
    net.nodes["mn"].request_direction(f"cn.{ZONE}", net.now)
    net.run(1.0)
    assert _of(net.events["mn"], DirectionResolved)[-1].status == Status.OFFLINE
    assert cn.tunnels.by_ref  # it never heard anything


def test_break_before_make_thirty_seconds_without_network():
    """mn loses its network for 30 s (the DC marks it offline and tells cn), then comes up
    behind another NAT: the dormant tunnel is re-directed and both ends carry data again."""
    net = _net((MN_LAN, MN_NAT, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    outage = net.drop
    net.drop = lambda d, src, dst: src == net.outside["mn"] or dst == net.outside["mn"]
    net.run(30.0)
    assert not net.nodes["cn"].tunnels.by_ref  # told TUNNEL_GONE(OFFLINE)
    net.drop = outage
    _move(net, "mn", MN_LAN, MN_NAT2)
    assert _recovery_s(net, 2.0) <= 2.0
    assert _of(net.dc_events, RouteUpdated)[-1].cause in ("back_online", "moved")


def test_nat_rebinding_is_recovered_within_one_keepalive():
    """mn's NAT forgets its mapping and picks another port; mn's own address stays, so only
    the DC's observed endpoint in KEEPALIVE_ACK tells it."""
    net = _net((MN_LAN, MN_NAT, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    net.move("mn", MN_LAN, (MN_NAT[0], 41234))  # no network_changed: nothing local changed
    assert _recovery_s(net, 5.0 + 1.0) <= 6.0  # one keep-alive interval (5 s), then a re-direct
    assert _of(net.dc_events, NodeMoved)


def test_a_deregistered_peer_is_gone_at_once():
    net = _net((MN_LAN, MN_NAT, None), (CN_PUBLIC, None, None))
    _connected(net)
    net.nodes["cn"].deregister(net.now)
    net.run(1.0)
    assert not net.nodes["mn"].tunnels.by_ref


def test_a_relayed_tunnel_outlives_its_grant():
    """The DC renews the grant before it expires; the ends bind again, no handshake."""
    net = _net(
        (MN_LAN, MN_NAT, (MN_NAT[0], 40001)),
        (CN_LAN, CN_NAT, (CN_NAT[0], 40002)),
        grant_lifetime_s=60.0,
    )
    _connected(net)
    keys_before = _tunnel(net, "mn").ring.current
    (entry,) = net.relay.entries.values()
    first_expiry = entry.expires_ms
    for _ in range(9):  # 90 s: past the first grant's expiry, before the 120 s rekey
        net.run(10.0)
        assert _flows(net)
    renewals = [e for e in _of(net.dc_events, RouteUpdated) if e.cause == "grant_renewal"]
    assert renewals and entry.expires_ms > first_expiry
    assert net.relay.entries[entry.key] is entry
    assert _tunnel(net, "mn").ring.current is keys_before  # bound again, not handshaken


def test_a_node_flapping_its_address_cannot_flood_its_peers():
    """Hostile or broken: mn's source changes 100 times in 1 s. The DC re-directs its tunnels
    at most once per 0.5 s, and the tunnel still works when it settles."""
    net = _net((MN_LAN, MN_NAT, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    before = len(_of(net.dc_events, RouteUpdated))
    for i in range(100):
        _move(net, "mn", MN_LAN, (MN_NAT[0], 42000 + i))
        net.run(0.01, 0.01)
    updates = len(_of(net.dc_events, RouteUpdated)) - before
    assert 1 <= updates <= 3
    assert _recovery_s(net, 1.5) <= 1.5


def test_an_outage_on_the_same_network_brings_the_tunnel_back():
    """mn's link is down 30 s (the DC marks it offline, cn is told), then up on the same
    address: mn registers again (same process) and the dormant tunnel is re-directed."""
    net = _net((MN_LAN, MN_NAT, None), (CN_LAN, CN_NAT, None))
    _connected(net)
    net.drop = lambda d, src, dst: src == net.outside["mn"] or dst == net.outside["mn"]
    net.run(30.0)
    assert not net.nodes["cn"].tunnels.by_ref
    net.drop = lambda d, s, t: False
    net.nodes["mn"].network_changed(net.now)  # the link is up again
    assert _recovery_s(net, 2.0) <= 2.0
    assert _of(net.dc_events, RouteUpdated)[-1].cause == "back_online"


def test_an_offline_nodes_tunnels_end_at_the_dc_after_they_waited():
    net = _net((MN_LAN, MN_NAT, None), (CN_PUBLIC, None, None))
    _connected(net)
    net.nodes.pop("cn")
    net.run(60.0, 1.0)
    assert len(net.dc.tunnels) == 1 and net.dc.redirects.dormant  # waiting for cn
    net.run(600.0, 1.0)
    assert len(net.dc.tunnels) == 0 and not net.dc.redirects.dormant


def test_a_registration_confirmed_by_its_probe_moves_the_session_first():
    """mn comes back from an outage behind another NAT, and the first authentic packet of
    its new registration is the PROBE on the probe port (its main-port packets are late).
    The DC moves the session to where the REGISTER came from before it re-directs, so no
    re-direction is decided from the old network's endpoint."""
    net = _net((MN_LAN, MN_NAT, (MN_NAT[0], 40001)), (CN_LAN, CN_NAT, (CN_NAT[0], 40002)))
    _connected(net)
    net.drop = lambda d, src, dst: src == net.outside["mn"] or dst == net.outside["mn"]
    net.run(30.0)
    before = len(_of(net.dc_events, RouteUpdated))
    late_until = net.now + 0.3

    def late_main_signals(datagram, src, dst):
        return dst == DC_EP and src == MN_NAT2 and datagram[1] == T_SIGNAL and net.now < late_until

    net.drop = late_main_signals
    _move(net, "mn", MN_LAN, MN_NAT2, (MN_NAT2[0], 40003))
    net.run(0.3)
    mn_session = net.dc.table.by_key[net.keys["mn"].public]
    assert mn_session.endpoint == MN_NAT2  # confirmed by the PROBE alone
    net.drop = lambda d, s, t: False
    assert _recovery_s(net, 2.0) <= 2.0
    updates = _of(net.dc_events, RouteUpdated)[before:]
    assert updates
    first, last = updates[0], updates[-1]
    assert (first.requester_reach, first.target_reach, first.route) == (
        last.requester_reach, last.target_reach, last.route,
    ), updates


def test_the_peer_told_its_tunnel_is_gone_reports_why():
    net = _net((MN_LAN, MN_NAT, None), (CN_PUBLIC, None, None))
    _connected(net)
    net.nodes["cn"].deregister(net.now)
    net.run(1.0)
    (gone,) = _of(net.events["mn"], PeerGone)
    assert (gone.peer, gone.reason) == (f"cn.{ZONE}", "deregistered")
    assert gone.log_name == "tunnel_gone" and gone.log_fields()["reason"] == "deregistered"
