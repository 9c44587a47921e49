"""The adapter's pure GN-link code: frame classification, ARP answers, IPv4/UDP/ICMP
building, MSS clamping and the tunnel-side MTU guard."""

from __future__ import annotations

import struct

import pytest
import structlog
from structlog.testing import capture_logs

from ntma.observe.log import RateLimitedDebug
from ntma.observe.spans import StageStats
from ntma.proto.buffer import CodecError
from ntma.proto.devices import DeviceRule, Devices
from ntma.proto.dhcp_codec import RELEASE, build_dhcp
from ntma.proto.ether import (
    ETH_P_ARP,
    ETH_P_IP,
    ICMP_FRAG_NEEDED,
    build_icmp_error,
    build_ipv4,
    build_udp,
    checksum,
    clamp_mss,
    eth_header,
    ip_packed,
    parse_arp,
    parse_udp,
)
from ntma.proto.gnlink import GnLink, Kind, answer_arp, classify_frame
from ntma.stages import gn_services
from ntma.stages.ethernet import route_to_tunnels

ADAPTER_MAC = bytes.fromhex("02aa00000001")
GN_MAC = bytes.fromhex("02bb00000002")
OTHER_MAC = bytes.fromhex("02cc00000003")
GN_VIP, ROUTER, PEER = "10.99.0.3", "10.99.0.1", "10.99.0.2"


def registered_link(gn_known: bool = True) -> GnLink:
    """Registered, and (gn_known) the GN has shown itself as the default device."""
    link = GnLink(ADAPTER_MAC)
    link.set_vip(GN_VIP, 16)
    if gn_known:
        link.devices.admit(GN_MAC)
    return link


def arp_request(sender_mac, sender_ip, target_ip, op=1) -> bytes:
    body = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        ETH_P_IP,
        6,
        4,
        op,
        sender_mac,
        ip_packed(sender_ip),
        bytes(6),
        ip_packed(target_ip),
    )
    return eth_header(b"\xff" * 6, sender_mac, ETH_P_ARP) + body


def ip_frame(src_mac, src, dst, proto=17, sport=40000, dport=80, payload=b"x") -> bytes:
    if proto == 17:
        packet = build_udp(ip_packed(src), ip_packed(dst), sport, dport, payload)
    else:
        packet = build_ipv4(ip_packed(src), ip_packed(dst), proto, payload)
    return eth_header(ADAPTER_MAC, src_mac, ETH_P_IP) + packet


def test_router_address_is_first_pool_host():
    link = registered_link()
    assert link.router_ip == ip_packed(ROUTER) and link.in_pool(ip_packed(PEER))
    assert not link.in_pool(ip_packed("198.51.100.20"))


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (arp_request(GN_MAC, GN_VIP, PEER), (Kind.ARP, "")),
        (ip_frame(GN_MAC, "0.0.0.0", "255.255.255.255", sport=68, dport=67), (Kind.DHCP, "")),
        (ip_frame(OTHER_MAC, "0.0.0.0", "255.255.255.255", sport=68, dport=67), (Kind.DHCP, "")),
        (ip_frame(GN_MAC, GN_VIP, ROUTER, dport=53), (Kind.DNS, "")),
        (ip_frame(GN_MAC, GN_VIP, PEER), (Kind.TUNNEL, "")),
        (ip_frame(GN_MAC, GN_VIP, "198.51.100.20"), (Kind.PASSTHROUGH, "")),
        (ip_frame(GN_MAC, GN_VIP, ROUTER, proto=6), (Kind.PASSTHROUGH, "")),  # TCP DNS, ping
        (ip_frame(GN_MAC, "10.99.0.77", PEER), (Kind.DROP, "foreign_ip")),
        (ip_frame(OTHER_MAC, GN_VIP, PEER), (Kind.DROP, "foreign_mac")),
        (eth_header(ADAPTER_MAC, GN_MAC, 0x86DD) + bytes(40), (Kind.DROP, "ipv6_off")),
        (eth_header(ADAPTER_MAC, GN_MAC, 0x88CC) + bytes(40), (Kind.DROP, "other_ethertype")),
        (b"\x00" * 13, (Kind.DROP, "malformed")),
        (eth_header(ADAPTER_MAC, GN_MAC, ETH_P_IP) + b"\x45" + bytes(8), (Kind.DROP, "malformed")),
        (eth_header(ADAPTER_MAC, GN_MAC, ETH_P_IP) + b"\x46" + bytes(19), (Kind.DROP, "malformed")),
        (eth_header(ADAPTER_MAC, GN_MAC, 0x8100) + bytes(40), (Kind.DROP, "other_ethertype")),
    ],
)
def test_classify_frame(frame, expected):
    assert classify_frame(frame, registered_link()) == expected


