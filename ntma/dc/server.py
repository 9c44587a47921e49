"""`ntma dc`: the Direction Coordinator's I/O around the Coordinator state machine.

One UDP socket for signalling, one for DNS (the zone's A records, so a stock
resolver can look up a node's VIP), a stats line per interval, clean stop on
SIGINT/SIGTERM.
"""

from __future__ import annotations

import signal
import socket
import time

import structlog
import trio

from ..config import DcConfig
from ..io.fdio import UdpSocket
from ..io.packetio import BATCH_MAX
from ..observe.log import RateLimitedDebug
from ..observe.spans import Spans, run_stats_logger
from ..proto.buffer import CodecError
from ..proto.dns import parse_query, refused, zone_answer
from ..proto.names import is_ntm_name
from .coordinator import Coordinator
from .store import NodeStore


async def run_probe_port(
    dc: Coordinator, udp: UdpSocket, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """The DC's second port: only PROBE, answered from here (see dc/route.py)."""
    task_status.started()
    while True:
        batch = await udp.recv_batch(BATCH_MAX)
        now = trio.current_time()
        for datagram, addr in batch:
            dc.receive_probe(datagram, addr, now)
        out = dc.probe_datagrams_to_send()
        if out:
            await udp.send_batch(out)
        await trio.lowlevel.checkpoint()


async def run_signalling_server(
    dc: Coordinator, udp: UdpSocket, spans: Spans, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    log = structlog.get_logger().bind(stage="dc_signalling")
    stats = spans.stage("dc_signalling")
    task_status.started()
    while True:
        with trio.move_on_at(dc.get_timer()):
            batch = await udp.recv_batch(BATCH_MAX)
            started = time.perf_counter_ns()
            now = trio.current_time()
            for datagram, addr in batch:
                dc.receive(datagram, addr, now)
            stats.record(len(batch), sum(len(d) for d, _ in batch), started)
        dc.handle_timer(trio.current_time())
        for event in dc.events():
            log.info(event.log_name, **event.log_fields())
        stats.drops.clear()
        stats.drops.update(dc.drops)
        out = dc.datagrams_to_send()
        if out:
            await udp.send_batch(out)
        await trio.lowlevel.checkpoint()


async def run_zone_dns(
    dc: Coordinator,
    sock: trio.socket.SocketType,
    spans: Spans,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    stats = spans.stage("dc_dns")
    debug = RateLimitedDebug(structlog.get_logger().bind(stage="dc_dns"))
    task_status.started()
    while True:
        data, addr = await sock.recvfrom(65535)
        started = time.perf_counter_ns()
        try:
            query = parse_query(data)
        except CodecError as exc:
            stats.drop("malformed_query")
            debug(trio.current_time(), "malformed_query", detail=str(exc))
            continue
        if not is_ntm_name(query.name, [dc.zone]):
            reply = refused(query)
        else:
            record = dc.store.get(query.name)
            online = dc.online_record(query.name)
            reply = zone_answer(query, online.vip if online else None, record is not None)
        await sock.sendto(reply, addr)
        stats.record(1, len(reply), started)


async def run_dc(config: DcConfig) -> None:
    log = structlog.get_logger().bind(role="dc", zone=config.zone)
    store = NodeStore(config.database, config.vip_pool)
    dc = Coordinator(
        static=config.key,
        store=store,
        zone=config.zone,
        admission=config.admission,
        keepalive_s=config.keepalive_interval,
        keepalive_misses=config.keepalive_misses,
        epoch_offset=time.time() - trio.current_time(),
        probe_endpoint=config.probe_listen,
        relays=config.relays,
    )
    udp = UdpSocket.bind(config.listen)
    probe = UdpSocket.bind(config.probe_listen) if config.probe_listen else None
    spans = Spans()
    dns_sock = None
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_signalling_server, dc, udp, spans)
                if probe is not None:
                    await nursery.start(run_probe_port, dc, probe)
                if config.dns_listen is not None:
                    dns_sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    await dns_sock.bind(config.dns_listen)
                    await nursery.start(run_zone_dns, dc, dns_sock, spans)
                await nursery.start(run_stats_logger, spans, config.log.stats_interval)
                log.info(
                    "dc_ready",
                    listen=f"{config.listen[0]}:{config.listen[1]}",
                    vip_pool=str(config.vip_pool),
                    public_key=config.key.public_base64(),
                    admitted=sorted(config.admission),
                    relays=[f"{ep[0]}:{ep[1]}" for ep, _ in config.relays],
                )
                async for signum in signals:
                    log.info("shutting_down", signal=signal.Signals(signum).name)
                    break
                nursery.cancel_scope.cancel()
    finally:
        spans.log_summaries(log, "stage_stats_final")
        if dns_sock is not None:
            dns_sock.close()
        udp.close()
        if probe is not None:
            probe.close()
        store.close()
        log.info("stopped")
