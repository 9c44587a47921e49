"""IPv6 VIPs (issue 13, docs/protocol.md 8): the DC derives each name's IPv6 VIP from its
IPv4 one in its IPv6 pool; registration, NAME_ADD and Directions carry it; the zone and the
node's resolver answer AAAA; a tunnel carries IPv6 between the two VIPs, found by the VIP
pair on the send path and checked on the receive path."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from dnslib import QTYPE, DNSRecord

from ntma.config import ConfigError, load_dc_config
from ntma.dc.vip6 import Vip6Plan
from ntma.observe.spans import StageStats
from ntma.proto.dns import answer_for_status, parse_query, zone_answer
from ntma.proto.fields_v2 import VIP6_NONE, Status
from ntma.proto.node import DirectionResolved, NameRegistered
from ntma.proto.tunnel import InnerDrop, open_data
from ntma.stages.send import classify_packets

from .sim import Net

POOL4, POOL6 = ipaddress.IPv4Network("10.99.0.0/16"), ipaddress.IPv6Network("fd00:99::/112")
ZONE = "ntm.example"


def test_the_ipv6_vip_is_the_ipv4_vips_offset_in_the_ipv6_pool():
    plan = Vip6Plan(POOL4, POOL6)
    assert plan.of("10.99.0.2") == "fd00:99::2" and plan.of("10.99.255.254") == "fd00:99::fffe"
    assert plan.prefix6 == 112 and plan.router() == "fd00:99::1"
    assert Vip6Plan(POOL4).of("10.99.0.2") == VIP6_NONE and Vip6Plan(POOL4).prefix6 == 0
    with pytest.raises(ValueError, match="/112 or wider"):
        Vip6Plan(POOL4, ipaddress.IPv6Network("fd00:99::/120"))


def _udp6(src: str, dst: str, payload: bytes = b"six") -> bytes:
    udp = struct.pack("!HHHH", 5000, 5001, 8 + len(payload), 0) + payload
    header = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64)
    return header + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + udp


def _net(pool6: ipaddress.IPv6Network = POOL6) -> Net:
    net = Net(pool6=str(pool6), admission={f"dev1.{ZONE}": "mn"})
    net.add_node("mn", ("198.51.100.40", 7401))
    net.add_node("cn", ("198.51.100.30", 7401))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    return net


def test_registration_names_and_directions_carry_the_ipv6_vip_and_a_tunnel_carries_ipv6():
    net = _net()
    mn, cn = net.nodes["mn"], net.nodes["cn"]
    plan = Vip6Plan(POOL4, POOL6)
    for node in (mn, cn):
        assert node.registered.vip6 == plan.of(node.registered.vip)
        assert node.registered.prefix6 == 112
    mn.add_name(f"dev1.{ZONE}", net.now)
    mn.request_direction(f"cn.{ZONE}", net.now)
    net.run(2.0)
    (named,) = [e for e in net.events["mn"] if isinstance(e, NameRegistered)]
    assert named.vip6 == plan.of(named.vip)
    resolved = [e for e in net.events["mn"] if isinstance(e, DirectionResolved)][-1]
    assert (resolved.status, resolved.vip6) == (Status.OK, cn.registered.vip6)
    (at_mn,), (at_cn,) = list(mn.tunnels), list(cn.tunnels)
    assert (at_mn.peer_vip6, at_mn.self_vip6) == (cn.registered.vip6, mn.registered.vip6)
    packet = _udp6(mn.registered.vip6, cn.registered.vip6)
    ((tunnel, routed),) = classify_packets([packet], mn.tunnels, StageStats("classify"))
    assert tunnel is at_mn and routed == packet
    datagram = at_mn.seal(packet, net.now)
    assert open_data(cn.tunnels, datagram, at_cn.endpoint, net.now)[1] == packet
    back = _udp6(cn.registered.vip6, mn.registered.vip6, b"back")
    assert open_data(mn.tunnels, at_cn.seal(back, net.now), at_mn.endpoint, net.now)[1] == back
    spoofed = _udp6("fd00:99::77", mn.registered.vip6)
    with pytest.raises(InnerDrop):
        open_data(mn.tunnels, at_cn.seal(spoofed, net.now), at_mn.endpoint, net.now)


def test_the_zone_and_the_resolver_answer_aaaa():
    query = parse_query(DNSRecord.question(f"cn.{ZONE}", "AAAA").pack())
    reply = DNSRecord.parse(zone_answer(query, "10.99.0.3", True, vip6="fd00:99::3"))
    assert [(QTYPE[r.rtype], str(r.rdata)) for r in reply.rr] == [("AAAA", "fd00:99::3")]
    reply = DNSRecord.parse(zone_answer(query, "10.99.0.3", True))  # no IPv6 pool
    assert reply.rr == [] and reply.header.rcode == 0
    any_query = parse_query(DNSRecord.question(f"cn.{ZONE}", "ANY").pack())
    reply = DNSRecord.parse(answer_for_status(any_query, Status.OK, "10.99.0.3", vip6="fd00:99::3"))
    assert [QTYPE[r.rtype] for r in reply.rr] == ["A"]  # ANY: one record (RFC 8482)


def _dc_toml(tmp_path, extra: str) -> object:
    key = tmp_path / "dc.key"
    from ntma.proto.crypto import StaticKey, write_key_file

    write_key_file(key, StaticKey.generate())
    path = tmp_path / "dc.toml"
    path.write_text(
        f'[dc]\nlisten = "198.51.100.10:7400"\nprivate_key_file = "{key}"\nzone = "{ZONE}"\n'
        f'vip_pool = "10.99.0.0/16"\n{extra}'
    )
    return path


def test_the_dc_config_takes_an_ipv6_pool_and_refuses_one_too_small(tmp_path):
    assert load_dc_config(_dc_toml(tmp_path, 'vip6_pool = "fd00:99::/112"\n')).vip6_pool == POOL6
    with pytest.raises(ConfigError, match="dc.vip6_pool"):
        load_dc_config(_dc_toml(tmp_path, 'vip6_pool = "fd00:99::/120"\n'))
    with pytest.raises(ConfigError, match="dc.vip6_pool"):
        load_dc_config(_dc_toml(tmp_path, 'vip6_pool = "10.0.0.0/8"\n'))


# --- a device's own IPv6 address (SLAAC behind an adapter; NAME_ADD vip6) -----------------

POOL6_64 = ipaddress.IPv6Network("fd00:99::/64")
SLAAC = "fd00:99::ff:fe00:a01"  # the modified EUI-64 of 02:00:00:00:0a:01


def test_a_chosen_address_must_be_in_the_link_prefix_outside_the_derived_range_and_unique():
    plan = Vip6Plan(POOL4, POOL6_64)
    assert str(plan.link) == "fd00:99::/64"
    assert plan.refusal("10.99.0.5", SLAAC) == ""
    assert "outside the link prefix" in plan.refusal("10.99.0.5", "fd00:98::ff:fe00:a01")
    assert "derived" in plan.refusal("10.99.0.5", "fd00:99::7")  # another name's derived VIP
    assert "derived" in plan.refusal("10.99.0.5", "fd00:99::ffff")  # the /16's whole range
    assert "not an IPv6 address" in plan.refusal("10.99.0.5", "10.0.0.1")
    assert plan.choose("10.99.0.5", SLAAC) and plan.of("10.99.0.5") == SLAAC
    assert not plan.choose("10.99.0.5", SLAAC)  # unchanged
    assert "another name" in plan.refusal("10.99.0.6", SLAAC)
    assert plan.of("10.99.0.6") == "fd00:99::6"
    wide = Vip6Plan(POOL4, ipaddress.IPv6Network("fd00:99::/48"))
    assert str(wide.link) == "fd00:99::/64" and wide.refusal("10.99.0.5", SLAAC) == ""
    assert Vip6Plan(POOL4, POOL6).link is None  # a /112: no SLAAC on it
    assert "no /64" in Vip6Plan(POOL4, POOL6).refusal("10.99.0.5", SLAAC)


def test_the_store_keeps_a_chosen_address_across_dc_restarts(tmp_path):
    from ntma.dc.store import NodeStore

    store = NodeStore(tmp_path / "dc.db", POOL4, POOL6_64)
    assert store.choose_vip6("10.99.0.5", SLAAC) == ""
    assert "another name" in store.choose_vip6("10.99.0.6", SLAAC)
    store.close()
    again = NodeStore(tmp_path / "dc.db", POOL4, POOL6_64)
    assert again.vip6.of("10.99.0.5") == SLAAC and again.vip6.of("10.99.0.6") == "fd00:99::6"
    again.close()
    narrowed = NodeStore(tmp_path / "dc.db", POOL4, POOL6)  # now a /112: derived again
    assert narrowed.vip6.of("10.99.0.5") == "fd00:99::5"
    narrowed.close()


def test_name_add_with_the_devices_own_address_makes_it_the_names_ipv6_vip():
    from ntma.dc.events import Vip6Chosen

    net = _net(POOL6_64)
    mn, cn, dev1 = net.nodes["mn"], net.nodes["cn"], f"dev1.{ZONE}"
    mn.add_name(dev1, net.now)
    net.run(1.0)
    mn.add_name(dev1, net.now, vip6=SLAAC)  # its device configured itself by SLAAC
    mn.add_name(f"mn.{ZONE}", net.now, vip6="fd00:99::ff:fe00:a02")  # the default device
    net.run(1.0)
    named = {e.fqdn: e.vip6 for e in net.events["mn"] if isinstance(e, NameRegistered)}
    assert named == {dev1: SLAAC, f"mn.{ZONE}": "fd00:99::ff:fe00:a02"}
    chosen = [(e.name, e.vip6, e.refused) for e in net.dc_events if isinstance(e, Vip6Chosen)]
    assert chosen == [(dev1, SLAAC, ""), (f"mn.{ZONE}", "fd00:99::ff:fe00:a02", "")]
    cn.request_direction(dev1, net.now)
    net.run(2.0)
    resolved = [e for e in net.events["cn"] if isinstance(e, DirectionResolved)][-1]
    assert (resolved.status, resolved.vip6) == (Status.OK, SLAAC)
    (at_mn,) = list(mn.tunnels)
    assert at_mn.self_vip6 == SLAAC  # the adapter's side finds the device's packets by it
    mn.add_name(dev1, net.now, vip6="fd00:99::9")  # in the derived range: refused
    net.run(1.0)
    assert [e.refused for e in net.dc_events if isinstance(e, Vip6Chosen)][-1].startswith(
        "inside the range"
    )
    assert [e.vip6 for e in net.events["mn"] if isinstance(e, NameRegistered)][-1] == SLAAC
    net.dc = net.make_dc()  # the DC restarts; the node registers and re-adds with its address
    net.run(20.0)
    assert net.dc.store.vip6.of(net.dc.online_record(dev1).vip) == SLAAC
