"""The one JSON-log reader: complete lines only, from an offset, non-JSON skipped."""

from __future__ import annotations

import json
from pathlib import Path

from ntma.observe.logread import events_named, log_events, read_events


def test_reads_complete_json_object_lines_from_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    log.write_bytes(
        b'{"event": "a", "n": 1}\n'
        b"Traceback (most recent call last):\n"
        b"[1, 2]\n"  # JSON, but not an event
        b'{"event": "b"\n'  # torn by a crash, then the next line
        b"\xff\xfe not utf-8\n"
        b'{"event": "c"}\n'
        b'{"event": "d"}'  # still being written: no newline yet
    )
    events, offset = read_events(log)
    assert events == [{"event": "a", "n": 1}, {"event": "c"}]
    assert offset == log.stat().st_size - len(b'{"event": "d"}')
    assert read_events(log, offset) == ([], offset)  # the torn line waits for its newline
    with log.open("ab") as f:
        f.write(b"\n" + json.dumps({"event": "e"}).encode() + b"\n")
    events, end = read_events(log, offset)
    assert events == [{"event": "d"}, {"event": "e"}] and end == log.stat().st_size
    assert log_events(log) == [{"event": e} if e != "a" else {"event": "a", "n": 1} for e in "acde"]
    assert events_named(log, "c", "e") == [{"event": "c"}, {"event": "e"}]
    assert events_named(log, "a", offset=offset) == []


def test_a_missing_file_is_no_events(tmp_path: Path) -> None:
    assert read_events(tmp_path / "none.log", 42) == ([], 42)
    assert log_events(tmp_path / "none.log") == []
