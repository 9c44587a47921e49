"""Several names in one session (docs/protocol.md 5.1, NAME_ADD): what an adapter needs for
its devices. The sans-IO DC, RS and nodes over tests/sim.py's network: admission of exact
names and sub-zones with max_names, VIPs of their own and kept, Directions to a device
name, re-adding after restarts, NAME_REMOVE."""

from __future__ import annotations

from ntma.dc.events import NameAdded, NameRefused
from ntma.proto.fields_v2 import Status
from ntma.proto.node import DirectionResolved, NameFailed, NameRegistered, TunnelUp

from .sim import Net

ZONE = "ntm.example"
DEV1, DEV2 = f"dev1.{ZONE}", f"dev2.{ZONE}"


def _of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def _net(**kwargs) -> Net:
    net = Net(admission={DEV1: "mn", DEV2: "mn"}, **kwargs)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401))
    net.add_node("cn", ("198.51.100.30", 7401))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    return net


def _registered(net: Net, name: str = "mn") -> dict[str, str]:
    return {e.fqdn: e.vip for e in _of(net.events[name], NameRegistered)}


def test_added_names_get_vips_of_their_own_and_answer_in_the_zone():
    net = _net()
    mn = net.nodes["mn"]
    assert mn.add_name(DEV1, net.now) and mn.add_name(DEV2, net.now)
    net.run(1.0)
    vips = _registered(net)
    assert set(vips) == {DEV1, DEV2}
    assert len({mn.registered.vip, *vips.values()}) == 3
    assert net.dc.online_record(DEV1).vip == vips[DEV1]
    assert [e.name for e in _of(net.dc_events, NameAdded)] == [DEV1, DEV2]


def test_a_peer_reaches_a_device_name_through_a_tunnel_of_its_own():
    net = _net()
    net.nodes["mn"].add_name(DEV1, net.now)
    net.run(1.0)
    net.nodes["cn"].request_direction(DEV1, net.now)
    net.run(2.0)
    resolved = _of(net.events["cn"], DirectionResolved)[-1]
    assert (resolved.status, resolved.vip) == (Status.OK, _registered(net)[DEV1])
    (up,) = _of(net.events["mn"], TunnelUp)
    assert up.tunnel.self_fqdn == DEV1 and up.tunnel.self_vip == _registered(net)[DEV1]


def test_names_not_admitted_for_the_key_are_refused():
    net = _net()
    net.nodes["cn"].add_name(DEV1, net.now)  # admitted for mn's key, not cn's
    net.nodes["mn"].add_name(f"other.{ZONE}", net.now)
    net.run(1.0)
    assert {e.fqdn: e.status for e in _of(net.events["cn"], NameFailed)} == {DEV1: Status.REFUSED}
    assert _of(net.events["mn"], NameFailed)[0].status == Status.REFUSED
    assert len(_of(net.dc_events, NameRefused)) == 2
    assert net.dc.online_record(DEV1) is None


def test_a_sub_zone_admits_names_below_it_up_to_max_names():
    net = _net(subzones=((f"site.{ZONE}", "mn", 2),))
    mn = net.nodes["mn"]
    for label in ("a", "b", "c"):
        mn.add_name(f"{label}.site.{ZONE}", net.now)
    net.run(1.0)
    assert set(_registered(net)) == {f"a.site.{ZONE}", f"b.site.{ZONE}"}
    (failed,) = _of(net.events["mn"], NameFailed)
    assert (failed.fqdn, failed.status) == (f"c.site.{ZONE}", Status.TOO_MANY_NAMES)


def test_names_come_back_with_their_vips_after_a_node_restart_and_a_dc_restart():
    net = _net()
    net.nodes["mn"].add_name(DEV1, net.now)
    net.run(1.0)
    vip = _registered(net)[DEV1]
    mn = net.restart("mn")
    mn.add_name(DEV1, net.now)  # the adapter adds its devices again at start
    net.run(1.0)
    assert _registered(net)[DEV1] == vip
    net.dc = net.make_dc()  # the DC restarts: no sessions; the node registers again
    net.run(20.0)
    assert net.dc.online_record(DEV1) is not None and net.dc.online_record(DEV1).vip == vip


