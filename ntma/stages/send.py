"""Outbound flow: TUN read -> classify -> encapsulate -> UDP send.

Each stage is one Trio task that receives a batch from one channel and sends a
batch to the next. Tunnel lookups happen once per packet in classify; encryption
uses the current keypair of the tunnel's KeyRing (AEAD objects built once per key),
to the tunnel's endpoint (the peer's, or the RS's when relayed).
"""

from __future__ import annotations

import time

import trio

from ..io.packetio import BATCH_MAX, DatagramIO, PacketIO
from ..observe.spans import PathStats, StageStats
from ..proto.buffer import Endpoint
from ..proto.tunnel import ExpiredKeys, Tunnel, TunnelTable
from .channels import Batch
from .writer import write_batches


async def run_tun_read(
    tun: PacketIO,
    out: trio.abc.SendChannel[Batch],
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Drain the TUN device while it has packets; one batch per channel item."""
    async with out:
        task_status.started()
        while True:
            batch = await tun.read_batch(BATCH_MAX)
            arrived = time.perf_counter_ns()
            await out.send(Batch(batch, arrived))
            stats.record(len(batch), sum(map(len, batch)), arrived, arrived)


def classify_packets(
    batch: list[bytes], table: TunnelTable, stats: StageStats
) -> list[tuple[Tunnel, bytes]]:
    """Keep packets whose (source, destination) VIP pair has a tunnel (IPv4: bytes 12:20,
    IPv6: 8:40); count the rest."""
    routed: list[tuple[Tunnel, bytes]] = []
    by_pair = table.by_pair
    for packet in batch:
        if len(packet) >= 20 and packet[0] >> 4 == 4:
            tunnel = by_pair.get(packet[12:20])
        elif len(packet) >= 40 and packet[0] >> 4 == 6:
            tunnel = by_pair.get(packet[8:40])
        else:
            stats.drop("malformed")
            continue
        if tunnel is None:
            stats.drop("no_tunnel")
            continue
        routed.append((tunnel, packet))
    return routed


async def run_classify(
    inbox: trio.abc.ReceiveChannel[Batch],
    out: trio.abc.SendChannel[Batch],
    table: TunnelTable,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    async with inbox, out:
        task_status.started()
        async for batch in inbox:
            started = time.perf_counter_ns()
            routed = Batch(classify_packets(batch, table, stats), batch.arrived)
            ended = time.perf_counter_ns()
            if routed:
                await out.send(routed)
            stats.record(len(routed), sum(len(p) for _, p in routed), started, ended)


def encapsulate_packets(
    batch: list[tuple[Tunnel, bytes]], stats: StageStats, now: float
) -> list[tuple[bytes, Endpoint]]:
    datagrams: list[tuple[bytes, Endpoint]] = []
    for tunnel, packet in batch:
        try:
            datagrams.append((tunnel.seal(packet, now), tunnel.endpoint))
        except ExpiredKeys:  # the tunnel is marked for a rekey (signalling starts it)
            stats.drop("expired_keys")
            tunnel.drops["expired_keys"] += 1
    return datagrams


async def run_encapsulate(
    inbox: trio.abc.ReceiveChannel[Batch],
    out: trio.abc.SendChannel[Batch],
    stats: StageStats,
    send_span: PathStats | None = None,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """send_span, if given, measures encapsulate start -> UDP send done (tunnel send)."""
    async with inbox, out:
        task_status.started()
        async for batch in inbox:
            started = time.perf_counter_ns()
            now = trio.current_time()
            datagrams = Batch(encapsulate_packets(batch, stats, now), started, send_span)
            ended = time.perf_counter_ns()
            await out.send(datagrams)
            stats.record(len(datagrams), sum(len(d) for d, _ in datagrams), started, ended)


async def run_udp_send(
    inbox: trio.abc.ReceiveChannel[Batch],
    udp: DatagramIO,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """The socket's only writer: data from encapsulate and signalling share this queue."""
    async with inbox:
        task_status.started()
        await write_batches(inbox, udp.send_batch, stats, "unreachable")
