"""The adapter's whole pipeline in one process: a fake GN link (the test is the GN), a
fake passthrough TUN (the test is the kernel), the real DC and a peer node, cn, on a
FakeNetwork. Every adapter stage without namespaces; runs on the autojump clock."""

from __future__ import annotations

import struct

import pytest
import trio
from dnslib import DNSRecord
from trio.testing import wait_all_tasks_blocked

from ntma.proto.dhcp_codec import OPT_MTU, OPT_ROUTER, parse_dhcp
from ntma.proto.ether import (
    ETH_HEADER,
    ETH_P_IP,
    ICMP_DEST_UNREACH,
    ICMP_FRAG_NEEDED,
    ICMP_HOST_UNREACH,
    PROTO_ICMP,
    build_udp,
    checksum,
    eth_header,
    ip_packed,
    ip_text,
    parse_arp,
    parse_udp,
)
from ntma.proto.fields_v2 import Status
from ntma.testing.traffic import (
    ADAPTER_MAC,
    GN_MAC,
    arp_request_frame,
    dhcp_frame,
    dhcp_request_frame,
    gn_frame,
    tcp_syn,
)
from ntma.testing.world import FakeAdapter, start_adapter_world

WEB = "198.51.100.20"
CN_NAME = "cn.ntm.example"


@pytest.fixture
async def world(nursery):
    return await start_adapter_world(nursery, keepalive_s=5)


def udp(src: str, dst: str, payload: bytes, sport: int = 40000, dport: int = 9000) -> bytes:
    return build_udp(ip_packed(src), ip_packed(dst), sport, dport, payload)


async def frames_to_gn(adapter: FakeAdapter, count: int) -> list[bytes]:
    """The next `count` frames the adapter sends to the GN."""
    frames: list[bytes] = []
    with trio.fail_after(5):
        while len(frames) < count:
            frames.extend(await adapter.gn.written.receive())
    return frames


async def packets_at(fake, count: int = 1) -> list[bytes]:
    packets: list[bytes] = []
    with trio.fail_after(5):
        while len(packets) < count:
            packets.extend(await fake.written.receive())
    return packets


def framed_for_gn(frame: bytes) -> bytes:
    """The IPv4 packet in a frame from the adapter to the GN (checks the header)."""
    assert frame[:ETH_HEADER] == eth_header(GN_MAC, ADAPTER_MAC, ETH_P_IP)
    return frame[ETH_HEADER:]


async def build_tunnel(adapter: FakeAdapter, cn) -> None:
    with trio.fail_after(10):
        result = await adapter.pipe.broker.resolve(CN_NAME)
    assert result.status == Status.OK and result.vip == cn.vip


async def test_arp_answered_for_router_and_peer_vips_only(world, autojump_clock):
    _, adapter, cn = world
    router = ip_text(adapter.link.router_ip)
    await adapter.gn.inject(
        [
            arp_request_frame(router, adapter.vip),
            arp_request_frame(cn.vip, adapter.vip),
            arp_request_frame(adapter.vip, adapter.vip),  # gratuitous: learnt from, not answered
            arp_request_frame(WEB, adapter.vip),  # outside the pool: not ours to answer
        ]
    )
    replies = await frames_to_gn(adapter, 2)
    for reply, target in zip(replies, (router, cn.vip), strict=True):
        assert reply[:6] == GN_MAC and reply[6:12] == ADAPTER_MAC
        op, sha, spa, tha, tpa = parse_arp(reply)
        assert (op, sha, spa, tha, tpa) == (
            2,
            ADAPTER_MAC,
            ip_packed(target),
            GN_MAC,
            ip_packed(adapter.vip),
        )
    assert adapter.link.devices.by_mac[GN_MAC].source == "default"  # learnt from its ARP
    await wait_all_tasks_blocked()  # inject records the path once its write returns
    assert adapter.pipe.spans.stage("arp").drops["not_answered"] == 2
    assert adapter.pipe.spans.path("arp_processing").count == 2  # frame in -> reply sent


async def test_dhcp_discover_and_request_lease_the_vip(world, autojump_clock):
    _, adapter, _ = world
    router = ip_text(adapter.link.router_ip)
    await adapter.gn.inject([dhcp_frame(1, xid=0x1234)])
    (offer_frame,) = await frames_to_gn(adapter, 1)
    assert offer_frame[6:12] == ADAPTER_MAC
    packet = offer_frame[ETH_HEADER:]
    assert packet[12:16] == ip_packed(router)
    sport, dport, payload = parse_udp(packet)
    offer = parse_dhcp(payload)
    assert (sport, dport, offer.message_type, offer.xid) == (67, 68, 2, 0x1234)
    assert offer.yiaddr == adapter.vip and offer.chaddr == GN_MAC
    assert offer.ip_option(OPT_ROUTER) == router and offer.server_id == router
    assert struct.unpack("!H", offer.options[OPT_MTU])[0] == 1400
    device = adapter.link.devices.by_mac[GN_MAC]  # the default device: the adapter's name
    assert device.fqdn == adapter.sm.fqdn and not device.dhcp.bound  # an offer is no lease
    await adapter.gn.inject([dhcp_request_frame(0x1234, adapter.vip, router)])
    (ack_frame,) = await frames_to_gn(adapter, 1)
    ack = parse_dhcp(parse_udp(ack_frame[ETH_HEADER:])[2])
    assert (ack.message_type, ack.yiaddr) == (5, adapter.vip)
    assert device.dhcp.bound


