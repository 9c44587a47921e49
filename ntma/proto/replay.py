"""Sliding anti-replay window for 64-bit data counters (RFC 6479 idea, sans-IO).

A counter is accepted once: newer than anything seen moves the window forward;
within the window it is accepted if its bit is clear; older than the window is
rejected. The window is a Python int used as a bitmap.
"""

from __future__ import annotations

WINDOW_BITS = 8192  # issue 10: at least 8,000 packets may be reordered in flight


class ReplayWindow:
    __slots__ = ("_highest", "_bitmap", "_size", "_mask")

    def __init__(self, size: int = WINDOW_BITS) -> None:
        self._highest = -1
        self._bitmap = 0  # bit i set: counter (highest - i) seen
        self._size = size
        self._mask = (1 << size) - 1

    def check(self, counter: int) -> bool:
        """Would counter be accepted? Does not record it (verify the tag first)."""
        if counter > self._highest:
            return True
        offset = self._highest - counter
        return offset < self._size and not (self._bitmap >> offset) & 1

    def accept(self, counter: int) -> bool:
        """Record counter; False if it is a replay or too old."""
        if counter > self._highest:
            shift = counter - self._highest
            if shift >= self._size:  # a big jump: nothing in the old window stays relevant
                self._bitmap = 1
            else:
                self._bitmap = ((self._bitmap << shift) | 1) & self._mask
            self._highest = counter
            return True
        offset = self._highest - counter
        if offset >= self._size or (self._bitmap >> offset) & 1:
            return False
        self._bitmap |= 1 << offset
        return True
