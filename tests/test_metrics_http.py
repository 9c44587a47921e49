"""The metrics endpoint (observe/metrics_http.py) under hostile clients: junk, oversized
heads, other paths and methods, clients that stall while sending or while reading, and more
connections than it serves at once. Each is answered or dropped and counted, and the
server goes on serving. Time-outs run on the autojump clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from ntma.observe import metrics_http
from ntma.observe.metrics import SpansCollector
from ntma.observe.metrics_http import (
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    request_status,
    run_metrics_server,
    serve_connection,
)
from ntma.observe.spans import Spans, StageStats

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (GET, (200, True)),
        (b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", (200, True)),  # a query is ignored
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", (200, False)),
        (b"GET /metrics HTTP/1.1\n\n", (200, True)),  # bare newlines, as nc sends them
        (b"GET / HTTP/1.1\r\n\r\n", (404, True)),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", (404, True)),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", (405, True)),
        (b"GET /metrics\r\n\r\n", (400, True)),  # HTTP/0.9
        (b"GET /metrics SPDY/3\r\n\r\n", (400, True)),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", (400, True)),  # TLS to plain HTTP
        (b"GET  /metrics HTTP/1.1\r\n\r\n", (400, True)),
        (b"GET /metrics HTTP/1.1\r\n", None),  # the head is not over yet
        (b"", None),
        (b"G" * (MAX_REQUEST_BYTES + 1), (431, True)),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_BYTES + b"\r\n\r\n", (431, True)),
    ],
)
def test_request_status(head: bytes, expected) -> None:
    assert request_status(head) == expected


def _registry() -> CollectorRegistry:
    spans = Spans()
    spans.stage("udp_receive").record(3, 300, 0, 3000)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SpansCollector(spans, "node"))
    return registry


def _render(registry: CollectorRegistry):
    return metrics_http._Renderer(registry)


async def _exchange(
    request: bytes, *, chunk: int = 0, hang_up: bool = False
) -> tuple[bytes, StageStats]:
    """Send `request` (in pieces of `chunk` bytes, if given; then end the sending side, if
    `hang_up`) on an in-memory connection served by serve_connection; everything it
    answered before closing."""
    client, server = trio.testing.memory_stream_pair()
    stats = StageStats("metrics")
    chunk = chunk or len(request)
    answer = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, _render(_registry()), stats)
        for i in range(0, len(request), chunk):
            await client.send_all(request[i : i + chunk])
        if hang_up:
            await client.send_eof()
        while data := await client.receive_some():
            answer += data
    return answer, stats


async def test_get_metrics_is_the_exposition_and_counted_as_served() -> None:
    answer, stats = await _exchange(GET)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=" in head  # the text exposition format
    assert f"Content-Length: {len(body)}".encode() in head
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "ntma_stage_packets" in families and "ntma_stage_latency_seconds" in families
    assert stats.packets == 1 and stats.bytes == len(answer) and not stats.drops


async def test_a_request_fed_one_byte_at_a_time_is_served() -> None:
    answer, stats = await _exchange(GET, chunk=1)
    assert answer.startswith(b"HTTP/1.1 200 OK") and stats.packets == 1


async def test_head_has_no_body() -> None:
    answer, _ = await _exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET /favicon.ico HTTP/1.1\r\n\r\n", b"404 Not Found", "not_found"),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", b"405 Method Not Allowed", "bad_method"),
        (b"\x00\xff junk \x01\r\n\r\n", b"400 Bad Request", "bad_request"),
        (b"A" * (3 * MAX_REQUEST_BYTES), b"431 Request Header", "request_too_large"),
    ],
)
async def test_other_requests_are_refused_and_counted(request_bytes, status, reason) -> None:
    answer, stats = await _exchange(request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert dict(stats.drops) == {reason: 1} and stats.packets == 0


async def test_a_client_that_hangs_up_mid_request_is_counted() -> None:
    answer, stats = await _exchange(b"GET /metr", hang_up=True)
    assert answer == b"" and dict(stats.drops) == {"incomplete_request": 1}


async def test_a_client_that_never_finishes_its_request_times_out(autojump_clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    stats = StageStats("metrics")
    await client.send_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")  # and then nothing
    started = trio.current_time()
    await serve_connection(server, _render(_registry()), stats)
    assert trio.current_time() - started == pytest.approx(metrics_http.CONNECTION_TIMEOUT_S)
    assert dict(stats.drops) == {"timeout": 1}
    assert await client.receive_some() == b""  # closed on it


async def test_a_client_that_never_reads_the_answer_times_out(autojump_clock) -> None:
    client, server = trio.testing.lockstep_stream_pair()  # send_all waits for a reader
    stats = StageStats("metrics")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, _render(_registry()), stats)
        await client.send_all(GET)  # the server reads this, then blocks writing
    assert dict(stats.drops) == {"timeout": 1} and stats.packets == 0


async def test_a_failing_collector_is_a_500_not_a_crash() -> None:
    class Broken:
        def collect(self):
            raise RuntimeError("bug")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Broken())
    client, server = trio.testing.memory_stream_pair()
    stats = StageStats("metrics")
    await client.send_all(GET)
    await serve_connection(server, metrics_http._Renderer(registry), stats)
    assert (await client.receive_some()).startswith(b"HTTP/1.1 500")
    assert dict(stats.drops) == {"render_error": 1}


async def _get(address, request: bytes = GET) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(request)
        answer = b""
        while data := await stream.receive_some():
            answer += data
    return answer


async def test_the_server_bounds_its_connections_and_keeps_serving(nursery) -> None:
    """Real loopback TCP: junk does not stop it, and with every slot held by a silent
    client the next one is closed at once (counted); once they go it serves again."""
    spans = Spans()
    stats = spans.stage("metrics")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SpansCollector(spans, "dc"))
    address = await nursery.start(run_metrics_server, ("127.0.0.1", 0), registry, stats)
    assert (await _get(address, b"\x16\x03\x01 not http\r\n\r\n")).startswith(b"HTTP/1.1 400")
    first = await _get(address)
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert b'ntma_stage_drops_total{reason="bad_request",role="dc",stage="metrics"} 1.0' in first

    silent = [await trio.open_tcp_stream(*address) for _ in range(MAX_CONNECTIONS)]
    await trio.testing.wait_all_tasks_blocked()
    assert await _get(address) == b""  # closed without an answer
    assert stats.drops["too_many_connections"] == 1
    for stream in silent:
        await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert stats.drops["incomplete_request"] == MAX_CONNECTIONS
    assert (await _get(address)).startswith(b"HTTP/1.1 200 OK")
    await trio.testing.wait_all_tasks_blocked()  # it records a scrape once it has closed
    assert stats.packets == 2


async def test_a_taken_port_is_an_error_naming_metrics_listen(nursery) -> None:
    registry = CollectorRegistry(auto_describe=False)
    address = await nursery.start(run_metrics_server, ("127.0.0.1", 0), registry, StageStats("m"))
    with pytest.raises(OSError, match=r"metrics_listen 127\.0\.0\.1:\d+: "):
        await run_metrics_server(address, registry, StageStats("m"))
