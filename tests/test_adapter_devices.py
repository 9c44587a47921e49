"""Several devices behind one adapter, in one process (issue 12): the adapter's whole
pipeline with a fake GN link shared by the devices (the test is each of them), the real DC
and a peer node cn on a FakeNetwork. Each device gets its own VIP by DHCP, reaches cn by
name through a tunnel of its own, reaches the other device on the link without a tunnel,
and cannot send as the other; a device's inbound rule holds peers to what it names.
The netns tests prove the same with real clients (tests/test_e2e_devices.py)."""

from __future__ import annotations

import pytest
import trio
from dnslib import DNSRecord

from ntma.proto.devices import DeviceRule
from ntma.proto.dhcp_codec import parse_dhcp
from ntma.proto.ether import (
    ETH_HEADER,
    build_udp,
    ip_packed,
    ip_text,
    parse_udp,
)
from ntma.proto.fields_v2 import Status
from ntma.testing.traffic import (
    GN_MAC,
    dhcp_frame,
    dhcp_request_frame,
    gn_frame,
    tcp_syn,
)
from ntma.testing.world import FakeAdapter, start_adapter_world

GN2_MAC = bytes.fromhex("02bb00000022")
STRANGER_MAC = bytes.fromhex("02bb000000ee")
GN, GN2, CN = "gn.ntm.example", "gn2.ntm.example", "cn.ntm.example"


@pytest.fixture
async def world(nursery):
    devices = (DeviceRule(GN2_MAC, GN2, ("tcp/80",)),)
    return await start_adapter_world(nursery, keepalive_s=5, devices=devices)


def udp(src: str, dst: str, payload: bytes, sport: int = 40000, dport: int = 9000) -> bytes:
    return build_udp(ip_packed(src), ip_packed(dst), sport, dport, payload)


async def frames_to(adapter: FakeAdapter, mac: bytes, count: int) -> list[bytes]:
    """The next `count` frames the adapter sends to `mac` (others are skipped)."""
    frames: list[bytes] = []
    with trio.fail_after(10):
        while len(frames) < count:
            frames += [f for f in await adapter.gn.written.receive() if f[:6] == mac]
    return frames


async def lease(adapter: FakeAdapter, mac: bytes, xid: int) -> str:
    """DISCOVER, OFFER, REQUEST, ACK as a client does; the leased address."""
    await adapter.gn.inject([dhcp_frame(1, xid, mac)])
    (offer,) = await frames_to(adapter, mac, 1)
    offered = parse_dhcp(parse_udp(offer[ETH_HEADER:])[2])
    assert offered.message_type == 2 and offered.chaddr == mac
    router = ip_text(adapter.link.router_ip)
    await adapter.gn.inject([dhcp_request_frame(xid, offered.yiaddr, router, mac)])
    (ack,) = await frames_to(adapter, mac, 1)
    acked = parse_dhcp(parse_udp(ack[ETH_HEADER:])[2])
    assert (acked.message_type, acked.yiaddr) == (5, offered.yiaddr)
    return acked.yiaddr


async def resolve(adapter: FakeAdapter, mac: bytes, vip: str, name: str) -> str:
    """A device's DNS query for name to the router; the address answered."""
    router = ip_text(adapter.link.router_ip)
    query = DNSRecord.question(name).pack()
    await adapter.gn.inject([gn_frame(udp(vip, router, query, 5353, 53), mac)])
    (answer,) = await frames_to(adapter, mac, 1)
    return str(DNSRecord.parse(parse_udp(answer[ETH_HEADER:])[2]).rr[0].rdata)


async def both_leased(adapter: FakeAdapter) -> tuple[str, str]:
    return await lease(adapter, GN_MAC, 0x11), await lease(adapter, GN2_MAC, 0x22)


async def test_each_device_gets_its_own_vip_and_a_stranger_gets_none(world, autojump_clock):
    _, adapter, _ = world
    vip1, vip2 = await both_leased(adapter)
    assert vip1 == adapter.vip and vip2 != vip1  # the default device has the adapter's name
    assert adapter.link.devices.by_name[GN2].vip == ip_packed(vip2)
    await adapter.gn.inject([dhcp_frame(1, 0x33, STRANGER_MAC)])  # not in the table
    await trio.sleep(1)
    assert STRANGER_MAC not in adapter.link.devices.by_mac
    assert adapter.pipe.spans.stage("dhcp").drops["unknown_device"] == 1


