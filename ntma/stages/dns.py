"""DNS responder stage: the resolver the node's (or GN's) applications use.

NTM names: ask the signalling task (Direction Request, tunnel build) and answer
with the peer's VIP once the tunnel is up. Other names, and names the DC says
are not NTM names: forward to the upstream resolver and relay its answer.
Each query is handled in its own task, bounded by a CapacityLimiter.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import structlog
import trio

from ..observe.spans import StageStats
from ..proto.buffer import CodecError, Endpoint
from ..proto.dns import Query, answer_for_status, parse_query, servfail
from ..proto.ether import ip_text
from ..proto.fields_v2 import Status
from ..proto.names import is_ntm_name, normalize_fqdn
from .signalling import DirectionBroker

DIRECTION_WAIT_S = 12.0  # > the signalling deadlines (5 s + 6 s), so they decide
UPSTREAM_WAIT_S = 4.0
CONCURRENT_QUERIES = 128
TCP_MAX = 64  # connections per resolver
TCP_PER_SOURCE = 4
TCP_IDLE_S = 10.0  # between queries on one connection


class DnsResolver:
    """Answers one query's bytes with reply bytes (shared by the UDP and TCP listeners)."""

    def __init__(
        self,
        broker: DirectionBroker,
        upstream: Endpoint | None,
        suffixes: list[str],
        stats: StageStats,
        local: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.broker, self.upstream, self.suffixes, self.stats = broker, upstream, suffixes, stats
        # An adapter's own devices: name -> packed VIP, answered without a tunnel.
        self.local = local

    async def answer(self, data: bytes, from_name: str = "") -> bytes | None:
        """The reply to one query from our name from_name (an adapter's device; "": the
        node's own), or None for a query too broken to answer."""
        try:
            query = parse_query(data)
        except CodecError:
            self.stats.drop("malformed_query")
            return None
        if is_ntm_name(query.name, self.suffixes):
            vip = self.local(normalize_fqdn(query.name)) if self.local is not None else None
            if vip is not None:  # a device on our own link
                return answer_for_status(query, Status.OK, ip_text(vip))
            with trio.move_on_after(DIRECTION_WAIT_S):
                result = await self.broker.resolve(query.name, from_name)
                if result.status != Status.NOT_NTM:
                    return answer_for_status(query, result.status, result.vip, vip6=result.vip6)
                return await self.forward(query, data)
            self.stats.drop("direction_timeout")
            return servfail(query)
        return await self.forward(query, data)

    async def forward(self, query: Query, data: bytes) -> bytes:
        if self.upstream is None:
            return servfail(query)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with sock, trio.move_on_after(UPSTREAM_WAIT_S):
                await sock.connect(self.upstream)
                await sock.send(data)
                while True:
                    reply = await sock.recv(65535)
                    if reply[:2] == data[:2]:  # same DNS id
                        return reply
        except OSError:  # e.g. the upstream's ICMP port unreachable, reported on recv
            self.stats.drop("upstream_error")
            return servfail(query)
        self.stats.drop("upstream_timeout")
        return servfail(query)


async def run_dns_udp(
    sock: trio.socket.SocketType,
    resolver: DnsResolver,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    limiter = trio.CapacityLimiter(CONCURRENT_QUERIES)
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            try:
                data, addr = await sock.recvfrom(65535)
            except OSError:
                stats.drop("receive_error")
                continue
            if limiter.available_tokens == 0:
                stats.drop("too_many_queries")
                continue
            nursery.start_soon(_answer_udp, sock, resolver, data, addr, limiter, stats)


async def _answer_udp(sock, resolver: DnsResolver, data: bytes, addr, limiter, stats) -> None:
    async with limiter:
        started = time.perf_counter_ns()
        reply = await resolver.answer(data)
        if reply is not None:
            try:
                await sock.sendto(reply, addr)
            except OSError:
                stats.drop("send_error")
                return
            stats.record(1, len(reply), started)


class TcpConnections:
    """The TCP connections a resolver serves, bounded (docs/protocol.md section 8): at
    most TCP_MAX in all and TCP_PER_SOURCE from one address. A connection over a limit
    evicts the oldest idle one (so slow connections cannot deny TCP DNS to others), or is
    refused when none is idle."""

    def __init__(self, stats: StageStats) -> None:
        self._stats = stats
        self._open: dict[object, tuple[str, trio.CancelScope]] = {}  # insertion = age
        self.idle: set[object] = set()

    def admit(self, key: object, source: str, scope: trio.CancelScope) -> bool:
        same = [k for k, (src, _) in self._open.items() if src == source]
        for pool, limit in ((same, TCP_PER_SOURCE), (list(self._open), TCP_MAX)):
            if len(pool) >= limit and not self._evict_idle(pool):
                self._stats.drop("tcp_connection_limit")
                return False
        self._open[key] = (source, scope)
        self.idle.add(key)
        return True

    def _evict_idle(self, pool: list[object]) -> bool:
        victim = next((k for k in pool if k in self.idle), None)
        if victim is None:
            return False
        self._open.pop(victim)[1].cancel()
        self.idle.discard(victim)
        self._stats.drop("tcp_evicted_idle")
        return True

    def close(self, key: object) -> None:
        self._open.pop(key, None)
        self.idle.discard(key)

    def __len__(self) -> int:
        return len(self._open)


async def run_dns_tcp(
    listener: trio.SocketListener,
    resolver: DnsResolver,
    stats: StageStats,
    name_of: Callable[[str], str] | None = None,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """DNS over TCP (RFC 7766): two-byte length prefix, several queries per connection.
    Connections are bounded (TcpConnections) and idle ones end after TCP_IDLE_S; whatever
    a client does to its connection ends that connection, never the listener."""
    log = structlog.get_logger().bind(stage="dns_tcp")
    connections = TcpConnections(stats)

    async def serve(stream: trio.SocketStream) -> None:
        key = object()
        try:
            source = str(stream.socket.getpeername()[0])
        except OSError:
            source = "?"
        with trio.CancelScope() as scope:
            if not connections.admit(key, source, scope):
                await stream.aclose()
                return
            try:
                async with stream:
                    from_name = name_of(source) if name_of is not None else ""
                    await _serve_tcp(stream, resolver, connections, key, from_name)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                stats.drop("tcp_connection_error")
            finally:
                connections.close(key)

    task_status.started()
    log.debug("listening")
    await trio.serve_listeners(serve, [listener])


async def _serve_tcp(
    stream, resolver: DnsResolver, connections: TcpConnections, key, from_name: str
) -> None:
    buf = b""
    while True:
        connections.idle.add(key)
        with trio.move_on_after(TCP_IDLE_S) as idle:
            chunk = await stream.receive_some(65535)
        if idle.cancelled_caught or not chunk:
            return
        connections.idle.discard(key)
        buf += chunk  # bounded: less than one query is ever left over, plus one chunk
        while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
            size = int.from_bytes(buf[:2], "big")
            query, buf = buf[2 : 2 + size], buf[2 + size :]
            reply = await resolver.answer(query, from_name)
            if reply is None:
                return
            await stream.send_all(len(reply).to_bytes(2, "big") + reply)
