"""Signalling task: drives the node's sans-IO state machine with the clock.

Inputs: signalling datagrams from UDP receive, names from the DNS responder
(through the DirectionBroker), and changes of our own addresses and routes from netwatch
(NodeSignalling.network_changed: re-announce from where we are). Outputs: datagrams
to UDP send, answers to waiting DNS queries, drop counts, and log lines. The machine
installs tunnels into the TunnelTable itself (it owns them; the data stages read that
table).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import trio

from ..observe.spans import StageStats
from ..proto.fields_v2 import VIP6_NONE, Status
from ..proto.machine import Drops
from ..proto.names import normalize_fqdn
from ..proto.node import (
    DirectionResolved,
    NameFailed,
    NameRegistered,
    NodeSignalling,
    Registered,
)
from .channels import DIRECTION_QUEUE, Batch
from .netwatch import NetChange


class AskKind(enum.Enum):
    DIRECTION = "direction"  # resolve a name (a DNS query for it)
    ADD_NAME = "add_name"  # one more name of ours (a device behind an adapter)
    REMOVE_NAME = "remove_name"


@dataclass(frozen=True, slots=True)
class Ask:
    """The broker's channel item: what a DNS handler or the adapter asks of signalling."""

    kind: AskKind
    fqdn: str
    from_name: str = ""  # DIRECTION: which of our names asks ("": the session's)
    vip6: str = VIP6_NONE  # ADD_NAME: the IPv6 address the device chose for itself


class DirectionBroker:
    """Lets DNS handlers await a name's resolution (per asking name of ours: an adapter's
    devices each get their own tunnel); concurrent asks share one exchange."""

    def __init__(self, stats: StageStats, own_name: str = "") -> None:
        self.requests_send, self.requests = trio.open_memory_channel[Ask](DIRECTION_QUEUE)
        self._waiting: dict[tuple[str, str], list[trio.abc.SendChannel]] = {}
        self._stats = stats
        self.own_name = normalize_fqdn(own_name)  # what "" stands for in results

    async def resolve(self, fqdn: str, from_name: str = "") -> DirectionResolved:
        """Wait for fqdn's outcome; the caller bounds the wait with a cancel scope."""
        fqdn, from_name = normalize_fqdn(fqdn), normalize_fqdn(from_name)
        key = (from_name or self.own_name, fqdn)
        send, recv = trio.open_memory_channel[DirectionResolved](1)
        first = key not in self._waiting
        self._waiting.setdefault(key, []).append(send)
        try:
            if first and not self.ask(Ask(AskKind.DIRECTION, fqdn, from_name)):
                return DirectionResolved(fqdn, Status.NO_ROUTE, from_name=from_name)
            return await recv.receive()
        finally:
            waiters = self._waiting.get(key, [])
            if send in waiters:
                waiters.remove(send)
                if not waiters:
                    del self._waiting[key]

    def ask(self, item: Ask) -> bool:
        """Queue item for signalling without waiting (drop newest when full, counted)."""
        try:
            self.requests_send.send_nowait(item)
            return True
        except trio.WouldBlock:
            self._stats.drop("direction_queue_full")
            return False

    def deliver(self, result: DirectionResolved) -> None:
        key = (result.from_name or self.own_name, result.fqdn)
        for send in self._waiting.pop(key, []):
            send.send_nowait(result)


async def run_signalling(
    sm: NodeSignalling,
    inbox: trio.abc.ReceiveChannel,
    udp_out: trio.abc.SendChannel,
    broker: DirectionBroker,
    stats: StageStats,
    on_registered: Callable[[Registered], Awaitable[None]],
    *,
    changes: trio.abc.ReceiveChannel[NetChange] | None = None,
    on_name: Callable[[NameRegistered | NameFailed], Awaitable[None]] | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    log = structlog.get_logger().bind(stage="signalling", fqdn=sm.fqdn)
    counted: Counter[str] = Counter()  # of sm.drops, already added to stats
    watch = _Changes(changes, log)
    async with inbox, udp_out, broker.requests, watch:
        sm.start(trio.current_time())
        task_status.started()
        while True:
            _count_drops(sm.drops, counted, stats)
            await _flush(sm, udp_out, broker, log, stats, on_registered, on_name)
            timer = sm.get_timer()
            with trio.move_on_at(timer if timer is not None else trio.current_time() + 60):
                await _next_input(sm, inbox, broker, watch)
            sm.handle_timer(trio.current_time())


class _Changes:
    """netwatch's channel, while it lasts (it closes when netlink is unavailable)."""

    def __init__(self, channel: trio.abc.ReceiveChannel[NetChange] | None, log) -> None:
        self.channel, self._log = channel, log

    async def __aenter__(self) -> _Changes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.channel is not None:
            await self.channel.aclose()

    async def next(self, sm: NodeSignalling) -> None:
        assert self.channel is not None  # _next_input waits on it only while it lasts
        try:
            change = await self.channel.receive()
        except trio.EndOfChannel:
            self.channel = None
            return
        now = trio.current_time()
        self._log.info(
            "network_changed",
            kinds=sorted(change.kinds),
            ifnames=sorted(change.ifnames),
            state=sm.session.state.value,
        )
        sm.network_changed(now)


async def _next_input(
    sm: NodeSignalling,
    inbox: trio.abc.ReceiveChannel,
    broker: DirectionBroker,
    watch: _Changes,
) -> None:
    """Wait for a datagram batch, a name to resolve or a network change, whichever comes
    first."""
    async with trio.open_nursery() as nursery:

        async def datagrams() -> None:
            batch = await inbox.receive()
            now = trio.current_time()
            for datagram, addr in batch:
                sm.receive(datagram, addr, now)
            nursery.cancel_scope.cancel()

        async def names() -> None:
            ask = await broker.requests.receive()
            now = trio.current_time()
            if ask.kind is AskKind.DIRECTION:
                sm.request_direction(ask.fqdn, now, ask.from_name)
            elif ask.kind is AskKind.ADD_NAME:
                sm.add_name(ask.fqdn, now, ask.vip6)
            else:
                sm.remove_name(ask.fqdn, now)
            nursery.cancel_scope.cancel()

        async def network() -> None:
            await watch.next(sm)
            nursery.cancel_scope.cancel()

        nursery.start_soon(datagrams)
        nursery.start_soon(names)
        if watch.channel is not None:  # no netlink (or it ended): no task to wait on it
            nursery.start_soon(network)


async def _flush(sm, udp_out, broker, log, stats, on_registered, on_name=None) -> None:
    """Events to the log, and counted in stats.events by the name they log under (the
    metrics' tunnel ups and downs, registrations); datagrams to UDP send."""
    for event in sm.events():
        if isinstance(event, DirectionResolved):
            if event.status != Status.OK:
                log.info(event.log_name, **event.log_fields())
                stats.events[event.log_name] += 1
            broker.deliver(event)
            continue
        getattr(log, event.log_level)(event.log_name, **event.log_fields())
        stats.events[event.log_name] += 1
        if isinstance(event, Registered):
            await on_registered(event)
        elif isinstance(event, NameRegistered | NameFailed) and on_name is not None:
            await on_name(event)
    datagrams = sm.datagrams_to_send()
    if datagrams:
        await udp_out.send(Batch(datagrams))


def _count_drops(drops: Drops, counted: Counter[str], stats: StageStats) -> None:
    """Add what the machine dropped since the last call to the stage's drop counts."""
    for reason, total in drops.items():
        if total != counted[reason]:
            stats.drop(reason, total - counted[reason])
            counted[reason] = total