async def test_dns_for_an_ntm_name_builds_the_tunnel_and_traffic_crosses_it(world, autojump_clock):
    _, adapter, cn = world
    router = ip_text(adapter.link.router_ip)
    query = DNSRecord.question(CN_NAME).pack()
    await adapter.gn.inject([gn_frame(udp(adapter.vip, router, query, 5353, 53))])
    (answer_frame,) = await frames_to_gn(adapter, 1)
    answer = framed_for_gn(answer_frame)
    assert answer[12:16] == ip_packed(router) and answer[16:20] == ip_packed(adapter.vip)
    sport, dport, payload = parse_udp(answer)
    assert (sport, dport) == (53, 5353)
    assert str(DNSRecord.parse(payload).rr[0].rdata) == cn.vip
    assert len(adapter.pipe.table) == 1
    # The GN's packets reach cn through the tunnel, and cn's reply is framed for the GN.
    await adapter.gn.inject([gn_frame(udp(adapter.vip, cn.vip, b"ping %d" % i)) for i in range(3)])
    got = await packets_at(cn.tun, 3)
    assert got == [udp(adapter.vip, cn.vip, b"ping %d" % i) for i in range(3)]
    pong = udp(cn.vip, adapter.vip, b"pong", 9000, 40000)
    await cn.tun.inject([pong])
    (back,) = await frames_to_gn(adapter, 1)
    assert framed_for_gn(back) == pong
    await wait_all_tasks_blocked()  # inject records the path once its write returns
    spans = adapter.pipe.spans
    assert spans.path("packet_relay").count == 3 and spans.path("tunnel_send").count == 3
    assert spans.path("response_relay").count == 1
    carried = {s["stage"] for s in spans.summaries() if s["packets"]}
    assert {"capture", "classify", "dns", "encapsulate", "udp_send", "udp_receive"} <= carried
    assert {"decapsulate", "inject"} <= carried


async def test_ordinary_traffic_goes_through_the_kernel_and_back(world, autojump_clock):
    _, adapter, _ = world
    router = ip_text(adapter.link.router_ip)
    out = [udp(adapter.vip, WEB, b"GET /"), udp(adapter.vip, router, b"not dns", 40000, 80)]
    await adapter.gn.inject([gn_frame(p) for p in out])
    assert await packets_at(adapter.passthrough, 2) == out
    reply = udp(WEB, adapter.vip, b"200 OK", 9000, 40000)
    await adapter.passthrough.inject([b"\x50" + bytes(39), reply])  # neither IPv4 nor IPv6
    (back,) = await frames_to_gn(adapter, 1)
    assert framed_for_gn(back) == reply
    spans = adapter.pipe.spans
    assert (
        spans.stage("passthrough_out").packets == 2 and spans.stage("passthrough_in").packets == 1
    )
    assert spans.stage("passthrough_in").drops["not_ip"] == 1


async def test_a_vip_without_tunnel_is_host_unreachable(world, autojump_clock):
    _, adapter, _ = world
    lost = udp(adapter.vip, "10.99.250.250", b"anyone?")
    await adapter.gn.inject([gn_frame(lost)])
    (frame,) = await frames_to_gn(adapter, 1)
    icmp = framed_for_gn(frame)
    assert icmp[9] == PROTO_ICMP and icmp[12:16] == adapter.link.router_ip
    assert (icmp[20], icmp[21]) == (ICMP_DEST_UNREACH, ICMP_HOST_UNREACH)
    assert icmp[28:] == lost[:28] and checksum(icmp[20:]) == 0
    assert adapter.pipe.spans.stage("classify").drops["no_tunnel"] == 1


async def test_df_over_the_tunnel_mtu_gets_frag_needed(world, autojump_clock):
    _, adapter, cn = world
    await build_tunnel(adapter, cn)
    big_df = udp(adapter.vip, cn.vip, bytes(1420 - 28))  # build_ipv4 sets DF
    big_no_df = bytearray(big_df)
    big_no_df[6] = 0
    big_no_df[10:12] = b"\0\0"
    big_no_df[10:12] = struct.pack("!H", checksum(bytes(big_no_df[:20])))
    await adapter.gn.inject([gn_frame(big_df), gn_frame(bytes(big_no_df))])
    (frame,) = await frames_to_gn(adapter, 1)
    icmp = framed_for_gn(frame)
    assert (icmp[20], icmp[21]) == (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED)
    assert struct.unpack_from("!H", icmp, 26)[0] == 1400  # next-hop MTU: the tunnel's
    assert await packets_at(cn.tun) == [bytes(big_no_df)]  # without DF it still goes
    assert adapter.pipe.spans.stage("classify").drops["too_big_df"] == 1


async def test_tcp_syn_mss_is_clamped_to_the_tunnel(world, autojump_clock):
    _, adapter, cn = world
    await build_tunnel(adapter, cn)
    await adapter.gn.inject([gn_frame(tcp_syn(adapter.vip, cn.vip, 1460))])
    (syn,) = await packets_at(cn.tun)
    assert struct.unpack_from("!H", syn, 20 + 22)[0] == 1400 - 40
    pseudo = syn[12:20] + struct.pack("!BBH", 0, 6, len(syn) - 20)
    assert checksum(pseudo + syn[20:]) == 0
