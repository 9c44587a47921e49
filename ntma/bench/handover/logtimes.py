"""When the daemons logged what, on the monotonic clock the move records and the echo
stream use: a log line's "timestamp" is UTC wall-clock time (structlog, ISO 8601), turned
into `time.monotonic()` with the offset between the two clocks read at the event.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from ...lab import LogEvent, log_events


def clock_offset() -> float:
    """time.time() - time.monotonic(), now (add to a monotonic time to get wall time)."""
    return time.time() - time.monotonic()


def event_monotonic(event: LogEvent, offset: float) -> float | None:
    """The event's "timestamp" on the monotonic clock; None without a readable one."""
    stamp = event.get("timestamp")
    if not isinstance(stamp, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - offset
    return None


def first_after(
    events: Iterable[LogEvent],
    t: float,
    offset: float,
    match: Callable[[LogEvent], bool],
) -> tuple[float, LogEvent] | None:
    """The first matching event logged at or after monotonic time t, with its time."""
    for event in events:
        at = event_monotonic(event, offset)
        if at is not None and at >= t and match(event):
            return at, event
    return None


def since_event(
    log: Path, log_offset: int, t: float, clock: float, match: Callable[[LogEvent], bool]
) -> tuple[float, str] | None:
    """Seconds from t to the first matching event of `log` (after byte `log_offset`), and
    that event's name."""
    found = first_after(log_events(log, log_offset), t, clock, match)
    return None if found is None else (round(found[0] - t, 4), str(found[1].get("event")))


def dc_reregistered(fqdn: str) -> Callable[[LogEvent], bool]:
    """The DC has `fqdn` at its new endpoint: node_moved, or a registration."""
    return lambda e: e.get("fqdn") == fqdn and e.get("event") in ("node_moved", "node_registered")


def dc_route_updated(fqdn: str) -> Callable[[LogEvent], bool]:
    return lambda e: (
        e.get("event") == "route_updated"
        and fqdn
        in (
            e.get("requester"),
            e.get("target"),
        )
    )


def named(name: str) -> Callable[[LogEvent], bool]:
    return lambda e: e.get("event") == name