async def test_each_device_reaches_cn_by_name_through_a_tunnel_of_its_own(world, autojump_clock):
    _, adapter, cn = world
    vip1, vip2 = await both_leased(adapter)
    assert await resolve(adapter, GN_MAC, vip1, CN) == cn.vip
    assert await resolve(adapter, GN2_MAC, vip2, CN) == cn.vip
    tunnels = {t.self_fqdn: t for t in adapter.pipe.table}
    assert set(tunnels) == {GN, GN2}
    assert {t.peer_fqdn for t in cn.pipe.table} == {GN, GN2}
    await adapter.gn.inject([gn_frame(udp(vip1, cn.vip, b"one"), GN_MAC)])
    await adapter.gn.inject([gn_frame(udp(vip2, cn.vip, b"two"), GN2_MAC)])
    got = []
    with trio.fail_after(5):
        while len(got) < 2:
            got += await cn.tun.written.receive()
    assert sorted(got) == sorted([udp(vip1, cn.vip, b"one"), udp(vip2, cn.vip, b"two")])
    back = udp(cn.vip, vip2, b"to two", 9000, 40000)  # a reply to gn2's own UDP flow
    await cn.tun.inject([back])
    (frame,) = await frames_to(adapter, GN2_MAC, 1)
    assert frame[ETH_HEADER:] == back  # framed for gn2's MAC, not gn's


async def test_devices_reach_each_other_by_name_without_a_tunnel(world, autojump_clock):
    _, adapter, _ = world
    vip1, vip2 = await both_leased(adapter)
    assert await resolve(adapter, GN_MAC, vip1, GN2) == vip2  # answered by the adapter
    syn = tcp_syn(vip1, vip2, 1460)  # to port 80: gn2's rule lets it in
    await adapter.gn.inject([gn_frame(syn, GN_MAC)])
    (frame,) = await frames_to(adapter, GN2_MAC, 1)
    assert frame[ETH_HEADER:] == syn  # forwarded as it is, no MSS clamp, no tunnel
    assert len(adapter.pipe.table) == 0
    devices = adapter.link.devices
    assert devices.by_mac[GN_MAC].packets_out >= 2 and devices.by_mac[GN2_MAC].packets_in == 1


async def test_a_device_cannot_send_as_another_and_the_other_keeps_working(
    world, autojump_clock
):
    _, adapter, cn = world
    vip1, vip2 = await both_leased(adapter)
    assert await resolve(adapter, GN_MAC, vip1, CN) == cn.vip
    spoofed = [gn_frame(udp(vip1, cn.vip, b"as gn"), GN2_MAC)] * 5  # gn2 with gn's VIP
    await adapter.gn.inject(spoofed)
    # gn2 asks for gn's address by DHCP: NAK, and gn's lease stays
    router = ip_text(adapter.link.router_ip)
    await adapter.gn.inject([dhcp_request_frame(0x44, vip1, router, GN2_MAC)])
    (nak,) = await frames_to(adapter, b"\xff" * 6, 1)
    assert parse_dhcp(parse_udp(nak[ETH_HEADER:])[2]).message_type == 6
    await adapter.gn.inject([gn_frame(udp(vip1, cn.vip, b"real gn"), GN_MAC)])
    with trio.fail_after(5):
        got = await cn.tun.written.receive()
    assert got == [udp(vip1, cn.vip, b"real gn")]
    devices = adapter.link.devices
    assert devices.by_mac[GN2_MAC].drops["foreign_ip"] == 5
    assert adapter.pipe.spans.stage("classify").drops["foreign_ip"] == 5
    assert devices.by_mac[GN_MAC].dhcp.bound


async def test_a_devices_inbound_rule_holds_peers_to_what_it_names(world, autojump_clock):
    _, adapter, cn = world
    _, vip2 = await both_leased(adapter)
    with trio.fail_after(10):
        result = await cn.pipe.broker.resolve(GN2)  # cn reaches gn2 by name: the responder
    assert (result.status, result.vip) == (Status.OK, vip2)
    await cn.tun.inject([udp(cn.vip, vip2, b"knock", 40000, 22)])  # UDP: not in the rule
    await cn.tun.inject([tcp_syn(cn.vip, vip2, 1460)])  # TCP SYN to port 80: in the rule
    (frame,) = await frames_to(adapter, GN2_MAC, 1)
    assert frame[ETH_HEADER:][9] == 6
    await trio.sleep(1)
    assert adapter.link.devices.by_mac[GN2_MAC].drops["inbound_rule"] == 1
    assert adapter.pipe.spans.stage("inject").drops["inbound_rule"] == 1
