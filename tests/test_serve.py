"""The one driver for server machines (serve.py), on fake UDP and trio's autojump clock: it
feeds datagrams, fires the machine's timer at get_timer(), logs typed events by name,
copies drops and gauges into the stage's stats, serves side ports, and runs a server until
SIGTERM."""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass

import pytest
import structlog
import trio
from structlog.testing import capture_logs

from ntma.io.fake import FakeNetwork
from ntma.observe.spans import Spans
from ntma.proto.buffer import Endpoint
from ntma.proto.machine import Drops, Event
from ntma.serve import SidePort, run_machine, serve_until_signalled

SERVER: Endpoint = ("198.51.100.10", 7400)
SIDE: Endpoint = ("198.51.100.10", 7401)
CLIENT: Endpoint = ("198.51.100.41", 7401)
TICK_S = 1.0


@dataclass(frozen=True)
class Echoed(Event):
    size: int
    peer: str


@dataclass(frozen=True)
class Ticked(Event):
    log_name = "tick"
    at: float


class EchoMachine:
    """Echoes each datagram, drops empty ones, ticks every TICK_S; its side entry answers
    from the side port and asks for a tick 0.25 s later (earlier than the pending one)."""

    def __init__(self, now: float) -> None:
        self.drops = Drops()
        self.ticks: list[float] = []
        self.echoed = 0
        self._tick_at = now + TICK_S
        self._out: list[tuple[bytes, Endpoint]] = []
        self._side_out: list[tuple[bytes, Endpoint]] = []
        self._events: list[Event] = []

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        if not datagram:
            self.drops.drop("empty")
            return
        self.echoed += 1
        self._out.append((datagram, addr))
        self._events.append(Echoed(len(datagram), f"{addr[0]}:{addr[1]}"))

    def receive_side(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        self._side_out.append((b"side:" + datagram, addr))
        self._tick_at = min(self._tick_at, now + 0.25)

    def get_timer(self) -> float | None:
        return self._tick_at

    def handle_timer(self, now: float) -> None:
        self.ticks.append(now)
        self._tick_at = now + TICK_S
        self._events.append(Ticked(now))

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._out = self._out, []
        return out

    def side_datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._side_out = self._side_out, []
        return out

    def events(self) -> list[Event]:
        events, self._events = self._events, []
        return events


@pytest.fixture
def net() -> FakeNetwork:
    return FakeNetwork()


async def test_datagrams_are_answered_events_logged_by_name_and_drops_counted(net, autojump_clock):
    machine, spans = EchoMachine(trio.current_time()), Spans()
    client = net.attach(CLIENT)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_machine, machine, net.attach(SERVER), spans.stage("echo"))
            await client.send_batch([(b"hello", SERVER), (b"", SERVER)])
            assert await client.recv_batch(8) == [(b"hello", SERVER)]
            nursery.cancel_scope.cancel()
    assert {"event": "echoed", "size": 5, "peer": "198.51.100.41:7401", "stage": "echo"} in [
        {k: v for k, v in e.items() if k != "log_level"} for e in logs
    ]
    stats = spans.stages["echo"]
    assert stats.packets == 2 and dict(stats.drops) == {"empty": 1}


async def test_the_timer_fires_at_get_timer_while_nothing_arrives(net, autojump_clock):
    start = trio.current_time()
    machine = EchoMachine(start)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_machine, machine, net.attach(SERVER), Spans().stage("echo"))
            await trio.sleep(3.5)
            nursery.cancel_scope.cancel()
    assert machine.ticks == [start + 1.0, start + 2.0, start + 3.0]
    assert [e["at"] for e in logs if e["event"] == "tick"] == machine.ticks


async def test_a_side_port_feeds_its_entry_replies_from_its_socket_and_rearms(net, autojump_clock):
    start = trio.current_time()
    machine = EchoMachine(start)
    side = SidePort(net.attach(SIDE), machine.receive_side, machine.side_datagrams_to_send)
    client = net.attach(CLIENT)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda **kw: run_machine(
                machine, net.attach(SERVER), Spans().stage("echo"), side_ports=[side], **kw
            )
        )
        await trio.sleep(0.5)
        await client.send_batch([(b"probe", SIDE)])
        assert await client.recv_batch(8) == [(b"side:probe", SIDE)]
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert machine.ticks == [start + 0.75]  # the side input's earlier timer, not start + 1.0
    assert machine.echoed == 0  # nothing reached the main entry


async def test_gauges_are_set_in_the_stats_as_they_stand(net, autojump_clock):
    machine, spans = EchoMachine(trio.current_time()), Spans()
    client = net.attach(CLIENT)

    def gauges() -> dict[str, int]:
        return {"echoed": machine.echoed}

    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda **kw: run_machine(
                machine, net.attach(SERVER), spans.stage("echo"), gauges=gauges, **kw
            )
        )
        for _ in range(3):
            await client.send_batch([(b"x", SERVER)])
            await client.recv_batch(8)
        nursery.cancel_scope.cancel()
    assert spans.stages["echo"].counters["echoed"] == 3


async def _serve(start, resources: contextlib.ExitStack) -> None:
    spans = Spans()
    spans.stage("echo")
    await serve_until_signalled(
        structlog.get_logger().bind(role="test"),
        spans,
        stats_interval_s=60,
        start=start,
        ready=("test_ready", {"listen": "198.51.100.10:7400"}),
        resources=resources,
    )


async def test_a_server_runs_until_sigterm_then_logs_final_stats_and_closes(net, autojump_clock):
    closed = []
    resources = contextlib.ExitStack()
    resources.callback(closed.append, "udp")
    machine = EchoMachine(trio.current_time())

    async def start(nursery: trio.Nursery) -> None:
        await nursery.start(run_machine, machine, net.attach(SERVER), Spans().stage("echo"))

        async def terminate() -> None:
            await trio.sleep(2.5)
            signal.raise_signal(signal.SIGTERM)

        nursery.start_soon(terminate)

    with capture_logs() as logs:
        await _serve(start, resources)
    names = [e["event"] for e in logs if e["event"] != "tick"]
    assert names == ["test_ready", "shutting_down", "stage_stats_final", "stopped"]
    assert logs[0]["listen"] == "198.51.100.10:7400"
    assert next(e for e in logs if e["event"] == "shutting_down")["signal"] == "SIGTERM"
    assert closed == ["udp"] and len(machine.ticks) == 2


async def test_a_failing_task_still_gets_final_stats_and_closes(autojump_clock):
    closed = []
    resources = contextlib.ExitStack()
    resources.callback(closed.append, "udp")

    async def start(nursery: trio.Nursery) -> None:
        async def fail() -> None:
            await trio.sleep(1)
            raise OSError("socket gone")

        nursery.start_soon(fail)

    with capture_logs() as logs, pytest.raises(ExceptionGroup) as failed:
        await _serve(start, resources)
    assert failed.group_contains(OSError)
    assert [e["event"] for e in logs] == ["test_ready", "stage_stats_final", "stopped"]
    assert closed == ["udp"]
