"""The adapter's Ethernet front end: the GN link instead of a TUN device.

Inbound from the GN:
    capture -> classify_frames -> arp       -> inject
                               -> dhcp      -> inject
                               -> dns       -> inject   (NTM names through signalling)
                               -> encapsulate -> udp_send    (IPv4 to a VIP with a tunnel;
                                  no tunnel: ICMP unreachable; too big with DF: ICMP
                                  fragmentation needed; TCP SYNs get their MSS clamped)
                               -> passthrough_out -> kernel (routing, conntrack, NAT)
Back to the GN:
    decapsulate (core) -> inject
    passthrough_in (kernel replies) -> inject
inject is the raw socket's only writer: it frames IPv4 packets for the GN's MAC and
sends prebuilt frames (ARP, DHCP) as they are. Its channel carries one item type,
channels.Batch, whose `framed` says which the batch holds (Frames sets it). That is
the cheapest way on the hot path: one attribute read per batch and no extra task.
Two channels into inject would need a second task writing the raw socket (Trio has
no select), and framing at every producer would put the adapter's framing into the
core's decapsulate, which the node shares.

Overload: the tunnel and passthrough channels block (backpressure to capture); the
ARP, DHCP and DNS channels drop the newest batch when full, so a flood of control
traffic cannot stall data.
"""

from __future__ import annotations

import contextlib
import time

import trio

from ..io.packetio import BATCH_MAX, PacketIO
from ..observe.spans import PathStats, StageStats
from ..proto.buffer import CodecError
from ..proto.ether import (
    ETH_HEADER,
    ETH_P_IP,
    ICMP_FRAG_NEEDED,
    ICMP_HOST_UNREACH,
    PROTO_TCP,
    build_icmp_error,
    clamp_mss,
    eth_header,
)
from ..proto.gnlink import GnLink, Kind, answer_arp, classify_frame
from ..proto.tunnel import Tunnel, TunnelTable
from .channels import Batch, Frames, send_or_drop
from .writer import write_batches