def test_before_registration_only_dhcp_and_arp_pass():
    link = GnLink(ADAPTER_MAC)
    assert classify_frame(ip_frame(GN_MAC, GN_VIP, PEER), link) == (Kind.DROP, "not_registered")
    assert (
        classify_frame(ip_frame(GN_MAC, "0.0.0.0", "255.255.255.255", sport=68, dport=67), link)[0]
        is Kind.DHCP
    )


def test_static_gn_is_learnt_from_its_first_frame():
    link = registered_link(gn_known=False)
    assert classify_frame(ip_frame(OTHER_MAC, "10.99.0.77", PEER), link) == (
        Kind.DROP,
        "foreign_mac",
    )  # not the adapter's VIP: not the default device
    assert classify_frame(ip_frame(GN_MAC, GN_VIP, PEER), link)[0] is Kind.TUNNEL
    assert link.devices.by_mac[GN_MAC].source == "default"
    assert classify_frame(ip_frame(OTHER_MAC, GN_VIP, PEER), link) == (Kind.DROP, "foreign_mac")


@pytest.mark.parametrize("target", [ROUTER, PEER, "10.99.200.7"])
def test_arp_answered_for_router_and_peers(target):
    reply = answer_arp(arp_request(GN_MAC, GN_VIP, target), registered_link())
    op, sha, spa, tha, tpa = parse_arp(reply)
    assert (op, sha, spa, tha, tpa) == (
        2,
        ADAPTER_MAC,
        ip_packed(target),
        GN_MAC,
        ip_packed(GN_VIP),
    )
    assert reply[:6] == GN_MAC and len(reply) == 60


@pytest.mark.parametrize(
    ("sender_ip", "target"),
    [
        (GN_VIP, GN_VIP),  # gratuitous
        ("0.0.0.0", GN_VIP),  # DHCP probe for the offered address
        ("0.0.0.0", PEER),  # probe for someone else
        (GN_VIP, "198.51.100.20"),  # outside the pool: not ours to answer
    ],
)
def test_arp_not_answered(sender_ip, target):
    assert answer_arp(arp_request(GN_MAC, sender_ip, target), registered_link()) is None


def test_arp_learns_gn_from_gratuitous_and_ignores_replies():
    link = registered_link(gn_known=False)
    gratuitous = arp_request(GN_MAC, GN_VIP, GN_VIP)
    assert classify_frame(gratuitous, link) == (Kind.ARP, "")
    assert answer_arp(gratuitous, link) is None
    assert link.devices.by_mac[GN_MAC].vip == ip_packed(GN_VIP)
    assert answer_arp(arp_request(GN_MAC, GN_VIP, PEER, op=2), link) is None
    assert classify_frame(arp_request(OTHER_MAC, "10.99.0.77", PEER), link) == (
        Kind.DROP,
        "foreign_mac",
    )


def test_arp_with_spoofed_sender_or_truncated_is_codec_error():
    frame = bytearray(arp_request(GN_MAC, GN_VIP, PEER))
    frame[6:12] = OTHER_MAC
    with pytest.raises(CodecError):
        answer_arp(bytes(frame), registered_link())
    with pytest.raises(CodecError):
        answer_arp(arp_request(GN_MAC, GN_VIP, PEER)[:30], registered_link())


def test_udp_build_and_parse_with_valid_checksums():
    packet = build_udp(ip_packed(ROUTER), ip_packed(GN_VIP), 53, 40000, b"answer")
    assert checksum(packet[:20]) == 0
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(packet) - 20)
    assert checksum(pseudo + packet[20:]) == 0
    assert parse_udp(packet) == (53, 40000, b"answer")
    with pytest.raises(CodecError):
        parse_udp(packet[:25])


def tcp_syn(mss: int, src=GN_VIP, dst=PEER) -> bytes:
    options = struct.pack("!BBH", 2, 4, mss) + b"\x01\x01\x04\x02"  # MSS, NOP NOP SACK-OK
    header = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, (5 + 2) << 4, 0x02, 64240, 0, 0)
    segment = header + options
    pseudo = ip_packed(src) + ip_packed(dst) + struct.pack("!BBH", 0, 6, len(segment))
    csum = checksum(pseudo + segment)
    segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
    return build_ipv4(ip_packed(src), ip_packed(dst), 6, segment)


