"""The adapter's Ethernet front end: the GN link instead of a TUN device.

Inbound from the GN:
    capture -> classify_frames -> arp       -> inject   (ARP; IPv6 ND and RAs: neighbours.py)
                               -> dhcp      -> inject
                               -> dns       -> inject   (NTM names through signalling)
                               -> encapsulate -> udp_send    (to a VIP with a tunnel;
                                  no tunnel: ICMP unreachable; too big with DF: ICMP
                                  fragmentation needed, IPv6: Packet Too Big; TCP SYNs
                                  get their MSS clamped)
                               -> passthrough_out -> kernel (routing, conntrack, NAT)
                               -> inject    (IPv4 to another device on the link)
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
from dataclasses import dataclass

import trio

from ..io.packetio import BATCH_MAX, PacketIO
from ..observe.spans import PathStats, StageStats
from ..proto.ether import (
    ETH_HEADER,
    ICMP_FRAG_NEEDED,
    ICMP_HOST_UNREACH,
    PROTO_TCP,
    build_icmp_error,
    clamp_mss,
)
from ..proto.ether6 import (
    ICMP6_ADDR_UNREACH,
    ICMP6_DEST_UNREACH,
    ICMP6_PACKET_TOO_BIG,
    build_icmp6_error,
    clamp_mss6,
)
from ..proto.gnlink import GnLink, Kind, classify_frame
from ..proto.tunnel import Tunnel, TunnelTable
from .channels import Batch, Frames, send_or_drop
from .writer import write_batches


async def run_capture(
    raw: PacketIO,
    out: trio.abc.SendChannel[Batch],
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
) -> tuple[list[tuple[Tunnel, bytes]], list[bytes], list[bytes]]:
    """(packets for encapsulate, packets to another device on this link, ICMP errors for
    the sender). A packet rides the tunnel of its (source, destination) VIP pair."""
    routed: list[tuple[Tunnel, bytes]] = []
    local: list[bytes] = []
    errors: list[bytes] = []
    by_pair, max_mss, router = table.by_pair, mtu - 40, link.router_ip
    for packet in packets:
        tunnel = by_pair.get(packet[12:20])
        if tunnel is None:
            if packet[16:20] in link.devices.by_vip:  # a device on this link: no tunnel
                local.append(packet)
                continue
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
    return routed, local, errors


def route_to_tunnels6(
    packets: list[bytes], table: TunnelTable, link: GnLink, mtu: int, stats: StageStats
) -> tuple[list[tuple[Tunnel, bytes]], list[bytes], list[bytes]]:
    """route_to_tunnels for IPv6: the pair is bytes 8:40; a packet over the tunnel MTU
    gets Packet Too Big (IPv6 is never fragmented on the way), a SYN's MSS mtu - 60."""
    routed: list[tuple[Tunnel, bytes]] = []
    local: list[bytes] = []
    errors: list[bytes] = []
    by_pair, max_mss = table.by_pair, mtu - 60
    router = link.v6.router if link.v6 is not None else bytes(16)
    for packet in packets:
        tunnel = by_pair.get(packet[8:40])
        error = None
        if tunnel is None:
            if packet[24:40] in link.devices.by_vip:
                local.append(packet)
                continue
            stats.drop("no_tunnel")
            error = build_icmp6_error(router, packet, ICMP6_DEST_UNREACH, ICMP6_ADDR_UNREACH)
        elif len(packet) > mtu:
            stats.drop("too_big")
            error = build_icmp6_error(router, packet, ICMP6_PACKET_TOO_BIG, 0, mtu)
        else:
            if packet[6] == PROTO_TCP:
                packet = clamp_mss6(packet, max_mss)
            routed.append((tunnel, packet))
            continue
        if error is not None:
            errors.append(error)
    return routed, local, errors


