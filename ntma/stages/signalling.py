"""Signalling task: drives the node's sans-IO state machine with the clock.

Inputs: signalling datagrams from UDP receive, names from the DNS responder
(through the DirectionBroker). Outputs: datagrams to UDP send, tunnels into the
shared TunnelTable, answers to waiting DNS queries, and log lines.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
import trio

from ..observe.spans import StageStats
from ..proto.messages import Status
from ..proto.names import normalize_fqdn
from ..proto.node_sm import (
    DcUnreachable,
    DirectionResolved,
    MessageDropped,
    NodeSignalling,
    Registered,
    RegistrationFailed,
    RouteFallback,
    TunnelUp,
)
from ..proto.tunnel import TunnelTable
from .channels import DIRECTION_QUEUE


class DirectionBroker:
    """Lets DNS handlers await a name's resolution; concurrent asks share one exchange."""

    def __init__(self, stats: StageStats) -> None:
        self.requests_send, self.requests = trio.open_memory_channel[str](DIRECTION_QUEUE)
        self._waiting: dict[str, list[trio.abc.SendChannel]] = {}
        self._stats = stats

    async def resolve(self, fqdn: str) -> DirectionResolved:
        """Wait for fqdn's outcome; the caller bounds the wait with a cancel scope."""
        fqdn = normalize_fqdn(fqdn)
        send, recv = trio.open_memory_channel[DirectionResolved](1)
        first = fqdn not in self._waiting
        self._waiting.setdefault(fqdn, []).append(send)
        try:
            if first:
                try:
                    self.requests_send.send_nowait(fqdn)
                except trio.WouldBlock:
                    self._stats.drop("direction_queue_full")
                    return DirectionResolved(fqdn, Status.NO_ROUTE)
            return await recv.receive()
        finally:
            waiters = self._waiting.get(fqdn, [])
            if send in waiters:
                waiters.remove(send)
                if not waiters:
                    del self._waiting[fqdn]

    def deliver(self, result: DirectionResolved) -> None:
        for send in self._waiting.pop(result.fqdn, []):
            send.send_nowait(result)


async def run_signalling(
    sm: NodeSignalling,
    inbox: trio.abc.ReceiveChannel,
    udp_out: trio.abc.SendChannel,
    broker: DirectionBroker,
    table: TunnelTable,
    stats: StageStats,
    on_registered: Callable[[Registered], Awaitable[None]],
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    log = structlog.get_logger().bind(stage="signalling", fqdn=sm.fqdn)
    async with inbox, udp_out, broker.requests:
        sm.start(trio.current_time())
        task_status.started()
        while True:
            await _flush(sm, udp_out, broker, table, stats, log, on_registered)
            timer = sm.get_timer()
            with trio.move_on_at(timer if timer is not None else trio.current_time() + 60):
                await _next_input(sm, inbox, broker)
            sm.handle_timer(trio.current_time())


async def _next_input(
    sm: NodeSignalling, inbox: trio.abc.ReceiveChannel, broker: DirectionBroker
) -> None:
    """Wait for a datagram batch or a name to resolve, whichever comes first."""
    async with trio.open_nursery() as nursery:

        async def datagrams() -> None:
            batch = await inbox.receive()
            now = trio.current_time()
            for datagram, addr in batch:
                sm.receive(datagram, addr, now)
            nursery.cancel_scope.cancel()

        async def names() -> None:
            fqdn = await broker.requests.receive()
            sm.request_direction(fqdn, trio.current_time())
            nursery.cancel_scope.cancel()

        nursery.start_soon(datagrams)
        nursery.start_soon(names)


async def _flush(sm, udp_out, broker, table, stats, log, on_registered) -> None:
    for event in sm.events():
        if isinstance(event, TunnelUp):
            table.install(event.tunnel)
            log.info(
                "tunnel_up",
                tunnel=event.tunnel.tunnel_id,
                peer=event.tunnel.peer_fqdn,
                peer_vip=event.tunnel.peer_vip,
                peer_endpoint=f"{event.tunnel.peer_endpoint[0]}:{event.tunnel.peer_endpoint[1]}",
                route=event.tunnel.route,
                replaced=event.replaced,
            )
        elif isinstance(event, RouteFallback):
            log.info(
                "route_fallback",
                tunnel=event.tunnel_id,
                peer=event.peer,
                **{"from": event.from_route, "to": event.to_route},
            )
        elif isinstance(event, DirectionResolved):
            if event.status != Status.OK:
                log.info("direction_failed", peer=event.fqdn, status=event.status.name)
            broker.deliver(event)
        elif isinstance(event, Registered):
            log.info(
                "registered",
                vip=event.vip,
                prefix_len=event.prefix_len,
                observed=f"{event.observed[0]}:{event.observed[1]}",
                behind_nat=event.behind_nat,
                keepalive_s=event.keepalive_s,
            )
            await on_registered(event)
        elif isinstance(event, RegistrationFailed):
            log.error("registration_refused", status=event.status.name, reason=event.reason)
        elif isinstance(event, DcUnreachable):
            log.warning("dc_unreachable", during=event.kind)
        elif isinstance(event, MessageDropped):
            stats.drop(event.reason)
    datagrams = sm.datagrams_to_send()
    if datagrams:
        await udp_out.send(datagrams)