async def run_capture(
    raw: PacketIO,
    out: trio.abc.SendChannel,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Frames from the GN link, drained in batches; each batch stamped on arrival."""
    async with out:
        task_status.started()
        while True:
            batch = await raw.read_batch(BATCH_MAX)
            arrived = time.perf_counter_ns()
            await out.send(Batch(batch, arrived))
            stats.record(len(batch), sum(map(len, batch)), arrived, arrived)


class FrameRoutes:
    """Where classify sends each kind of frame (one send channel per destination)."""

    def __init__(self, *, arp, dhcp, dns, tunnel, passthrough, inject) -> None:
        self.arp, self.dhcp, self.dns = arp, dhcp, dns
        self.tunnel, self.passthrough, self.inject = tunnel, passthrough, inject

    def channels(self) -> list[trio.abc.SendChannel]:
        return [self.arp, self.dhcp, self.dns, self.tunnel, self.passthrough, self.inject]


def route_to_tunnels(
    packets: list[bytes], table: TunnelTable, link: GnLink, mtu: int, stats: StageStats
) -> tuple[list[tuple[Tunnel, bytes]], list[bytes]]:
    """(packets for encapsulate, ICMP errors for the GN)."""
    routed: list[tuple[Tunnel, bytes]] = []
    errors: list[bytes] = []
    by_vip, max_mss, router = table.by_vip, mtu - 40, link.router_ip
    for packet in packets:
        tunnel = by_vip.get(packet[16:20])
        if tunnel is None:
            stats.drop("no_tunnel")
            errors.append(build_icmp_error(router, packet, ICMP_HOST_UNREACH))
            continue
        if len(packet) > mtu and packet[6] & 0x40:  # DF set: tell the sender the tunnel MTU
            stats.drop("too_big_df")
            errors.append(build_icmp_error(router, packet, ICMP_FRAG_NEEDED, mtu))
            continue
        if packet[9] == PROTO_TCP:  # only TCP SYNs are rewritten; skip the call otherwise
            packet = clamp_mss(packet, max_mss)
        routed.append((tunnel, packet))
    return routed, errors


async def run_classify_frames(
    inbox: trio.abc.ReceiveChannel,
    routes: FrameRoutes,
    link: GnLink,
    table: TunnelTable,
    mtu: int,
    stats: StageStats,
    arp_span: PathStats | None = None,
    relay_span: PathStats | None = None,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """arp_span, if given, rides on ARP batches to inject (frame in -> reply sent);
    relay_span, if given, measures frame in -> handed to encapsulate (packet relay)."""
    async with inbox, contextlib.AsyncExitStack() as outputs:
        for channel in routes.channels():
            await outputs.enter_async_context(channel)
        task_status.started()
        async for batch in inbox:
            await _classify_batch(batch, routes, link, table, mtu, stats, arp_span, relay_span)
            stats.record(len(batch), sum(map(len, batch)), batch.arrived)


async def _classify_batch(
    batch: Batch,
    routes: FrameRoutes,
    link: GnLink,
    table: TunnelTable,
    mtu: int,
    stats: StageStats,
    arp_span: PathStats | None,
    relay_span: PathStats | None,
) -> None:
    sorted_frames: dict[Kind, list[bytes]] = {}
    for frame in batch:
        kind, reason = classify_frame(frame, link)
        if kind is Kind.DROP:
            stats.drop(reason)
        else:
            sorted_frames.setdefault(kind, []).append(frame)
    if Kind.ARP in sorted_frames:
        arp = Frames(sorted_frames[Kind.ARP], batch.arrived, arp_span)
        send_or_drop(routes.arp, arp, stats, "arp_queue_full")
    if Kind.DHCP in sorted_frames:
        dhcp = Frames(sorted_frames[Kind.DHCP], batch.arrived)
        send_or_drop(routes.dhcp, dhcp, stats, "dhcp_queue_full")
    arrived = batch.arrived
    if Kind.DNS in sorted_frames:
        packets = Batch([frame[ETH_HEADER:] for frame in sorted_frames[Kind.DNS]], arrived)
        send_or_drop(routes.dns, packets, stats, "dns_queue_full", len(packets))
    if Kind.TUNNEL in sorted_frames:
        packets = [frame[ETH_HEADER:] for frame in sorted_frames[Kind.TUNNEL]]
        routed, errors = route_to_tunnels(packets, table, link, mtu, stats)
        if errors:
            errors = Batch(errors, arrived)
            send_or_drop(routes.inject, errors, stats, "inject_queue_full", len(errors))
        if routed:
            if relay_span is not None:
                relay_span.record(time.perf_counter_ns() - arrived, len(routed))
            await routes.tunnel.send(Batch(routed, arrived))
    if Kind.PASSTHROUGH in sorted_frames:
        packets = Batch([f[ETH_HEADER:] for f in sorted_frames[Kind.PASSTHROUGH]], arrived)
        await routes.passthrough.send(packets)


async def run_arp_responder(
    inbox: trio.abc.ReceiveChannel,
    inject: trio.abc.SendChannel,
    link: GnLink,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    async with inbox, inject:
        task_status.started()
        async for frames in inbox:
            started = time.perf_counter_ns()
            replies = Frames((), frames.arrived, frames.span)
            for frame in frames:
                try:
                    reply = answer_arp(frame, link)
                except CodecError:
                    stats.drop("malformed")
                    continue
                if reply is None:
                    stats.drop("not_answered")
                else:
                    replies.append(reply)
            ended = time.perf_counter_ns()
            if replies:
                await inject.send(replies)
            stats.record(len(replies), sum(map(len, replies)), started, ended)


async def run_passthrough_out(
    inbox: trio.abc.ReceiveChannel,
    tun: PacketIO,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Ordinary IPv4 from the GN into the kernel, which routes and NATs it."""
    async with inbox:
        task_status.started()
        await write_batches(inbox, tun.write_batch, stats, "rejected_by_kernel")


async def run_passthrough_in(
    tun: PacketIO,
    inject: trio.abc.SendChannel,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """The kernel's replies (and the TCP DNS listener's) back toward the GN."""
    async with inject:
        task_status.started()
        while True:
            packets = await tun.read_batch(BATCH_MAX)
            started = time.perf_counter_ns()
            ipv4 = [p for p in packets if p and p[0] >> 4 == 4]
            if len(ipv4) < len(packets):
                stats.drop("not_ipv4", len(packets) - len(ipv4))
            stats.record(len(ipv4), sum(map(len, ipv4)), started)
            if ipv4:
                await inject.send(Batch(ipv4, started))
            else:
                await trio.lowlevel.checkpoint()


def frame_packets(packets: list[bytes], link: GnLink, stats: StageStats) -> list[bytes]:
    """Ethernet frames to the GN for IPv4 packets addressed to its VIP."""
    gn_mac, gn_ip = link.gn_mac, link.gn_ip
    if gn_mac is None:
        stats.drop("gn_unknown", len(packets))
        return []
    header = eth_header(gn_mac, link.adapter_mac, ETH_P_IP)
    frames = []
    for packet in packets:
        if packet[16:20] != gn_ip:
            stats.drop("not_for_gn")
            continue
        frames.append(header + packet)
    return frames


async def run_inject(
    inbox: trio.abc.ReceiveChannel,
    raw: PacketIO,
    link: GnLink,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """The raw socket's only writer: frames as they are, packets framed for the GN."""

    def frames_of(batch: Batch) -> list[bytes]:
        return batch if batch.framed else frame_packets(batch, link, stats)

    async with inbox:
        task_status.started()
        await write_batches(inbox, raw.write_batch, stats, "send_failed", frames_of)