@dataclass(slots=True)
class SortedFrames:
    """One batch from the GN link, sorted by where each frame goes next."""

    arp: list[bytes]  # frames, for the neighbour responder (ARP, and IPv6 ND)
    dhcp: list[bytes]  # frames, for the DHCP responder
    dns: list[bytes]  # IPv4 and IPv6 packets to the router's port 53
    routed: list[tuple[Tunnel, bytes]]  # packets for encapsulate (MSS clamped)
    local: list[bytes]  # packets to another device on the link (through inject)
    errors: list[bytes]  # ICMP(v6) errors back to the GN (no tunnel, too big)
    passthrough: list[bytes]  # packets for the kernel


def sort_frames(
    frames: list[bytes],
    link: GnLink,
    table: TunnelTable,
    mtu: int,
    stats: StageStats,
    now: float = 0.0,
) -> SortedFrames:
    """classify_frames' work on one batch (drops counted), without the sends."""
    arp, dhcp, dns, tunnel, tunnel6, passthrough = [], [], [], [], [], []
    # One dict lookup and call per frame: cheaper than setdefault(kind, []).append.
    append = {
        Kind.ARP: arp.append,
        Kind.ND: arp.append,
        Kind.TUNNEL6: tunnel6.append,
        Kind.DHCP: dhcp.append,
        Kind.DNS: dns.append,
        Kind.TUNNEL: tunnel.append,
        Kind.PASSTHROUGH: passthrough.append,
    }
    drop = Kind.DROP
    for frame in frames:
        kind, reason = classify_frame(frame, link, now)
        if kind is drop:
            stats.drop(reason)
        else:
            append[kind](frame)
    if tunnel:
        packets = [frame[ETH_HEADER:] for frame in tunnel]
        routed, local, errors = route_to_tunnels(packets, table, link, mtu, stats)
    else:
        routed, local, errors = [], [], []
    if tunnel6:
        packets = [frame[ETH_HEADER:] for frame in tunnel6]
        routed6, local6, errors6 = route_to_tunnels6(packets, table, link, mtu, stats)
        routed += routed6
        local += local6
        errors += errors6
    return SortedFrames(
        arp=arp,
        dhcp=dhcp,
        dns=[frame[ETH_HEADER:] for frame in dns] if dns else dns,
        routed=routed,
        local=local,
        errors=errors,
        passthrough=[frame[ETH_HEADER:] for frame in passthrough] if passthrough else passthrough,
    )


