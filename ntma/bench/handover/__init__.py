"""`ntma bench --handover`: what a user notices when an end moves, restarts or loses its
NAT mapping, on the namespace lab (issue 11, item 8), beside wireguard-go's roaming.

Per scenario (`scenarios.py`), one lab and N runs; per run, from the client (mn, or the GN
behind the adapter) to cn across the event: the handover gap of a 100 pps UDP echo stream
(`ntma.lab.traffic`), the time until the DC has the mover again (its `node_moved` or
`node_registered`), and whether a TCP download finished intact on its one connection.
Median and p99 per scenario, beside the issue's targets (`settings.TARGETS`).

    settings    ports, rates, timings, wireguard-go's names, the targets
    scenarios   the scenarios as data
    stats       order statistics, targets and checks (pure)
    logtimes    log events on the monotonic clock
    traffic     the servers in cn, the stream and the download, pings
    wireguard   wireguard-go between mn and cn
    run         run_handover_bench
    markdown    format_handover_report
    cli         the `ntma bench` options
"""

from __future__ import annotations

from .markdown import format_handover_report
from .run import run_handover_bench
from .scenarios import SCENARIO_NAMES, SCENARIOS, Scenario
from .stats import check_gap, check_tcp, gap_target, median, nearest_rank, summarise

__all__ = [
    "SCENARIOS",
    "SCENARIO_NAMES",
    "Scenario",
    "check_gap",
    "check_tcp",
    "format_handover_report",
    "gap_target",
    "median",
    "nearest_rank",
    "run_handover_bench",
    "summarise",
]
