"""The runner's timestamp file (ntma/node/timestamps.py): the last init timestamp a node
sent survives a restart, so it sends max(clock, last + 1 ns) (docs/protocol.md 4.3)."""

from __future__ import annotations

import os

import structlog
import trio
from structlog.testing import capture_logs

from ntma.node.timestamps import TimestampFile, keep_saving, restore_timestamp
from ntma.proto.crypto import StaticKey
from ntma.proto.initiate import Indexes, Initiations, next_timestamp
from ntma.proto.noise import tai64n


def _inits() -> Initiations:
    return Initiations(StaticKey.generate(), Indexes(os.urandom))


def test_the_file_sits_beside_the_key_and_round_trips(tmp_path):
    stamps = TimestampFile.beside(tmp_path / "mn.key")
    assert stamps.path == tmp_path / "mn.key.ts"
    assert stamps.load() is None  # no file yet: the clock alone
    stamp = tai64n(1_700_000_000.5)
    assert stamps.save(stamp) and stamps.path.read_text() == stamp.hex() + "\n"
    assert TimestampFile.beside(tmp_path / "mn.key").load() == stamp


def test_a_broken_file_means_none(tmp_path):
    path = tmp_path / "mn.key.ts"
    for junk in ("", "zz", "00" * 12, "ab" * 11, (tai64n(1.0) + b"x").hex()):
        path.write_text(junk)
        assert TimestampFile(path).load() is None, junk


def test_a_restored_timestamp_ahead_of_the_clock_is_continued(tmp_path):
    ahead = tai64n(1_800_000_000.0)  # the clock once ran ahead, then was set back
    TimestampFile.beside(tmp_path / "mn.key").save(ahead)
    inits = _inits()
    restore_timestamp(inits, tmp_path / "mn.key")
    assert inits.last_timestamp == ahead
    following = next_timestamp(1_700_000_000.0, inits.last_timestamp)
    assert following > ahead and int.from_bytes(following[8:], "big") == 1
    assert restore_timestamp(_inits(), None) is None  # no key file, nothing kept


async def test_saved_when_it_changes_and_at_shutdown(tmp_path, autojump_clock):
    inits = _inits()
    stamps = restore_timestamp(inits, tmp_path / "mn.key")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_saving, inits, stamps, None)
        inits.last_timestamp = tai64n(1_700_000_000.0)
        await trio.sleep(1.5)
        assert stamps.path.read_text().strip() == tai64n(1_700_000_000.0).hex()
        inits.last_timestamp = tai64n(1_700_000_001.0)
        nursery.cancel_scope.cancel()  # shutdown: written before the second passes
    assert TimestampFile(stamps.path).load() == tai64n(1_700_000_001.0)


async def test_a_write_failure_is_logged_once(tmp_path, autojump_clock):
    inits = _inits()
    stamps = TimestampFile(tmp_path / "gone" / "mn.key.ts")  # no such directory
    inits.last_timestamp = tai64n(1_700_000_000.0)
    with capture_logs() as logs:
        with trio.move_on_after(3.5):
            await keep_saving(inits, stamps, structlog.get_logger())
    assert [e["event"] for e in logs] == ["timestamp_not_saved"]