def tcp_checksum_ok(packet: bytes) -> bool:
    segment = packet[20:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(segment))
    return checksum(pseudo + segment) == 0


def test_mss_clamped_with_correct_checksum():
    clamped = clamp_mss(tcp_syn(1460), 1360)
    assert struct.unpack_from("!H", clamped, 20 + 22)[0] == 1360
    assert tcp_checksum_ok(clamped)


def test_mss_left_alone_when_small_or_not_syn():
    small = tcp_syn(1200)
    assert clamp_mss(small, 1360) == small
    not_syn = bytearray(tcp_syn(1460))
    not_syn[20 + 13] = 0x10
    assert clamp_mss(bytes(not_syn), 1360) == bytes(not_syn)


def test_route_to_tunnels_icmp_for_no_tunnel_and_df_too_big():
    link = registered_link()

    class FakeTunnel:
        pass

    from ntma.proto.tunnel import TunnelTable

    table = TunnelTable()
    tunnel = FakeTunnel()
    table.by_pair[ip_packed(GN_VIP) + ip_packed(PEER)] = tunnel
    stats = StageStats("classify")
    big_df = build_udp(ip_packed(GN_VIP), ip_packed(PEER), 1, 2, bytes(1450))
    big_no_df = bytearray(big_df)
    big_no_df[6] = 0
    no_tunnel = build_udp(ip_packed(GN_VIP), ip_packed("10.99.0.50"), 1, 2, b"x")
    routed, local, errors = route_to_tunnels(
        [big_df, bytes(big_no_df), no_tunnel, tcp_syn(1460)], table, link, 1400, stats
    )
    assert local == []
    assert [p for _, p in routed][0] == bytes(big_no_df)  # without DF it still goes
    assert struct.unpack_from("!H", routed[1][1], 42)[0] == 1360
    assert len(errors) == 2
    frag = errors[0]
    assert frag[9] == 1 and frag[20] == 3 and frag[21] == ICMP_FRAG_NEEDED
    assert struct.unpack_from("!H", frag, 26)[0] == 1400
    assert frag[12:16] == ip_packed(ROUTER) and frag[16:20] == ip_packed(GN_VIP)
    assert checksum(frag[20:]) == 0
    assert errors[1][21] == 1  # host unreachable
    assert stats.drops == {"too_big_df": 1, "no_tunnel": 1}


def test_icmp_error_quotes_header_and_eight_bytes():
    original = build_udp(ip_packed(GN_VIP), ip_packed(PEER), 1, 2, bytes(100))
    error = build_icmp_error(ip_packed(ROUTER), original, 1)
    assert error[28:] == original[:28]


def test_the_dhcp_stage_counts_and_logs_a_spoofed_chaddr():
    """A frame from one device whose DHCP message speaks for another gets no answer, is
    counted and logged (rate-limited) by the DHCP stage's per-batch functions."""
    intruder = bytes.fromhex("02bb000000ee")
    devices = Devices("gn.ntm.example", (DeviceRule(intruder, "dev2.ntm.example"),))
    link = GnLink(ADAPTER_MAC, devices)
    gn_services.serve_gn_vip(link, "10.99.0.23", 16, lease_time=600, mtu=1400)
    devices.named("dev2.ntm.example", "10.99.0.24")
    payload = build_dhcp(message_type=RELEASE, xid=7, chaddr=GN_MAC, ciaddr=ip_packed("10.99.0.23"))
    udp = build_udp(ip_packed("10.99.0.23"), ip_packed("10.99.0.1"), 68, 67, payload)
    frame = eth_header(b"\xff" * 6, intruder, ETH_P_IP) + udp
    stats = StageStats("dhcp")
    replies, events = gn_services.answer_dhcp([frame, frame], link, stats, 0.0)
    assert replies == []
    with capture_logs() as logs:
        spoof_log = RateLimitedDebug(structlog.get_logger(), level="warning")
        gn_services._log_dhcp_events(events, None, stats, spoof_log, 0.0)
    assert stats.drops["chaddr not the frame's source"] == 2
    assert devices.by_mac[intruder].drops["dhcp_spoofed"] == 2
    assert [e["log_level"] for e in logs] == ["warning"]  # once, not per frame
    assert logs[0]["chaddr"] == "02:bb:00:00:00:02" and logs[0]["src_mac"] == "02:bb:00:00:00:ee"
