"""DNS responder stage: the resolver the node's (or GN's) applications use.

NTM names: ask the signalling task (Direction Request, tunnel build) and answer
with the peer's VIP once the tunnel is up. Other names, and names the DC says
are not NTM names: forward to the upstream resolver and relay its answer.
Each query is handled in its own task, bounded by a CapacityLimiter.
"""

from __future__ import annotations

import socket
import time

import structlog
import trio

from ..observe.spans import StageStats
from ..proto.buffer import CodecError, Endpoint
from ..proto.dns import Query, answer_for_status, parse_query, servfail
from ..proto.messages import Status
from ..proto.names import is_ntm_name
from .signalling import DirectionBroker

DIRECTION_WAIT_S = 12.0  # > the signalling deadlines (5 s + 6 s), so they decide
UPSTREAM_WAIT_S = 4.0
CONCURRENT_QUERIES = 128


class DnsResolver:
    """Answers one query's bytes with reply bytes (shared by the UDP and TCP listeners)."""

    def __init__(
        self,
        broker: DirectionBroker,
        upstream: Endpoint | None,
        suffixes: list[str],
        stats: StageStats,
    ) -> None:
        self.broker, self.upstream, self.suffixes, self.stats = broker, upstream, suffixes, stats

    async def answer(self, data: bytes) -> bytes | None:
        try:
            query = parse_query(data)
        except CodecError:
            self.stats.drop("malformed_query")
            return None
        if is_ntm_name(query.name, self.suffixes):
            with trio.move_on_after(DIRECTION_WAIT_S):
                result = await self.broker.resolve(query.name)
                if result.status != Status.NOT_NTM:
                    return answer_for_status(query, result.status, result.vip)
                return await self.forward(query, data)
            self.stats.drop("direction_timeout")
            return servfail(query)
        return await self.forward(query, data)

    async def forward(self, query: Query, data: bytes) -> bytes:
        if self.upstream is None:
            return servfail(query)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock, trio.move_on_after(UPSTREAM_WAIT_S):
            await sock.connect(self.upstream)
            await sock.send(data)
            while True:
                reply = await sock.recv(65535)
                if reply[:2] == data[:2]:  # same DNS id
                    return reply
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
            data, addr = await sock.recvfrom(65535)
            if limiter.available_tokens == 0:
                stats.drop("too_many_queries")
                continue
            nursery.start_soon(_answer_udp, sock, resolver, data, addr, limiter, stats)


async def _answer_udp(sock, resolver: DnsResolver, data: bytes, addr, limiter, stats) -> None:
    async with limiter:
        started = time.perf_counter_ns()
        reply = await resolver.answer(data)
        if reply is not None:
            await sock.sendto(reply, addr)
            stats.record(1, len(reply), started)


async def run_dns_tcp(
    listener: trio.SocketListener,
    resolver: DnsResolver,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """DNS over TCP (RFC 7766): two-byte length prefix, several queries per connection."""
    log = structlog.get_logger().bind(stage="dns_tcp")

    async def serve(stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            with trio.move_on_after(30):
                while True:
                    chunk = await stream.receive_some(65535)
                    if not chunk:
                        return
                    buf += chunk
                    while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                        size = int.from_bytes(buf[:2], "big")
                        query, buf = buf[2 : 2 + size], buf[2 + size :]
                        reply = await resolver.answer(query)
                        if reply is None:
                            return
                        await stream.send_all(len(reply).to_bytes(2, "big") + reply)

    task_status.started()
    log.debug("listening")
    await trio.serve_listeners(serve, [listener])
