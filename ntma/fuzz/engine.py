"""A seeded mutation engine for byte strings (no coverage feedback: fast and reproducible).

One input is a seed from the target's corpus with one to four mutations stacked, or now
and then plain random bytes. The same seed value gives the same inputs in the same order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

# Values that sit on the edges of u8/u16/u32 length and count fields, and of the
# flag bits our codecs test (DNS label types 0x40/0x80/0xC0, BOOTP op, IPv4 version).
BOUNDARY_U8 = (0x00, 0x01, 0x02, 0x04, 0x06, 0x0F, 0x10, 0x3F, 0x40, 0x45, 0x7F, 0x80, 0xC0)
BOUNDARY_U8 += (0xFE, 0xFF)
BOUNDARY_U16 = (0, 1, 2, 0x3F, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0x1FF, 0x7FFF, 0x8000, 0xC00C)
BOUNDARY_U16 += (0xFFFE, 0xFFFF)
BOUNDARY_U32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
MAX_INPUT = 4096  # default cap: longer inputs only cost time, every codec refuses them early
INFLATE_SIZES = (17, 64, 254, 255, 256, 1024, 16_384, 65_000, 65_535)  # a field made big
# What fills a grown text field: ASCII, a character whose lower case is longer in UTF-8
# (U+0130 becomes "i" + U+0307), and bytes that are not UTF-8 at all.
INFLATE_FILL = (b"a", "\u0130".encode(), b"\xff")
RANDOM_SHARE = 0.03  # of inputs that are plain random bytes


class Mutator:
    """Inputs derived from `seeds`, reproducible from `seed`."""

    def __init__(self, seeds: Sequence[bytes], seed: int, max_input: int = MAX_INPUT) -> None:
        self.seeds = [bytes(s) for s in seeds] or [b""]
        self.rng = random.Random(seed)
        self.max_input = max_input
        self._ops: list[Callable[[bytearray], None]] = [
            self._flip_bit,
            self._set_byte,
            self._set_boundary_u8,
            self._set_boundary_u16,
            self._set_boundary_u32,
            self._insert_bytes,
            self._delete_bytes,
            self._truncate,
            self._duplicate_chunk,
            self._splice,
            self._length_near_actual,
            self._inflate,
        ]

    def next_input(self) -> bytes:
        rng = self.rng
        if rng.random() < RANDOM_SHARE:
            return rng.randbytes(rng.choice((0, 1, 2, 4, 8, 16, 48, 64, 100, 300, 600)))
        data = bytearray(rng.choice(self.seeds))
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            rng.choice(self._ops)(data)
        return bytes(data[: self.max_input])

    # --- mutations, each in place -----------------------------------------------------

    def _pos(self, data: bytearray, width: int = 1) -> int | None:
        if len(data) < width:
            return None
        return self.rng.randrange(len(data) - width + 1)

    def _flip_bit(self, data: bytearray) -> None:
        at = self._pos(data)
        if at is not None:
            data[at] ^= 1 << self.rng.randrange(8)

    def _set_byte(self, data: bytearray) -> None:
        at = self._pos(data)
        if at is not None:
            data[at] = self.rng.randrange(256)

    def _set_boundary_u8(self, data: bytearray) -> None:
        at = self._pos(data)
        if at is not None:
            data[at] = self.rng.choice(BOUNDARY_U8)

    def _set_boundary_u16(self, data: bytearray) -> None:
        at = self._pos(data, 2)
        if at is not None:
            data[at : at + 2] = self.rng.choice(BOUNDARY_U16).to_bytes(2, "big")

    def _set_boundary_u32(self, data: bytearray) -> None:
        at = self._pos(data, 4)
        if at is not None:
            data[at : at + 4] = self.rng.choice(BOUNDARY_U32).to_bytes(4, "big")

    def _length_near_actual(self, data: bytearray) -> None:
        """A u8 or u16 set to what is left after it, give or take one: lengths that
        almost fit find off-by-one errors."""
        at = self._pos(data, 2)
        if at is None:
            return
        left = len(data) - at + self.rng.choice((-3, -2, -1, 0, 1))
        if self.rng.random() < 0.5:
            data[at] = max(0, min(255, left - 1))
        else:
            data[at : at + 2] = max(0, min(0xFFFF, left - 2)).to_bytes(2, "big")

    def _inflate(self, data: bytearray) -> None:
        """Treat the bytes at a random offset as a length-prefixed field and make it big: a
        u16 length with its bytes, or a u8 count of 7-byte items (an endpoint's size). When
        it was a real field the message stays well-formed, which is the only way to reach
        the limits on long names and many endpoints."""
        at = self._pos(data, 2)
        if at is None:
            return
        size = min(self.rng.choice(INFLATE_SIZES), self.max_input)
        if size <= 255 and self.rng.random() < 0.5:
            old_end = at + 1 + 7 * data[at]
            item = bytes(data[at + 1 : at + 8])
            data[at : min(old_end, len(data))] = bytes((size,)) + item * size
        else:
            old_end = at + 2 + int.from_bytes(data[at : at + 2], "big")
            unit = self.rng.choice(INFLATE_FILL)
            fill = unit * (size // len(unit))
            data[at : min(old_end, len(data))] = len(fill).to_bytes(2, "big") + fill

    def _insert_bytes(self, data: bytearray) -> None:
        at = self.rng.randrange(len(data) + 1)
        size = self.rng.choice((1, 1, 2, 4, 8, 32, 255))
        fill = self.rng.choice((b"\0", b"\xff", b"A", None))
        chunk = self.rng.randbytes(size) if fill is None else fill * size
        data[at:at] = chunk

    def _delete_bytes(self, data: bytearray) -> None:
        at = self._pos(data)
        if at is not None:
            del data[at : at + self.rng.choice((1, 1, 2, 4, 16))]

    def _truncate(self, data: bytearray) -> None:
        if data:
            del data[self.rng.randrange(len(data)) :]

    def _duplicate_chunk(self, data: bytearray) -> None:
        at = self._pos(data)
        if at is None:
            return
        chunk = data[at : at + self.rng.choice((2, 4, 8, 16, 64))]
        times = self.rng.choice((1, 2, 8, 64))
        data[at:at] = chunk * times

    def _splice(self, data: bytearray) -> None:
        """Head of this input, tail of another seed."""
        other = self.rng.choice(self.seeds)
        cut = self.rng.randrange(len(data) + 1)
        data[cut:] = other[self.rng.randrange(len(other) + 1) :]
