"""Netwatch: the kernel tells us at once when our own links, addresses or routes change.

    kernel (rtnetlink notices) -> netwatch -> NetChange -> the consumer (re-announces)

One `ip addr flush; ip addr add; ip route add` is a dozen notices; netwatch sends a
NetChange at the first relevant one (the consumer re-announces at once) and one more
for whatever follows within `settle_s`, when it settles: at most two per burst. The
change says only what kind of thing changed and where: the consumer re-reads the
kernel's state itself (`io.addresses.interface_endpoints`), so nothing in a notice needs
to be exact, and a lost notice (the kernel's buffer overran: kind "overrun") is a change
like any other (so is a link going down: the kernel drops its IPv4 routes without a
notice of their own). Notices on interfaces in `exclude` are ignored: the node's own TUN
(`tun_name`), the adapter's GN link and passthrough TUN (`gn_interface`,
`passthrough_tun`) change whenever we configure them, and their addresses are not ones
to announce.

Wiring (the consumer owns the receive end; one pending change, see channels.py):

    changes_send, changes = open_hop_channel(NETWATCH_QUEUE)
    watch = functools.partial(run_netwatch, exclude=frozenset({config.tun_name}))
    watching = await nursery.start(watch, changes_send, spans.stage("netwatch"))
    async with changes:
        async for change in changes:  # ends at once if netwatch is unavailable
            ...  # re-read the endpoints; tell the DC if they differ

Nothing is sent for the state at start: the consumer reads that itself. `watching` is
False when the kernel refused the netlink socket (logged once): the node then works as
before, without netlink.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio

from ..io.netlink import NetEvent, NetlinkSocket, parse_messages
from ..observe.spans import StageStats

NAMES_MAX = 256  # ifindex -> name entries kept for interfaces that may have vanished


@dataclass(frozen=True, slots=True)
class NetChange:
    """One burst of notices. at: trio.current_time() of its first relevant notice;
    kinds: of "link", "addr", "route", "overrun"; ifnames: the interfaces named (those
    whose name is not known any more are left out)."""

    at: float
    kinds: frozenset[str]
    ifnames: frozenset[str]


class InterfaceNames:
    """ifindex -> name at notice time: the kernel's answer now, or, for an interface that
    has vanished (its DELADDR and DELROUTE notices come after it is gone), the name last
    seen for it in a link notice or a lookup."""

    def __init__(self, limit: int = NAMES_MAX) -> None:
        self._names: dict[int, str] = {}
        self._limit = limit
        for index, name in socket.if_nameindex():
            self.learn(index, name)

    def learn(self, index: int, name: str) -> None:
        self._names.pop(index, None)
        self._names[index] = name
        if len(self._names) > self._limit:
            del self._names[next(iter(self._names))]  # the longest unseen

    def name(self, index: int) -> str | None:
        if index <= 0:
            return None
        try:
            name = socket.if_indextoname(index)
        except OSError:
            return self._names.get(index)
        self.learn(index, name)
        return name


@dataclass
class Burst:
    at: float
    kinds: set[str] = field(default_factory=set)
    ifnames: set[str] = field(default_factory=set)

    def add(self, event: NetEvent, name: str | None) -> None:
        self.kinds.add(event.kind)
        if name is not None:
            self.ifnames.add(name)

    def change(self) -> NetChange:
        return NetChange(self.at, frozenset(self.kinds), frozenset(self.ifnames))


class Watch:
    """Turns datagrams into the relevant (event, interface name) pairs, counting the rest."""

    def __init__(self, exclude: frozenset[str], stats: StageStats) -> None:
        self.names = InterfaceNames()
        self.exclude = exclude
        self.stats = stats

    def relevant(self, datagrams: list[bytes]) -> list[tuple[NetEvent, str | None]]:
        started = time.perf_counter_ns()
        found: list[tuple[NetEvent, str | None]] = []
        notices = 0
        for datagram in datagrams:
            events, bad = parse_messages(datagram)
            if bad:
                self.stats.drop("malformed", bad)
            notices += len(events)
            for event in events:
                name = self._name_of(event)
                if name in self.exclude:
                    self.stats.count("excluded")
                    continue
                if event.kind == "overrun":
                    self.stats.count("overrun")
                found.append((event, name))
        self.stats.record(notices, sum(map(len, datagrams)), started)
        return found

    def _name_of(self, event: NetEvent) -> str | None:
        if event.ifname is not None:  # a link notice names its interface itself
            self.names.learn(event.ifindex, event.ifname)
            return event.ifname
        return self.names.name(event.ifindex)


async def run_netwatch(
    changes: trio.abc.SendChannel[NetChange],
    stats: StageStats,
    *,
    exclude: frozenset[str] = frozenset(),
    settle_s: float = 0.05,
    open_socket: Callable[[], NetlinkSocket] = NetlinkSocket.open,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Send one NetChange per burst of relevant notices until cancelled. Reports
    started(True) once subscribed; without netlink, logs one warning, reports
    started(False) and returns, closing `changes`. open_socket: for tests."""
    log = structlog.get_logger().bind(stage="netwatch")
    async with changes:
        try:
            source = open_socket()
        except OSError as exc:
            log.warning("netwatch_unavailable", error=str(exc))
            task_status.started(False)
            return
        async with source:
            watch = Watch(exclude, stats)
            task_status.started(True)
            try:
                await _watch(source, watch, changes, settle_s)
            except OSError as exc:  # recv failing for good: carry on as without netlink
                log.warning("netwatch_failed", error=str(exc))


async def _watch(
    source: NetlinkSocket,
    watch: Watch,
    changes: trio.abc.SendChannel[NetChange],
    settle_s: float,
) -> None:
    """Leading and trailing edge: the first relevant notice is a change at once (a mover
    re-announces without waiting), what follows within settle_s is one more change when
    it settles (the state the burst left)."""
    while True:
        found: list[tuple[NetEvent, str | None]] = []
        while not found:
            found = watch.relevant(await source.read_batch())
        first = Burst(trio.current_time())
        for event, name in found:
            first.add(event, name)
        if not _send(changes, first, watch):
            return
        rest = await _rest_of_burst(source, watch, settle_s)
        if rest is not None and not _send(changes, rest, watch):
            return


def _send(changes: trio.abc.SendChannel[NetChange], burst: Burst, watch: Watch) -> bool:
    """False when nobody listens any more."""
    try:
        changes.send_nowait(burst.change())
        watch.stats.count("changes")
    except trio.WouldBlock:  # the pending change stands for this one too
        watch.stats.count("coalesced")
    except trio.BrokenResourceError:
        return False
    return True


async def _rest_of_burst(source: NetlinkSocket, watch: Watch, settle_s: float) -> Burst | None:
    """What follows the first notice within settle_s, as one burst (None: nothing)."""
    burst: Burst | None = None
    with trio.move_on_after(settle_s):
        while True:
            found = watch.relevant(await source.read_batch())
            if found and burst is None:
                burst = Burst(trio.current_time())
            for event, name in found:
                burst.add(event, name)  # type: ignore[union-attr]
    return burst
