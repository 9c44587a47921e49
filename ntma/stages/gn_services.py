"""The adapter's services for the devices on its link: DHCP (each device's VIP, devices.py)
and DNS (NTM names through signalling, as the asking device; other names upstream), each a
thin stage around sans-IO code."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable

import structlog
import trio

from ..observe.log import RateLimitedDebug
from ..observe.spans import StageStats
from ..proto.buffer import CodecError
from ..proto.devices import Device, client_fqdn
from ..proto.dhcp import (
    Declined,
    DhcpConfig,
    Event,
    Ignored,
    Informed,
    Leased,
    Released,
    Spoofed,
)
from ..proto.dhcp_codec import OPT_CLIENT_FQDN, OPT_HOSTNAME, parse_dhcp
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
from ..proto.ether6 import build_udp6, ip6_text, parse_udp6
from ..proto.gnlink import GnLink
from ..proto.node import NameFailed, NameRegistered
from .channels import Batch, Frames
from .dns import CONCURRENT_QUERIES, DnsResolver
from .gn_dhcp6 import answer_dhcp6, log_dhcp6_events

_IPV6 = (0x86DD).to_bytes(2, "big")


def serve_gn_vip(link: GnLink, vip: str, prefix_len: int, *, lease_time: int, mtu: int) -> bool:
    """The DC registered the adapter: the link answers for the pool, and each device's DHCP
    server hands out its VIP (router and DNS = the pool's first address). False if the
    adapter had this VIP already (a re-registration)."""
    own = link.devices.vip_of_name(link.devices.own_name)
    if own is not None and ip_text(own) == vip and link.router_ip is not None:
        return False
    link.set_vip(vip, prefix_len)
    assert link.router_ip is not None
    config = DhcpConfig(
        server_ip=ip_text(link.router_ip), prefix_len=prefix_len, lease_time=lease_time, mtu=mtu
    )
    link.devices.set_dhcp(config)
    return True


async def on_device_name(link: GnLink, parts, event: NameRegistered | NameFailed) -> None:
    """A device's name got its VIP (NameRegistered: its held DHCP frames are answered now)
    or was refused (NameFailed: logged, its frames dropped). `parts`: pipeline.AdapterParts."""
    if isinstance(event, NameRegistered):
        device = link.devices.named(event.fqdn, event.vip)
        replay_held(link, parts, event.fqdn)
        if _vip6_refused(device, event.vip6):
            log = structlog.get_logger().bind(stage="arp")
            log.warning("device_ipv6_refused", device=event.fqdn, dc_vip6=event.vip6)
        return
    device = link.devices.refused(event.fqdn)
    if device is not None:
        log = structlog.get_logger().bind(stage="dhcp")
        log.warning("device_refused", device=event.fqdn, mac=mac_text(device.mac))


def _vip6_refused(device: Device | None, dc_vip6: str) -> bool:
    """The DC kept another IPv6 VIP for the name than the address its device configured."""
    if device is None or device.vip6 is None or dc_vip6 == "::":
        return False
    return ipaddress.IPv6Address(dc_vip6).packed != device.vip6


def replay_held(link: GnLink, parts, fqdn: str) -> None:
    """The DHCP frames a device sent while its name waited go to the DHCP responder."""
    device = link.devices.by_name.get(fqdn)
    if device is None or device.dhcp is None or parts.dhcp_replay is None:
        return
    held = link.devices.take_held(device)
    if held:
        with contextlib.suppress(trio.WouldBlock):  # full: the client retries
            parts.dhcp_replay.send_nowait(Frames(held))


async def run_dhcp_responder(
    inbox: trio.abc.ReceiveChannel[Frames],
    inject: trio.abc.SendChannel[Batch],
    link: GnLink,
    stats: StageStats,
    ask_name: Callable[..., object] = lambda fqdn, vip6="::": None,
    save_leases: Callable[[dict[bytes, str]], None] | None = None,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """DHCP for every device on the link (and DHCPv6: gn_dhcp6.py). A new device's name is
    asked of the DC (ask_name); its DHCP frames wait (devices.HELD_MAX) and come back
    through this inbox when its VIP does. Names learnt from host names are saved."""
    log = structlog.get_logger().bind(stage="dhcp")
    spoof_log = RateLimitedDebug(log, level="warning")
    async with inbox, inject:
        task_status.started()
        async for frames in inbox:
            started = time.perf_counter_ns()
            now = trio.current_time()
            v6 = [f for f in frames if f[12:14] == _IPV6]
            v4 = [f for f in frames if f[12:14] != _IPV6] if v6 else frames
            replies, events = answer_dhcp(v4, link, stats, now, ask_name)
            _log_dhcp_events(events, log, stats, spoof_log, now)
            if v6:
                replies6, learnt, events6 = answer_dhcp6(v6, link, stats, now)
                log_dhcp6_events(events6, log, stats)
                for device in learnt:
                    ask_name(device.fqdn, ip6_text(device.vip6))
                replies += replies6
            if link.devices.leases_changed and save_leases is not None:
                link.devices.leases_changed = False
                save_leases(dict(link.devices.leases))
            stats.record(len(replies), sum(map(len, replies)), started)
            if replies:
                await inject.send(Frames(replies, frames.arrived))


def answer_dhcp(
    frames: list[bytes],
    link: GnLink,
    stats: StageStats,
    now: float,
    ask_name: Callable[[str], object] = lambda fqdn: None,
) -> tuple[list[bytes], list[tuple[Device, Event]]]:
    """The DHCP responder's work on one batch: (reply frames, each device's server events
    to log)."""
    replies: list[bytes] = []
    events: list[tuple[Device, Event]] = []
    for frame in frames:
        device = _device_for(frame, link, stats, ask_name)
        if device is None:
            continue
        reply = _answer_one(frame, device, link, stats, now)
        if reply is not None:
            replies.append(reply)
        if device.dhcp is not None:
            events += [(device, event) for event in device.dhcp.events()]
    return replies, events


def _device_for(
    frame: bytes, link: GnLink, stats: StageStats, ask_name: Callable[[str], object]
) -> Device | None:
    """The device a DHCP frame is from, admitted (and its name asked) if new; None when it
    is refused or must wait for its VIP (its frame held)."""
    devices, src = link.devices, frame[6:12]
    device = devices.by_mac.get(src)
    if device is None:
        try:
            _, _, payload = parse_udp(frame[ETH_HEADER:])
            msg = parse_dhcp(payload)
        except CodecError:
            stats.drop("malformed")
            return None
        host = msg.options.get(OPT_HOSTNAME, b"").decode("ascii", "replace") or None
        device, why = devices.admit(src, host, client_fqdn(msg.options.get(OPT_CLIENT_FQDN, b"")))
        if device is None:
            stats.drop(why)
            return None
        if device.vip is None and device.fqdn != devices.own_name:
            ask_name(device.fqdn)
    if device.dhcp is None:
        if device.refused:
            stats.drop("name_refused")
        elif not devices.hold(device, frame):
            stats.drop("held_replaced")
        return None
    return device


def _answer_one(
    frame: bytes, device: Device, link: GnLink, stats: StageStats, now: float
) -> bytes | None:
    assert device.dhcp is not None
    try:
        _, _, payload = parse_udp(frame[ETH_HEADER:])
        reply = device.dhcp.handle(payload, now, src_mac=frame[6:12])
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


def _log_dhcp_events(
    events: list[tuple[Device, Event]],
    log,
    stats: StageStats,
    spoof_log: RateLimitedDebug,
    now: float,
) -> None:
    for device, event in events:
        if isinstance(event, Leased):
            log.info(
                "dhcp_lease",
                device=device.fqdn,
                mac=mac_text(event.mac),
                ip=event.ip,
                lease_s=event.lease_time,
                renewal=event.renewal,
            )
        elif isinstance(event, Released | Declined):
            name = f"dhcp_{type(event).__name__.lower()}"
            log.info(name, device=device.fqdn, mac=mac_text(event.mac), ip=event.ip)
        elif isinstance(event, Informed):
            log.info("dhcp_inform", device=device.fqdn, mac=mac_text(event.mac), ip=event.ip)
        elif isinstance(event, Spoofed):
            stats.drop("chaddr not the frame's source")
            device.drops["dhcp_spoofed"] += 1
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
    """UDP DNS queries from the GN to the router address (IPv4 or IPv6), each answered in
    its own task."""
    limiter = trio.CapacityLimiter(CONCURRENT_QUERIES)
    async with inbox, inject, trio.open_nursery() as nursery:
        task_status.started()
        async for packets in inbox:
            for packet in packets:
                six = packet[0] >> 4 == 6
                try:
                    sport, _, payload = parse_udp6(packet) if six else parse_udp(packet)
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
                    packet[8:24] if six else packet[12:16],
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
        reply = await resolver.answer(query, link.devices.name_of_vip(client_ip))
        if reply is None or link.router_ip is None:
            return
        if len(client_ip) == 16:
            if link.v6 is None:
                return
            packet = build_udp6(link.v6.router, client_ip, 53, client_port, reply)
        else:
            packet = build_udp(link.router_ip, client_ip, 53, client_port, reply)
        stats.record(1, len(packet), started)
        await inject.send(Batch([packet], arrived))
