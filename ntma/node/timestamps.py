"""The last handshake timestamp a node sent, kept in a small file beside its key
(docs/protocol.md 4.3): read at start into `initiations.last_timestamp`, so the node sends
max(clock, last + 1 ns) even across restarts and a clock that once ran ahead does not lock
it out at its DC, its peers and its RSes; written when it changes (at most once a second)
and at shutdown. The node and the adapter runners both use it.

File: `<key file>.ts`, one line, the 12-byte TAI64N timestamp in hex. A missing or unreadable
file means "none" (the clock alone), never an error; writes go to a temporary file renamed
over the old one, so a crash leaves the old value or the new one.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from ..proto.buffer import CodecError
from ..proto.fields_v2 import check_timestamp
from ..proto.initiate import Initiations

SAVE_EVERY_S = 1.0


class TimestampFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: bytes | None = None

    @classmethod
    def beside(cls, key_path: Path) -> TimestampFile:
        return cls(key_path.with_name(key_path.name + ".ts"))

    def load(self) -> bytes | None:
        try:
            stamp = check_timestamp(bytes.fromhex(self.path.read_text().strip()))
        except (OSError, ValueError, CodecError):
            return None
        self.saved = stamp
        return stamp

    def save(self, stamp: bytes | None) -> bool:
        """Write stamp if it differs from what the file holds; False if it could not."""
        if stamp is None or stamp == self.saved:
            return True
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(stamp.hex() + "\n")
            os.replace(tmp, self.path)
        except OSError:
            return False
        self.saved = stamp
        return True


def restore_timestamp(initiations: Initiations, key_path: Path | None) -> TimestampFile | None:
    """At start: the last timestamp sent before, if any (None: no key file to sit beside)."""
    if key_path is None:
        return None
    stamps = TimestampFile.beside(key_path)
    initiations.last_timestamp = stamps.load()
    return stamps


async def keep_saving(initiations: Initiations, stamps: TimestampFile, log) -> None:
    """Write the last timestamp sent whenever it changed, at most every SAVE_EVERY_S, and
    once more when cancelled (shutdown)."""
    failed = False
    try:
        while True:
            await trio.sleep(SAVE_EVERY_S)
            ok = stamps.save(initiations.last_timestamp)
            if not ok and not failed:
                log.warning("timestamp_not_saved", path=str(stamps.path))
            failed = not ok
    finally:
        stamps.save(initiations.last_timestamp)
