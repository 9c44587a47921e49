"""`ntma relay`: the Relay Server's I/O around the sans-IO Relay."""

from __future__ import annotations

import signal
import time

import structlog
import trio

from ..config import RelayConfig
from ..io.fdio import UdpSocket
from ..io.packetio import BATCH_MAX
from ..observe.spans import Spans, run_stats_logger
from .relay import Relay

EXPIRE_EVERY_S = 5.0


async def run_relay_loop(
    relay: Relay, udp: UdpSocket, spans: Spans, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    log = structlog.get_logger().bind(stage="relay")
    stats = spans.stage("relay")
    next_expiry = trio.current_time() + EXPIRE_EVERY_S
    task_status.started()
    while True:
        with trio.move_on_at(next_expiry):
            batch = await udp.recv_batch(BATCH_MAX)
            started = time.perf_counter_ns()
            now = trio.current_time()
            for datagram, addr in batch:
                relay.receive(datagram, addr, now)
            stats.record(len(batch), sum(len(d) for d, _ in batch), started)
        if trio.current_time() >= next_expiry:
            relay.handle_timer(trio.current_time())
            next_expiry = trio.current_time() + EXPIRE_EVERY_S
        for event in relay.events():
            log.info(event.log_name, **event.log_fields())
        stats.drops.clear()
        stats.drops.update(relay.drops)
        stats.counters["forwarded"] = relay.forwarded
        stats.counters["relays"] = len(relay.entries)
        out = relay.datagrams_to_send()
        if out:
            await udp.send_batch(out)
        await trio.lowlevel.checkpoint()


async def run_relay(config: RelayConfig) -> None:
    log = structlog.get_logger().bind(role="relay")
    relay = Relay(
        static=config.key,
        dc_public=config.dc_public_key,
        idle_timeout=config.idle_timeout,
        epoch_offset=time.time() - trio.current_time(),
    )
    udp = UdpSocket.bind(config.listen)
    spans = Spans()
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_relay_loop, relay, udp, spans)
                await nursery.start(run_stats_logger, spans, config.log.stats_interval)
                log.info(
                    "relay_ready",
                    listen=f"{config.listen[0]}:{config.listen[1]}",
                    public_key=config.key.public_base64(),
                )
                async for signum in signals:
                    log.info("shutting_down", signal=signal.Signals(signum).name)
                    break
                nursery.cancel_scope.cancel()
    finally:
        spans.log_summaries(log, "stage_stats_final")
        udp.close()
        log.info("stopped")