def test_name_remove_ends_its_tunnels():
    net = _net()
    net.nodes["mn"].add_name(DEV1, net.now)
    net.run(1.0)
    net.nodes["cn"].request_direction(DEV1, net.now)
    net.run(2.0)
    assert net.nodes["cn"].tunnels.by_ref
    net.nodes["mn"].remove_name(DEV1, net.now)
    net.run(1.0)
    assert not net.nodes["cn"].tunnels.by_ref
    assert net.dc.online_record(DEV1) is None


def test_two_device_names_reach_one_peer_each_through_a_tunnel_of_its_own():
    """request_direction(from_name=...): each device asks as itself, gets its own tunnel (by
    VIP pair), and its DirectionResolved names it, so the adapter answers the right GN."""
    net = _net()
    mn, cn = net.nodes["mn"], net.nodes["cn"]
    mn.add_name(DEV1, net.now)
    mn.add_name(DEV2, net.now)
    net.run(1.0)
    mn.request_direction(f"cn.{ZONE}", net.now, DEV1)
    mn.request_direction(f"cn.{ZONE}", net.now, DEV2)
    net.run(2.0)
    resolved = {e.from_name: e for e in _of(net.events["mn"], DirectionResolved)}
    assert set(resolved) == {DEV1, DEV2}
    assert all(e.status == Status.OK for e in resolved.values())
    vips = _registered(net)
    tunnels = {t.self_fqdn: t for t in mn.tunnels}
    assert {name: t.self_vip for name, t in tunnels.items()} == {DEV1: vips[DEV1], DEV2: vips[DEV2]}
    assert {t.peer_vip for t in cn.tunnels} == {vips[DEV1], vips[DEV2]}


def test_a_name_not_yet_added_cannot_ask_for_a_direction():
    net = _net()
    net.nodes["mn"].request_direction(f"cn.{ZONE}", net.now, DEV1)
    net.run(1.0)
    (resolved,) = _of(net.events["mn"], DirectionResolved)
    assert (resolved.status, resolved.from_name) == (Status.NO_ROUTE, DEV1)
    assert not net.nodes["mn"].tunnels.by_ref


def test_a_restarted_adapters_device_is_re_directed_once_its_name_is_back():
    """cn holds a tunnel to a device name of mn's; mn restarts (new boot_id) and asks for the
    name again after it registers. The DC re-directs that tunnel only once mn holds the name
    again (before, the Direction would carry mn's own VIP for it), and both ends carry the
    device's VIP pair again."""
    net = _net()
    net.nodes["mn"].add_name(DEV1, net.now)
    net.run(1.0)
    net.nodes["cn"].request_direction(DEV1, net.now)
    net.run(2.0)
    vip = _registered(net)[DEV1]
    mn = net.restart("mn")
    mn.add_name(DEV1, net.now)
    net.run(3.0)
    (at_cn,) = net.nodes["cn"].tunnels
    (at_mn,) = mn.tunnels
    assert (at_cn.peer_fqdn, at_cn.peer_vip) == (DEV1, vip)
    assert (at_mn.self_fqdn, at_mn.self_vip) == (DEV1, vip)
    assert at_mn.ring.current is not None and at_cn.ring.current is not None


def test_a_direction_for_a_name_whose_ack_is_due_waits_for_it():
    """A ROUTE_DIRECTION for a device name can arrive before the NAME_ADD_ACK (the ack was
    lost and NAME_ADD is resent): it is held, not dropped, and acted on when the ack comes."""
    net = _net()
    net.nodes["mn"].add_name(DEV1, net.now)
    net.run(1.0)
    net.nodes["cn"].request_direction(DEV1, net.now)
    net.run(2.0)
    (held,) = net.nodes["mn"].handshakes._directed.values()
    mn = net.restart("mn")
    net.run(1.0)  # registered again, DEV1 not asked for yet
    mn.names.wanted[DEV1] = None  # wanted, its ack not come: as after a lost NAME_ADD_ACK
    mn._on_direction(held.direction, net.now)
    assert mn.drops.get("direction_not_for_us", 0) == 0
    assert held.ref not in mn.handshakes._directed
    mn.add_name(DEV1, net.now)  # asked (again): the ack releases the Direction
    mn.names._ask(DEV1, net.now)
    net.run(1.0)
    assert held.ref in mn.handshakes._directed
