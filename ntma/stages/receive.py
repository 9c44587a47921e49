"""Inbound flow: UDP receive -> (DATA, byte 1 = 0x04) decapsulate -> TUN write
                             -> (everything else) signalling task.

The receiver finds a session by the receiver index in the DATA header (it chose the
index), never by source address; the tunnel's endpoint follows the newest authenticated
packet, so a peer that changes address keeps its tunnel (proto/tunnel.py open_data).
"""

from __future__ import annotations

import time

import trio

from ..io.packetio import BATCH_MAX, DatagramIO, PacketIO
from ..observe.spans import PathStats, StageStats
from ..proto.buffer import CodecError, Endpoint
from ..proto.handshake import T_DATA
from ..proto.tunnel import PunchDrop, TunnelTable, UnknownIndex, drop_reason, open_data
from .channels import Batch, send_or_drop
from .writer import write_batches


async def run_udp_receive(
    udp: DatagramIO,
    data_out: trio.abc.SendChannel[Batch],
    signal_out: trio.abc.SendChannel[Batch],
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    async with data_out, signal_out:
        task_status.started()
        while True:
            batch = await udp.recv_batch(BATCH_MAX)
            started = time.perf_counter_ns()
            data: list[tuple[bytes, Endpoint]] = []
            signalling: list[tuple[bytes, Endpoint]] = []
            for item in batch:  # one pass; data is by far the common case
                datagram = item[0]
                (data if len(datagram) > 1 and datagram[1] == T_DATA else signalling).append(item)
            if signalling:
                signals = Batch(signalling, started)
                send_or_drop(signal_out, signals, stats, "signalling_queue_full", len(signals))
            ended = time.perf_counter_ns()
            if data:
                await data_out.send(Batch(data, started))
            else:
                await trio.lowlevel.checkpoint()  # a signalling flood must not starve others
            stats.record(len(batch), sum(len(d) for d, _ in batch), started, ended)


def decapsulate_datagrams(
    batch: list[tuple[bytes, Endpoint]], table: TunnelTable, stats: StageStats, now: float
) -> list[bytes]:
    packets: list[bytes] = []
    for datagram, addr in batch:
        try:
            _, packet = open_data(table, datagram, addr, now)
        except UnknownIndex:
            stats.drop("unknown_index")
            continue
        except PunchDrop:
            stats.drop("punch")
            continue
        except CodecError as exc:  # the tunnel counted it too, under the same name
            stats.drop(drop_reason(exc))
            continue
        if packet:
            packets.append(packet)
        else:
            stats.count("keepalive_received")
    return packets


async def run_decapsulate(
    inbox: trio.abc.ReceiveChannel[Batch],
    out: trio.abc.SendChannel[Batch],
    table: TunnelTable,
    stats: StageStats,
    relay_span: PathStats | None = None,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """relay_span, if given, measures UDP receive -> written to the front end."""
    async with inbox, out:
        task_status.started()
        async for batch in inbox:
            started = time.perf_counter_ns()
            packets = Batch(
                decapsulate_datagrams(batch, table, stats, trio.current_time()),
                batch.arrived,
                relay_span,
            )
            ended = time.perf_counter_ns()
            if packets:
                await out.send(packets)
            stats.record(len(packets), sum(map(len, packets)), started, ended)


async def run_tun_write(
    inbox: trio.abc.ReceiveChannel[Batch],
    tun: PacketIO,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    async with inbox:
        task_status.started()
        await write_batches(inbox, tun.write_batch, stats, "rejected_by_kernel")