async def run_classify_frames(
    inbox: trio.abc.ReceiveChannel[Batch],
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
            frames = sort_frames(batch, link, table, mtu, stats, trio.current_time())
            await _send_sorted(frames, batch.arrived, routes, stats, arp_span, relay_span)
            stats.record(len(batch), sum(map(len, batch)), batch.arrived)


async def _send_sorted(
    frames: SortedFrames,
    arrived: int,
    routes: FrameRoutes,
    stats: StageStats,
    arp_span: PathStats | None,
    relay_span: PathStats | None,
) -> None:
    """Control traffic first and without waiting (drop newest), then the data."""
    if frames.arp:
        arp = Frames(frames.arp, arrived, arp_span)
        send_or_drop(routes.arp, arp, stats, "arp_queue_full")
    if frames.dhcp:
        send_or_drop(routes.dhcp, Frames(frames.dhcp, arrived), stats, "dhcp_queue_full")
    if frames.dns:
        dns = Batch(frames.dns, arrived)
        send_or_drop(routes.dns, dns, stats, "dns_queue_full", len(dns))
    if frames.errors:
        errors = Batch(frames.errors, arrived)
        send_or_drop(routes.inject, errors, stats, "inject_queue_full", len(errors))
    if frames.routed:
        if relay_span is not None:
            relay_span.record(time.perf_counter_ns() - arrived, len(frames.routed))
        await routes.tunnel.send(Batch(frames.routed, arrived))
    if frames.passthrough:
        await routes.passthrough.send(Batch(frames.passthrough, arrived))
    if frames.local:
        await routes.inject.send(Batch(frames.local, arrived))


async def run_passthrough_out(
    inbox: trio.abc.ReceiveChannel[Batch],
    tun: PacketIO,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Ordinary traffic from the GN into the kernel, which routes and NATs it."""
    async with inbox:
        task_status.started()
        await write_batches(inbox, tun.write_batch, stats, "rejected_by_kernel")


async def run_passthrough_in(
    tun: PacketIO,
    inject: trio.abc.SendChannel[Batch],
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
            ip = [p for p in packets if p and p[0] >> 4 in (4, 6)]
            if len(ip) < len(packets):
                stats.drop("not_ip", len(packets) - len(ip))
            stats.record(len(ip), sum(map(len, ip)), started)
            if ip:
                await inject.send(Batch(ip, started))
            else:
                await trio.lowlevel.checkpoint()


def frame_packets(
    packets: list[bytes], link: GnLink, stats: StageStats, now: float = 0.0
) -> list[bytes]:
    """Ethernet frames for packets to a device's VIP (IPv4 or IPv6), each to its MAC. A
    packet from an NTM peer (a pool source other than the router) meets the device's
    inbound rule; kernel replies (passthrough) do not.

    On the hot path a batch is mostly packets to one device without a rule: while packets
    go to the VIP of such a run (`fast`), each costs one compare and the framing; the
    device is looked up, and its counters added, once per run."""
    by_vip = link.devices.by_vip
    frames: list[bytes] = []
    append = frames.append
    fast, last_vip, device, header, rule, run_start = _NO_VIP, _NO_VIP, None, b"", None, 0
    for packet in packets:
        vip = packet[16:20]
        if vip == fast and packet[0] < 0x50:  # IPv4 to the run's device
            append(header + packet)
            continue
        six = packet[0] >> 4 == 6
        if six:
            vip = packet[24:40]
        if vip != last_vip:
            if device is not None:
                _count_in(device, frames, run_start)
            last_vip, device, run_start = vip, by_vip.get(vip), len(frames)
            if device is None:
                header, rule = b"", None
            else:
                header, rule = (device.header6 if six else device.header), device.inbound
            fast = vip if device is not None and rule is None and not six else _NO_VIP
            if fast is vip:
                append(header + packet)
                continue
        if device is None:
            stats.drop("not_for_gn")
            continue
        if rule is not None and not _inbound_ok(rule, packet, link, now):
            device.drops["inbound_rule"] += 1
            stats.drop("inbound_rule")
            continue
        append(header + packet)
    if device is not None:
        _count_in(device, frames, run_start)
    return frames


_NO_VIP = b"no VIP"  # equal to no packet's bytes 16:20 (six bytes)


def _count_in(device, frames: list[bytes], start: int) -> None:
    """A run of frames to one device: its inbound counters (IP bytes, not Ethernet)."""
    count = len(frames) - start
    if count:
        run = frames if start == 0 else frames[start:]  # most batches are one run
        device.packets_in += count
        device.bytes_in += sum(map(len, run)) - count * ETH_HEADER


def _inbound_ok(rule, packet: bytes, link: GnLink, now: float) -> bool:
    if packet[0] >> 4 == 6:
        src, v6 = packet[8:24], link.v6
        from_peer = v6 is not None and v6.in_prefix(src) and src != v6.router
    else:
        src = packet[12:16]
        from_peer = int.from_bytes(src, "big") & link.pool_mask == link.pool_net
        from_peer = from_peer and src != link.router_ip
    return not from_peer or rule.allows(packet, now)


async def run_inject(
    inbox: trio.abc.ReceiveChannel[Batch],
    raw: PacketIO,
    link: GnLink,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """The raw socket's only writer: frames as they are, packets framed for the GN."""

    def frames_of(batch: Batch) -> list[bytes]:
        return batch if batch.framed else frame_packets(batch, link, stats, trio.current_time())

    async with inbox:
        task_status.started()
        await write_batches(inbox, raw.write_batch, stats, "send_failed", frames_of)
