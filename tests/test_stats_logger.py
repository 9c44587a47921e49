"""The stats logger: one summary line per stage per interval, at a fixed rate."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from ntma.observe.spans import Spans, run_stats_logger


async def test_one_summary_per_interval_none_at_start(autojump_clock):
    spans = Spans()
    spans.stage("udp_send").count("sent")
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_stats_logger, spans, 10.0)
            await trio.sleep(35.0)
            nursery.cancel_scope.cancel()
    lines = [e for e in logs if e["event"] == "stage_stats"]
    assert len(lines) == 3 and {e["stage"] for e in lines} == {"udp_send"}
