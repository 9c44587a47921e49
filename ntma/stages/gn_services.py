"""The adapter's services for the GN: DHCP (the GN's VIP) and DNS (NTM names through
signalling, other names upstream), each a thin stage around sans-IO code."""

from __future__ import annotations

import time

import structlog
import trio

from ..observe.log import RateLimitedDebug
from ..observe.spans import StageStats
from ..proto.buffer import CodecError
from ..proto.dhcp import (
    Declined,
    DhcpConfig,
    DhcpServer,
    Event,
    Ignored,
    Informed,
    Leased,
    Released,
    Spoofed,
)
from ..proto.ether import (
    BROADCAST_MAC,
    ETH_HEADER,
    ETH_P_IP,
    build_udp,
    eth_header,
    ip_packed,
    ip_text,
    mac_text,
    parse_udp,
)
from ..proto.gnlink import GnLink
from .channels import Batch, Frames
from .dns import CONCURRENT_QUERIES, DnsResolver


class DhcpSlot:
    """Holds the DHCP server once the VIP (and so the router address) is known."""

    server: DhcpServer | None = None


def serve_gn_vip(
    link: GnLink, slot: DhcpSlot, vip: str, prefix_len: int, *, lease_time: int, mtu: int
) -> bool:
    """The DC gave the GN its VIP: the link answers for the pool and DHCP hands the VIP
    out (router and DNS = the pool's first address). False if the GN had it already."""
    if link.gn_ip is not None and ip_text(link.gn_ip) == vip:
        return False
    link.set_vip(vip, prefix_len)
    config = DhcpConfig(
        server_ip=ip_text(link.router_ip), prefix_len=prefix_len, lease_time=lease_time, mtu=mtu
    )
    server = DhcpServer(config)
    server.set_address(vip)
    slot.server = server
    return True


async def run_dhcp_responder(
    inbox: trio.abc.ReceiveChannel[Frames],
    inject: trio.abc.SendChannel[Batch],
    slot: DhcpSlot,
    link: GnLink,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    log = structlog.get_logger().bind(stage="dhcp")
    spoof_log = RateLimitedDebug(log, level="warning")
    async with inbox, inject:
        task_status.started()
        async for frames in inbox:
            server = slot.server
            if server is None:
                stats.drop("not_registered", len(frames))
                continue
            started = time.perf_counter_ns()
            now = trio.current_time()
            replies, events = answer_dhcp(frames, server, link, stats, now)
            _log_dhcp_events(events, log, stats, spoof_log, now)
            stats.record(len(replies), sum(map(len, replies)), started)
            if replies:
                await inject.send(Frames(replies, frames.arrived))


def answer_dhcp(
    frames: list[bytes], server: DhcpServer, link: GnLink, stats: StageStats, now: float
) -> tuple[list[bytes], list[Event]]:
    """The DHCP responder's work on one batch: (reply frames, the server's events to
    log); a lease also tells the link the GN's MAC."""
    replies = []
    for frame in frames:
        reply = _answer_one(frame, server, link, stats, now)
        if reply is not None:
            replies.append(reply)
    events = server.events()
    _learn_from_leases(events, link)
    return replies, events


def _answer_one(
    frame: bytes, server: DhcpServer, link: GnLink, stats: StageStats, now: float
) -> bytes | None:
    try:
        _, _, payload = parse_udp(frame[ETH_HEADER:])
        reply = server.handle(payload, now, src_mac=frame[6:12])
    except CodecError:
        stats.drop("malformed")
        return None
    if reply is None or link.router_ip is None:
        return None
    dst_mac = reply.dst_mac
    packet = build_udp(link.router_ip, ip_packed(reply.dst_ip), 67, 68, reply.payload)
    if dst_mac == BROADCAST_MAC or reply.dst_ip == "255.255.255.255":
        dst_mac = BROADCAST_MAC
    return eth_header(dst_mac, link.adapter_mac, ETH_P_IP) + packet


def _learn_from_leases(events: list[Event], link: GnLink) -> None:
    """A lease names the GN's MAC: inject frames packets for the VIP to it."""
    for event in events:
        if isinstance(event, Leased):
            link.learn_gn_mac(event.mac, leased=True)


def _log_dhcp_events(
    events: list[Event], log, stats: StageStats, spoof_log: RateLimitedDebug, now: float
) -> None:
    for event in events:
        if isinstance(event, Leased):
            log.info(
                "dhcp_lease",
                mac=mac_text(event.mac),
                ip=event.ip,
                lease_s=event.lease_time,
                renewal=event.renewal,
            )
        elif isinstance(event, Released | Declined):
            log.info(f"dhcp_{type(event).__name__.lower()}", mac=mac_text(event.mac), ip=event.ip)
        elif isinstance(event, Informed):
            log.info("dhcp_inform", mac=mac_text(event.mac), ip=event.ip)
        elif isinstance(event, Spoofed):
            stats.drop("chaddr not the frame's source")
            spoof_log(
                now,
                "dhcp_spoofed",
                chaddr=mac_text(event.chaddr),
                src_mac=mac_text(event.src_mac),
            )
        elif isinstance(event, Ignored):
            stats.drop(f"ignored: {event.reason}")


async def run_dns_frames(
    inbox: trio.abc.ReceiveChannel[Batch],
    inject: trio.abc.SendChannel[Batch],
    resolver: DnsResolver,
    link: GnLink,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """UDP DNS queries from the GN to the router address, each answered in its own task."""
    limiter = trio.CapacityLimiter(CONCURRENT_QUERIES)
    async with inbox, inject, trio.open_nursery() as nursery:
        task_status.started()
        async for packets in inbox:
            for packet in packets:
                try:
                    sport, _, payload = parse_udp(packet)
                except CodecError:
                    stats.drop("malformed")
                    continue
                if limiter.available_tokens == 0:
                    stats.drop("too_many_queries")
                    continue
                nursery.start_soon(
                    _answer_dns,
                    packets.arrived,
                    payload,
                    packet[12:16],
                    sport,
                    resolver,
                    inject,
                    link,
                    limiter,
                    stats,
                )


async def _answer_dns(
    arrived: int,
    query: bytes,
    client_ip: bytes,
    client_port: int,
    resolver: DnsResolver,
    inject: trio.abc.SendChannel[Batch],
    link: GnLink,
    limiter,
    stats,
) -> None:
    async with limiter:
        started = time.perf_counter_ns()
        reply = await resolver.answer(query)
        if reply is None or link.router_ip is None:
            return
        packet = build_udp(link.router_ip, client_ip, 53, client_port, reply)
        stats.record(1, len(packet), started)
        await inject.send(Batch([packet], arrived))
