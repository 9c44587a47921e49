"""The metrics endpoint: a small HTTP/1.x responder in the daemon's own nursery.

    accept (at most MAX_CONNECTIONS at once; more are closed at once, counted)
    -> read the request head (at most MAX_REQUEST_BYTES) -> GET /metrics: 200 with
    generate_latest(registry); other paths 404, other methods 405, junk 400, too long 431
    -> close. One deadline (CONNECTION_TIMEOUT_S) covers reading and writing.

Why not prometheus_client's start_http_server: its threads would read the daemon's
counters while the Trio thread changes them (dicts changing size mid-iteration), and its
server has no bound on request size, time or connections. Here a scrape renders in the
Trio thread between two batches, so it reads consistent numbers without locks.

The endpoint faces the network: every failure of a connection (junk, a slow or vanished
client, too many of them) is dropped and counted in the "metrics" stage's drops, and the
accept loop never ends on one. Served scrapes are recorded there as packets and bytes.
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable

import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from ..proto.buffer import Endpoint
from .spans import Spans, StageStats

MAX_CONNECTIONS = 8  # a scraper or two, and a person with curl
MAX_REQUEST_BYTES = 8192  # a request head; a scraper's is ~200 bytes
CONNECTION_TIMEOUT_S = 5.0  # the whole exchange: a slow client cannot hold a slot longer
ACCEPT_ERROR_PAUSE_S = 0.1  # out of file descriptors: let some close before trying again
RENDER_ERROR_LOG_S = 60.0
BACKLOG = 16
RECEIVE_CHUNK = 4096
PATH = b"/metrics"
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}
DROP_REASONS = {  # status -> the drop it counts as
    400: "bad_request",
    404: "not_found",
    405: "bad_method",
    431: "request_too_large",
    500: "render_error",
}


def request_status(buffer: bytes | bytearray) -> tuple[int, bool] | None:
    """(status, send the body?) for the request head at the start of `buffer`, or None
    while it is incomplete and still within MAX_REQUEST_BYTES. Only the request line
    matters; headers are read past, never interpreted."""
    end = min((i for i in (buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")) if i >= 0), default=-1)
    if end < 0 or end > MAX_REQUEST_BYTES:
        return (431, True) if len(buffer) > MAX_REQUEST_BYTES else None
    parts = buffer[: buffer.find(b"\n")].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return 400, True
    method, target = parts[0], parts[1]
    if target.split(b"?", 1)[0] != PATH:
        return 404, True
    if method not in (b"GET", b"HEAD"):
        return 405, True
    return 200, method == b"GET"


def response(status: int, body: bytes, with_body: bool = True) -> bytes:
    """The whole response; every one closes the connection."""
    content_type = CONTENT_TYPE_LATEST if status == 200 else "text/plain; charset=utf-8"
    head = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 405:
        head.append("Allow: GET, HEAD")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body if with_body else b"")


class _Renderer:
    """generate_latest(registry), or a 500 if a collector fails (logged now and then)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.log = structlog.get_logger().bind(stage="metrics")
        self._logged_at = -RENDER_ERROR_LOG_S

    def __call__(self) -> tuple[int, bytes]:
        try:
            return 200, generate_latest(self.registry)
        except Exception as exc:  # a bug in a collector must not end the server
            now = time.monotonic()
            if now - self._logged_at >= RENDER_ERROR_LOG_S:
                self._logged_at = now
                self.log.error("metrics_render_failed", error=repr(exc))
            return 500, b"metrics could not be rendered\n"


async def _exchange(
    stream: trio.abc.Stream, render: Callable[[], tuple[int, bytes]], stats: StageStats
) -> int:
    """Read one request head and answer it; the bytes sent (0: nothing was asked)."""
    buffer = bytearray()
    while (verdict := request_status(buffer)) is None:
        data = await stream.receive_some(RECEIVE_CHUNK)
        if not data:
            stats.drop("incomplete_request")
            return 0
        buffer += data
    status, with_body = verdict
    if status == 200:
        status, body = render()
    else:
        body = f"{status} {REASONS[status]}\n".encode()
    if status in DROP_REASONS:
        stats.drop(DROP_REASONS[status])
    reply = response(status, body, with_body)
    await stream.send_all(reply)
    return len(reply) if status == 200 else 0


async def serve_connection(
    stream: trio.abc.Stream, render: Callable[[], tuple[int, bytes]], stats: StageStats
) -> None:
    """One connection, under one deadline; every way it can fail is a counted drop."""
    started = time.perf_counter_ns()
    sent = 0
    try:
        with trio.move_on_after(CONNECTION_TIMEOUT_S) as scope:
            sent = await _exchange(stream, render, stats)
        if scope.cancelled_caught:
            stats.drop("timeout")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        stats.drop("connection_error")
    finally:
        await trio.aclose_forcefully(stream)
    if sent:
        stats.record(1, sent, started)


async def _listen(listen: Endpoint) -> trio.socket.SocketType:
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart rebinds at once
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "[::]": IPv4 too
        await sock.bind(listen)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"metrics_listen {listen[0]}:{listen[1]}: {exc.strerror}"
        ) from None
    return sock


async def run_metrics_server(
    listen: Endpoint,
    registry: CollectorRegistry,
    stats: StageStats,
    *,
    task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `registry` on `listen` until cancelled; reports the bound address started."""
    listener = trio.SocketListener(await _listen(listen))
    render = _Renderer(registry)
    slots = trio.Semaphore(MAX_CONNECTIONS)
    bound = listener.socket.getsockname()[:2]
    async with listener, trio.open_nursery() as nursery:
        render.log.info("metrics_listening", listen=f"{bound[0]}:{bound[1]}")
        task_status.started((bound[0], bound[1]))
        while True:
            try:
                stream = await listener.accept()
            except OSError:  # EMFILE and the like (trio retries the transient ones)
                stats.drop("accept_error")
                await trio.sleep(ACCEPT_ERROR_PAUSE_S)
                continue
            if slots.value == 0:
                stats.drop("too_many_connections")
                await trio.aclose_forcefully(stream)
                continue
            slots.acquire_nowait()
            nursery.start_soon(_serve_in_slot, stream, render, stats, slots)


async def _serve_in_slot(
    stream: trio.abc.Stream, render: _Renderer, stats: StageStats, slots: trio.Semaphore
) -> None:
    try:
        await serve_connection(stream, render, stats)
    finally:
        slots.release()


async def start_metrics(
    nursery: trio.Nursery, listen: Endpoint | None, registry: CollectorRegistry, spans: Spans
) -> None:
    """The endpoint in `nursery` when the config has metrics_listen (else nothing)."""
    if listen is not None:
        server = functools.partial(run_metrics_server, listen, registry, spans.stage("metrics"))
        await nursery.start(server)
