"""The loop every sink stage shares: write each batch, count what the OS refused."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import trio

from ..observe.spans import StageStats
from .channels import Batch


async def write_batches(
    inbox: trio.abc.ReceiveChannel[Batch],
    write: Callable[[list], Awaitable[int]],
    stats: StageStats,
    refused: str,
    prepare: Callable[[Batch], list] | None = None,
) -> None:
    """For each batch: prepare it (optional), write it, record the time per item and
    count items the writer did not take under `refused`. A batch on a measured path
    records the path's latency and the time in the write call itself. Bytes are counted from the
    first element of tuple items (datagram, address) or from the items themselves."""
    async for batch in inbox:
        started = time.perf_counter_ns()
        items = prepare(batch) if prepare is not None else batch
        if not items:
            continue
        sending = time.perf_counter_ns()
        written = await write(items)
        sent = time.perf_counter_ns()
        if written < len(items):
            stats.drop(refused, len(items) - written)
        first = items[0]
        nbytes = sum(len(i[0]) for i in items) if isinstance(first, tuple) else sum(map(len, items))
        stats.record(written, nbytes, started, sent)
        span = batch.span
        if span is not None and written:
            span.record(sent - batch.arrived, written, sent - sending)
