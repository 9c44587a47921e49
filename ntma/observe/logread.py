"""Reading the JSON log lines every role writes (one object per line, see `log.py`).

One reader for the lab, its status, the demo, the benchmarks and the tests. Only complete
lines count: a line still being written (no newline yet) is left for the next read, so a
caller that polls passes the returned offset back in and never sees half an event. Lines
that are not a JSON object (a traceback, a tool's own output) are skipped.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

LogEvent = dict[str, Any]


def read_events(path: str | Path, offset: int = 0) -> tuple[list[LogEvent], int]:
    """JSON objects in the complete lines of `path` after byte `offset`, and the offset just
    after the last complete line (pass it back to read only what came later). A missing or
    unreadable file gives no events and the same offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError):  # not JSON, or not UTF-8
            obj = json.loads(line)
            if isinstance(obj, dict):
                events.append(obj)
    return events, offset + end


def log_events(path: str | Path, offset: int = 0) -> list[LogEvent]:
    """Every JSON object logged to `path` after `offset` (complete lines only)."""
    return read_events(path, offset)[0]


def events_named(path: str | Path, *names: str, offset: int = 0) -> list[LogEvent]:
    """The events of `path` (after `offset`) whose "event" is one of `names`, oldest first."""
    return [e for e in log_events(path, offset) if e.get("event") in names]
