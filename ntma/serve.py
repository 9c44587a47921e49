"""One driver for the sans-IO machines of the servers (the DC, the RS), and the shell a
server runs in until SIGINT or SIGTERM.

run_machine's loop, once per wake-up (a batch arrived, or the machine's timer passed):

    recv_batch until get_timer() -> receive() each datagram -> handle_timer(now) once due
    -> log each event under its log_name -> copy drops and gauges into the stage's stats
    -> send datagrams_to_send()

A side port is a second socket into the same machine (the DC's probe port): its batches go
to its own receive entry, its replies leave from it, and since its input may have moved the
machine's timer, it re-arms the main loop's. After side-port input every side port's queue
leaves (the probe port's input makes the DC's filter port send); replies the machine queues
for the main socket in answer to it leave at the main loop's next wake-up.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from .io.packetio import BATCH_MAX, DatagramIO
from .observe.spans import Spans, StageStats, run_stats_logger
from .proto.buffer import Endpoint
from .proto.machine import Event, Machine

Datagrams = list[tuple[bytes, Endpoint]]


@dataclass(frozen=True)
class SidePort:
    """A second socket of a machine: what arrives is fed to `receive`, and what
    `datagrams_to_send()` returns leaves from this socket."""

    udp: DatagramIO
    receive: Callable[[bytes, Endpoint, float], None]
    datagrams_to_send: Callable[[], Datagrams]


class _Driver:
    """What the main loop and the side ports share: the machine, its stage's stats, the log,
    and the cancel scope the main loop is waiting in (so a side port can re-arm it)."""

    def __init__(
        self,
        machine: Machine[Event],
        stats: StageStats,
        gauges: Callable[[], Mapping[str, int]] | None,
    ) -> None:
        self.machine = machine
        self.stats = stats
        self.gauges = gauges
        self.log = structlog.get_logger().bind(stage=stats.name)
        self.waiting: trio.CancelScope | None = None

    def deadline(self) -> float:
        timer = self.machine.get_timer()
        return math.inf if timer is None else timer

    def feed(self, batch: Datagrams, receive: Callable[[bytes, Endpoint, float], None]) -> None:
        now = trio.current_time()
        for datagram, addr in batch:
            receive(datagram, addr, now)

    def fire_timer_if_due(self) -> None:
        now = trio.current_time()
        if now >= self.deadline():
            self.machine.handle_timer(now)

    def report(self) -> None:
        """Events to the log (one line each, as the machine names them) and counted by that
        name; drops and gauges to the stage's stats, which the stats logger prints once per
        interval."""
        for event in self.machine.events():
            getattr(self.log, event.log_level)(event.log_name, **event.log_fields())
            self.stats.events[event.log_name] += 1
        self.stats.drops.clear()
        self.stats.drops.update(self.machine.drops)
        if self.gauges is not None:
            for name, value in self.gauges().items():  # set, not added: they are totals
                self.stats.counters[name] = value

    def rearm(self) -> None:
        if self.waiting is not None:
            self.waiting.deadline = self.deadline()


async def _send(udp: DatagramIO, datagrams: Datagrams) -> None:
    if datagrams:
        await udp.send_batch(datagrams)


async def _run_main_port(driver: _Driver, udp: DatagramIO) -> None:
    machine = driver.machine
    while True:
        with trio.move_on_at(driver.deadline()) as driver.waiting:
            batch = await udp.recv_batch(BATCH_MAX)
            started = time.perf_counter_ns()
            driver.feed(batch, machine.receive)
            driver.stats.record(len(batch), sum(len(d) for d, _ in batch), started)
        driver.waiting = None
        driver.fire_timer_if_due()
        driver.report()
        await _send(udp, machine.datagrams_to_send())
        await trio.lowlevel.checkpoint()


async def _run_side_port(driver: _Driver, port: SidePort, ports: Sequence[SidePort]) -> None:
    while True:
        batch = await port.udp.recv_batch(BATCH_MAX)
        driver.feed(batch, port.receive)
        driver.rearm()
        driver.report()
        for each in ports:
            await _send(each.udp, each.datagrams_to_send())
        await trio.lowlevel.checkpoint()


async def run_machine(
    machine: Machine[Event],
    udp: DatagramIO,
    stats: StageStats,
    *,
    side_ports: Sequence[SidePort] = (),
    gauges: Callable[[], Mapping[str, int]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Drive `machine` on `udp` (and its side ports) until cancelled. Events are logged
    with stage=stats.name; `gauges()` gives counters that are not drops (the relay's
    forwarded total, its number of relays), copied into the stats as they stand."""
    driver = _Driver(machine, stats, gauges)
    async with trio.open_nursery() as nursery:
        for port in side_ports:
            nursery.start_soon(_run_side_port, driver, port, side_ports)
        task_status.started()
        await _run_main_port(driver, udp)


async def serve_until_signalled(
    log: structlog.typing.FilteringBoundLogger,
    spans: Spans,
    *,
    stats_interval_s: float,
    start: Callable[[trio.Nursery], Awaitable[None]],
    ready: tuple[str, Mapping[str, Any]],
    resources: contextlib.ExitStack,
) -> None:
    """A server's life: `start` starts its tasks, the stats logger starts, the ready line
    (event name, fields) is logged, and it runs until SIGINT or SIGTERM. Then, also when a
    task failed: the final stats, `resources` closed (sockets, the store), `stopped`."""
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await start(nursery)
                await nursery.start(run_stats_logger, spans, stats_interval_s)
                ready_event, ready_fields = ready
                log.info(ready_event, **ready_fields)
                async for signum in signals:
                    log.info("shutting_down", signal=signal.Signals(signum).name)
                    break
                nursery.cancel_scope.cancel()
    finally:
        spans.log_summaries(log, "stage_stats_final")
        resources.close()
        log.info("stopped")
