"""Sliding anti-replay window for 64-bit transport counters (RFC 6479, sans-IO).

A counter is accepted once: newer than anything seen moves the window forward;
within the window (less than `size` behind the highest) it is accepted if its bit is
clear; older than the window is rejected.

The bitmap is a ring of 64-bit words (RFC 6479): moving forward clears only the words
the window enters, so the per-packet cost does not grow with the window (v2's 8,192
counters cost what v1's 2,048 did with one big shifted integer). The ring is made on
the first accepted counter, so windows that never receive (a keypair's send side)
cost nothing.
"""

from __future__ import annotations

WINDOW_BITS = 8192


class ReplayWindow:
    __slots__ = ("_highest", "_words", "_size", "_count")

    def __init__(self, size: int = WINDOW_BITS) -> None:
        self._highest = -1
        self._size = size
        self._count = size // 64 + 2  # words: enough for any `size` counters plus one
        self._words: list[int] | None = None

    @property
    def highest(self) -> int:
        """The highest counter accepted (-1: none yet)."""
        return self._highest

    def check(self, counter: int) -> bool:
        """Would counter be accepted? Does not record it (verify the tag first)."""
        highest = self._highest
        if counter > highest:
            return True
        if highest - counter >= self._size:
            return False
        words = self._words
        assert words is not None  # highest >= 0: something was accepted
        return not (words[(counter >> 6) % self._count] >> (counter & 63)) & 1

    def accept(self, counter: int) -> bool:
        """Record counter; False if it is a replay or too old."""
        highest = self._highest
        if counter > highest:  # the common case: in order, often the same word
            block = counter >> 6
            if block != highest >> 6:
                self._advance(highest >> 6, block)
            self._highest = counter
            words = self._words
            assert words is not None
            words[block % self._count] |= 1 << (counter & 63)  # a new counter's bit is clear
            return True
        if highest - counter >= self._size:
            return False
        words = self._words
        assert words is not None
        index, bit = (counter >> 6) % self._count, 1 << (counter & 63)
        if words[index] & bit:
            return False
        words[index] |= bit
        return True

    def _advance(self, top: int, block: int) -> None:
        """Clear the words the window enters, from block top + 1 to block."""
        count = self._count
        words = self._words
        if words is None or block - top >= count:
            self._words = [0] * count
            return
        for b in range(top + 1, block + 1):
            words[b % count] = 0
