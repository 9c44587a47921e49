"""The adapter's IPv6 on the GN link (proto/gnlink6.py, stages/neighbours.py; issue 13):
which pools give IPv6 to devices, classification by MAC and IPv6 VIP, a device's SLAAC
address learnt from the kernel's own DAD probe (a captured frame) or its first packet,
defended addresses, NS answered for the router and peers, RS answered by a rate-limited
multicast RA, replies no larger than the requests, and the tunnel side's Packet Too Big
and MSS clamp for IPv6."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import trio
from trio.testing import wait_all_tasks_blocked

from ntma.observe.spans import StageStats
from ntma.proto.devices import Devices
from ntma.proto.ether import ETH_P_IPV6, eth_header
from ntma.proto.ether6 import ICMP6_PACKET_TOO_BIG, build_ipv6, build_udp6, pseudo_checksum
from ntma.proto.gnlink import GnLink, Kind, classify_frame
from ntma.proto.gnlink6 import RA_MIN_GAP_S, RaTimer, answer_nd
from ntma.proto.ndp import ALL_NODES, ND_NA, ND_NS, ND_RA, link_local, parse_nd, solicited_node
from ntma.proto.tunnel import TunnelTable
from ntma.stages.channels import Frames
from ntma.stages.ethernet import route_to_tunnels6
from ntma.stages.neighbours import answer_arps, run_arp_responder

VECTORS = Path(__file__).parent / "vectors" / "ndp"
ADAPTER_MAC = bytes.fromhex("02aa00000001")
GN_MAC = bytes.fromhex("02005e10000b")  # the kernel's MAC in tests/vectors/ndp
OTHER_MAC = bytes.fromhex("02cc00000003")
GN_NAME = "gn.ntm.example"
ROUTER6 = ipaddress.IPv6Address("fd00:99::1").packed
GN6 = ipaddress.IPv6Address("fd00:99::5eff:fe10:b").packed  # SLAAC (EUI-64) of GN_MAC
PEER6 = ipaddress.IPv6Address("fd00:99::3").packed  # a node's derived VIP


def ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def link6(learnt: bool = True, upstream: bool = False) -> GnLink:
    link = GnLink(ADAPTER_MAC, devices=Devices(GN_NAME))
    link.set_vip("10.99.0.2", 16)
    assert link.set_ipv6("fd00:99::2", 64, 1400, upstream) == ""
    device, _ = link.devices.admit(GN_MAC)
    if learnt:
        link.devices.learned_vip6(device, GN6)
    return link


def ns_frame(src_mac: bytes, src: bytes, target: bytes, lladdr: bool = True, dst=None) -> bytes:
    dst = dst or solicited_node(target)
    body = struct.pack("!BBHI16s", ND_NS, 0, 0, 0, target)
    if lladdr:
        body += struct.pack("!BB6s", 1, 1, src_mac)
    body = body[:2] + pseudo_checksum(src, dst, 58, body).to_bytes(2, "big") + body[4:]
    dst_mac = b"\x33\x33" + dst[12:] if dst[0] == 0xFF else ADAPTER_MAC
    return eth_header(dst_mac, src_mac, ETH_P_IPV6) + build_ipv6(src, dst, 58, body, 255)


def udp6_frame(src_mac: bytes, src: bytes, dst: bytes, dport: int = 8080, size: int = 4) -> bytes:
    packet = build_udp6(src, dst, 40000, dport, b"x" * size)
    return eth_header(ADAPTER_MAC, src_mac, ETH_P_IPV6) + packet


def vector(name: str) -> bytes:
    return bytes.fromhex("".join((VECTORS / f"{name}.hex").read_text().split()))


def test_ipv6_is_served_only_for_a_pool_with_a_64_and_a_tunnel_mtu_of_1280_or_more():
    link = GnLink(ADAPTER_MAC)
    assert "no IPv6 pool" in link.set_ipv6("::", 0, 1400, False)
    link.set_vip("10.99.0.2", 16)
    assert "SLAAC needs a /64" in link.set_ipv6("fd00:99::2", 112, 1400, False)
    assert "below IPv6's minimum" in link.set_ipv6("fd00:99::2", 64, 1200, False)
    assert link.set_ipv6("fd00:99::2", 48, 1400, False) == ""  # the pool's first /64
    assert link.v6 is not None and link.v6.router == ROUTER6
    assert link.v6.router_ll == link_local(ADAPTER_MAC)


def test_the_kernels_dad_probe_for_its_slaac_address_teaches_the_adapter_its_vip6():
    link = link6(learnt=False)
    dad = ns_frame(GN_MAC, bytes(16), GN6, lladdr=False)
    assert classify_frame(dad, link)[0] is Kind.ND
    outcome = answer_nd(dad, link)
    assert outcome.learnt is link.devices.by_mac[GN_MAC] and outcome.replies == []
    assert link.devices.by_vip[GN6].vip6 == GN6
    captured = vector("linux_ns_dad")  # the kernel's probe for its link-local address
    assert answer_nd(captured, link).reason == "dad_elsewhere"  # not ours to judge


def test_dad_for_an_address_the_adapter_answers_for_is_defended_with_a_small_na():
    link = link6(learnt=False)
    for taken in (ROUTER6, PEER6, link_local(ADAPTER_MAC)):
        dad = ns_frame(GN_MAC, bytes(16), taken, lladdr=False)
        (defence,) = answer_nd(dad, link).replies
        msg = parse_nd(defence[14:])
        assert (msg.type, msg.target, msg.dst) == (ND_NA, taken, ALL_NODES)
        assert len(defence) <= len(dad)  # no larger than the probe (no link-layer option)
    assert link.devices.by_mac[GN_MAC].vip6 is None


def test_ns_for_the_router_and_a_peer_is_answered_and_nothing_else():
    link = link6()
    for target in (ROUTER6, PEER6, link_local(ADAPTER_MAC)):
        ns = ns_frame(GN_MAC, GN6, target)
        (na,) = answer_nd(ns, link).replies
        msg = parse_nd(na[14:])
        assert (msg.target, msg.dst, msg.lladdr) == (target, GN6, ADAPTER_MAC)
        assert na[:6] == GN_MAC and len(na) <= len(ns)
        assert bool(msg.flags & 0x80) == (target != PEER6)  # R: the router's own addresses
    unicast = ns_frame(GN_MAC, link_local(GN_MAC), ROUTER6, lladdr=False, dst=ROUTER6)
    (na,) = answer_nd(unicast, link).replies  # the kernel's NUD probe
    assert parse_nd(na[14:]).lladdr is None and len(na) <= len(unicast)
    assert answer_nd(ns_frame(GN_MAC, GN6, GN6), link).reason == "not_answered"  # itself
    outside = ns_frame(GN_MAC, GN6, ip6("2001:db8::1"))
    assert answer_nd(outside, link).reason == "not_answered"
    spoofed = ns_frame(GN_MAC, ip6("fd00:99::ff:fe00:1"), ROUTER6)
    assert answer_nd(spoofed, link).reason == "foreign_ip"
    stranger = ns_frame(OTHER_MAC, ip6("fd00:99::ff:fe00:1"), ROUTER6)
    assert answer_nd(stranger, link).reason == "foreign_mac"
    no_lladdr = ns_frame(GN_MAC, GN6, ROUTER6, lladdr=False)
    assert answer_nd(no_lladdr, link).reason == "no_lladdr"


def test_a_second_address_and_another_devices_address_are_refused():
    link = link6()
    second = ip6("fd00:99::1234:5678:9abc:def0")  # a temporary address
    assert answer_nd(ns_frame(GN_MAC, bytes(16), second, lladdr=False), link).reason == (
        "second_address"
    )
    assert classify_frame(udp6_frame(GN_MAC, second, PEER6), link) == (Kind.DROP, "foreign_ip")
    other, _ = link.devices.admit(OTHER_MAC, host_name=None)
    assert other is None  # no table and the default device is taken: refused
    assert link.devices.by_mac[GN_MAC].drops["second_address"] == 1


def test_a_first_packet_from_an_unlearnt_slaac_address_is_learnt_and_then_passes():
    link = link6(learnt=False)  # the adapter restarted after the GN's DAD
    frame = udp6_frame(GN_MAC, GN6, PEER6)
    assert classify_frame(frame, link) == (Kind.ND, "")
    assert answer_nd(frame, link).learnt is link.devices.by_mac[GN_MAC]
    assert classify_frame(frame, link) == (Kind.TUNNEL6, "")
    stranger = udp6_frame(OTHER_MAC, ip6("fd00:99::ff:fe00:7"), PEER6)
    assert classify_frame(stranger, link) == (Kind.ND, "")  # it may be a device to admit
    assert answer_nd(stranger, link).reason == "foreign_mac"  # not one: the default is taken
    outside = udp6_frame(OTHER_MAC, ip6("2001:db8::7"), PEER6)
    assert classify_frame(outside, link) == (Kind.DROP, "foreign_mac")


def test_after_a_restart_the_default_device_shows_itself_by_its_first_ipv6_packet():
    link = GnLink(ADAPTER_MAC, devices=Devices(GN_NAME))
    link.set_vip("10.99.0.2", 16)
    link.set_ipv6("fd00:99::2", 64, 1400, False)
    frame = udp6_frame(GN_MAC, GN6, PEER6)
    assert classify_frame(frame, link) == (Kind.ND, "")
    learnt = answer_nd(frame, link).learnt
    assert learnt is not None and (learnt.fqdn, learnt.vip6) == (GN_NAME, GN6)
    assert classify_frame(frame, link) == (Kind.TUNNEL6, "")


def test_classify_ipv6():
    link = link6()
    dns = udp6_frame(GN_MAC, GN6, ROUTER6, dport=53)
    assert classify_frame(dns, link) == (Kind.DNS, "")
    assert classify_frame(udp6_frame(GN_MAC, GN6, ROUTER6, dport=80), link)[0] is Kind.PASSTHROUGH
    out = udp6_frame(GN_MAC, GN6, ip6("2001:db8::20"))
    assert classify_frame(out, link) == (Kind.DROP, "no_ipv6_upstream")
    assert classify_frame(out, link6(upstream=True))[0] is Kind.PASSTHROUGH
    assert classify_frame(udp6_frame(GN_MAC, GN6, ip6("ff02::fb")), link)[1] == "multicast"
    assert classify_frame(dns[:40], link) == (Kind.DROP, "malformed")
    assert classify_frame(dns[:-1], link) == (Kind.DROP, "malformed")  # shorter than it says
    assert classify_frame(dns, GnLink(ADAPTER_MAC)) == (Kind.DROP, "ipv6_off")


def test_an_rs_brings_the_next_ra_forward_but_not_closer_than_the_minimum_gap():
    timer = RaTimer()
    timer.start(0.0)
    assert timer.due(0.0)
    timer.sent(0.0)
    timer.solicited(0.5)
    assert timer.next_at == RA_MIN_GAP_S  # an RS flood gets one RA per gap
    for _ in range(3):
        timer.sent(timer.next_at)
    assert timer.next_at - timer.last_at == 60.0  # after the initial ones


def test_the_ra_and_its_options():
    link = link6()
    assert link.v6 is not None
    ra = parse_nd(link.v6.multicast_advertisement()[14:])
    assert (ra.type, ra.src, ra.dst) == (ND_RA, link_local(ADAPTER_MAC), ALL_NODES)
    assert ra.lladdr == ADAPTER_MAC
    body = link.v6.multicast_advertisement()[54:]
    assert struct.unpack("!H", body[6:8])[0] == 0  # router lifetime: no IPv6 upstream
    upstream = link6(upstream=True).v6
    assert upstream is not None
    assert struct.unpack("!H", upstream.multicast_advertisement()[60:62])[0] == 1800


def test_route_to_tunnels6_packet_too_big_and_no_tunnel():
    link, table, stats = link6(), TunnelTable(), StageStats("classify")
    big = build_udp6(GN6, PEER6, 40000, 8080, b"x" * 1400)
    routed, local, errors = route_to_tunnels6([big], table, link, 1400, stats)
    assert routed == [] and local == []
    (unreach,) = errors
    assert unreach[40] == 1 and unreach[24:40] == GN6  # no tunnel: address unreachable
    assert stats.drops["no_tunnel"] == 1


async def test_the_responder_sends_ras_on_its_own_and_answers_an_rs(autojump_clock):
    link = link6()
    stats = StageStats("arp")
    to_arp_send, to_arp = trio.open_memory_channel(8)
    to_inject, inject = trio.open_memory_channel(8)
    asked: list[tuple[str, str]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(
            run_arp_responder, to_arp, to_inject, link, stats, lambda f, v: asked.append((f, v))
        )
        first = await inject.receive()  # the link has IPv6: an RA at once
        assert parse_nd(first[0][14:]).type == ND_RA
        await to_arp_send.send(Frames([vector("linux_rs")]))
        solicited = await inject.receive()
        assert parse_nd(solicited[0][14:]).type == ND_RA
        assert trio.current_time() >= RA_MIN_GAP_S
        other, _ = link.devices.admit(OTHER_MAC)
        new = ip6("fd00:99::ff:fe00:1")
        link.devices.by_mac[GN_MAC].vip6 = None  # as if not learnt yet
        del link.devices.by_vip[GN6]
        await to_arp_send.send(Frames([ns_frame(GN_MAC, bytes(16), new, lladdr=False)]))
        await wait_all_tasks_blocked()
        assert asked == [(GN_NAME, str(ipaddress.IPv6Address(new)))]
        nursery.cancel_scope.cancel()
    assert other is None


def test_answer_arps_counts_malformed_nd():
    link, stats = link6(), StageStats("arp")
    bad = ns_frame(GN_MAC, GN6, ROUTER6)[:-3]
    assert answer_arps([bad], link, stats) == [] and stats.drops["malformed"] == 1


def test_ptb_for_a_packet_over_the_tunnel_mtu_when_a_tunnel_exists():
    link, stats = link6(), StageStats("classify")
    table = TunnelTable()
    tunnel = _tunnel_for(table, GN6, PEER6)
    big = build_udp6(GN6, PEER6, 40000, 8080, b"x" * 1400)
    routed, _, errors = route_to_tunnels6([big], table, link, 1400, stats)
    assert routed == [] and stats.drops["too_big"] == 1
    (ptb,) = errors
    assert ptb[40] == ICMP6_PACKET_TOO_BIG and struct.unpack("!I", ptb[44:48])[0] == 1400
    small = build_udp6(GN6, PEER6, 40000, 8080, b"x" * 100)
    ((through, packet),), _, _ = route_to_tunnels6([small], table, link, 1400, stats)
    assert through is tunnel and packet == small


def _tunnel_for(table: TunnelTable, self6: bytes, peer6: bytes):
    from ntma.proto.tunnel import Tunnel

    tunnel = Tunnel(
        b"d" * 8, 1, "cn.ntm.example", "10.99.0.3", "10.99.0.2", ("198.51.100.30", 7401), 0.0,
        peer_vip6=str(ipaddress.IPv6Address(peer6)), self_vip6=str(ipaddress.IPv6Address(self6)),
    )
    table.by_pair[self6 + peer6] = tunnel
    return tunnel


def test_a_devices_inbound_rule_holds_ipv6_from_peers_as_it_does_ipv4():
    from ntma.proto.inbound import InboundFilter, parse_rule

    rule = InboundFilter((parse_rule("tcp/80"),))

    def tcp6(dport: int, flags: int) -> bytes:
        segment = struct.pack("!HHIIBBHHH", 50000, dport, 0, 0, 5 << 4, flags, 65535, 0, 0)
        return build_ipv6(PEER6, GN6, 6, segment)

    def icmp6(kind: int) -> bytes:
        return build_ipv6(PEER6, GN6, 58, struct.pack("!BBHI", kind, 0, 0, 0))

    assert rule.allows(tcp6(80, 0x02), 0.0)  # a SYN to the listed port
    assert not rule.allows(tcp6(22, 0x02), 0.0)  # a SYN to another
    assert rule.allows(tcp6(22, 0x12), 0.0) and rule.allows(tcp6(22, 0x10), 0.0)  # replies
    assert not rule.allows(icmp6(128), 0.0) and rule.allows(icmp6(129), 0.0)  # echo / reply
    reply = build_udp6(PEER6, GN6, 5353, 40000, b"r")
    assert not rule.allows(reply, 0.0)
    rule.note_outbound(build_udp6(GN6, PEER6, 40000, 5353, b"q"), 0.0)  # the device asked
    assert rule.allows(reply, 1.0)


def _dhcp6_frame(payload: bytes) -> bytes:
    src, dst = link_local(GN_MAC), ip6("ff02::1:2")
    multicast = b"\x33\x33\x00\x01\x00\x02"
    return eth_header(multicast, GN_MAC, ETH_P_IPV6) + build_udp6(src, dst, 546, 547, payload)


def test_dhclient_6s_rapid_solicit_gets_the_eui64_address_which_becomes_the_devices_vip6():
    from ntma.proto.dhcp6 import Leased6
    from ntma.proto.ether6 import parse_udp6
    from ntma.stages.gn_dhcp6 import answer_dhcp6

    link, stats = link6(learnt=False), StageStats("dhcp")
    solicit = bytes.fromhex(
        "".join((Path(__file__).parent / "vectors/dhcp6/dhclient_solicit_rapid_commit.hex")
                .read_text().split())
    )
    frame = _dhcp6_frame(solicit)
    assert classify_frame(frame, link) == (Kind.DHCP, "")
    (reply,), learnt, events = answer_dhcp6([frame], link, stats, 0.0)
    assert reply[:6] == GN_MAC and reply[22:38] == link_local(ADAPTER_MAC)
    assert reply[38:54] == link_local(GN_MAC)
    _, _, payload = parse_udp6(reply[14:])
    assert payload[0] == 7 and GN6 in payload  # REPLY, with the EUI-64 address (SLAAC's)
    assert learnt == [link.devices.by_mac[GN_MAC]] and link.devices.by_vip[GN6].vip6 == GN6
    assert [type(e) for _, e in events] == [Leased6]
    stranger = _dhcp6_frame(solicit).replace(GN_MAC, OTHER_MAC)
    assert answer_dhcp6([stranger], link, stats, 1.0)[0] == []  # not one of our devices
    assert stats.drops["foreign_mac"] == 1


def test_after_a_restart_an_ns_from_the_devices_global_address_teaches_it_and_is_answered():
    """The GN kept its address and its neighbour entry for a peer expired: its NS comes
    from the global address the adapter has not learnt yet (found by the bench)."""
    link = GnLink(ADAPTER_MAC, devices=Devices(GN_NAME))
    link.set_vip("10.99.0.2", 16)
    link.set_ipv6("fd00:99::2", 64, 1400, False)
    outcome = answer_nd(ns_frame(GN_MAC, GN6, PEER6), link)
    assert outcome.learnt is not None and outcome.learnt.vip6 == GN6
    (na,) = outcome.replies
    assert parse_nd(na[14:]).target == PEER6
    taken = answer_nd(ns_frame(OTHER_MAC, GN6, PEER6), link)  # another MAC claiming it
    assert taken.learnt is None and taken.replies == [] and taken.reason == "foreign_mac"


def test_a_devices_ipv6_udp_flow_is_remembered_at_the_time_it_was_sent():
    from ntma.proto.inbound import UDP_FLOW_IDLE_S, InboundFilter, parse_rule

    link = link6()
    device = link.devices.by_mac[GN_MAC]
    device.inbound = InboundFilter((parse_rule("tcp/80"),))
    later = UDP_FLOW_IDLE_S * 3
    assert classify_frame(udp6_frame(GN_MAC, GN6, PEER6, dport=5353), link, later)[0] is (
        Kind.TUNNEL6
    )
    reply = build_udp6(PEER6, GN6, 5353, 40000, b"r")
    assert device.inbound.allows(reply, later + 1.0)  # not expired as if sent at time 0
