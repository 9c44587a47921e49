"""The channel between two pipeline stages: a bounded Trio memory channel that does not
yield when it need not.

Trio's own memory channel makes every send and receive a scheduling point, so one hop
between stages costs the sender a trip through the run loop as well as the receiver:
about 6 us per hop at light load on the 2-core lab machine, against 3 us here (see
`ntma bench`, "channel_hop"). This channel has the same interface and close semantics
(clone, async with, EndOfChannel when every sender is closed, BrokenResourceError when
every receiver is) and the same bounded buffer with backpressure, but a send or receive
that can complete at once returns without yielding. A stage still yields whenever it
waits: on an empty inbox, a full outbox, or its socket. A busy stage therefore runs at
most until its inbox is empty or its outbox is full, which the queue sizes bound, and
cancellation is delivered at that wait. As in Trio's channels, a KeyboardInterrupt is
held back while a method changes the channel's state, so no item or waiter is lost.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, TypeVar

import trio
from outcome import Error, Value
from trio.lowlevel import (
    Abort,
    Task,
    current_task,
    enable_ki_protection,
    reschedule,
    wait_task_rescheduled,
)

T = TypeVar("T")


class _HopState(Generic[T]):
    __slots__ = (
        "capacity",
        "queue",
        "receivers",
        "senders",
        "open_senders",
        "open_receivers",
        "peak",
    )

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queue: deque[T] = deque()
        self.receivers: OrderedDict[Task, None] = OrderedDict()  # parked on an empty queue
        self.senders: OrderedDict[Task, T] = OrderedDict()  # parked on a full queue
        self.open_senders = 0
        self.open_receivers = 0
        self.peak = 0

    def statistics(self) -> trio.MemoryChannelStatistics:
        return trio.MemoryChannelStatistics(
            current_buffer_used=len(self.queue),
            max_buffer_size=self.capacity,
            open_send_channels=self.open_senders,
            open_receive_channels=self.open_receivers,
            tasks_waiting_send=len(self.senders),
            tasks_waiting_receive=len(self.receivers),
            peak_buffer_used=self.peak,
        )


class _HopEnd:
    """What both ends share: the state, this handle's closed flag and the tasks parked
    through it, closing, and the context-manager and statistics methods."""

    __slots__ = ("_state", "_closed", "_parked")

    def __init__(self, state: _HopState) -> None:
        self._state = state
        self._closed = False
        self._parked: set[Task] = set()  # tasks waiting in send()/receive() via this handle

    def _close_handle(self, waiting: OrderedDict) -> bool:
        """Mark closed and fail this handle's parked tasks that nobody woke yet (they are
        still in `waiting`). False if it was already closed."""
        if self._closed:
            return False
        self._closed = True
        for task in self._parked:
            if task in waiting:
                del waiting[task]
                reschedule(task, Error(trio.ClosedResourceError()))
        self._parked.clear()
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]

    @enable_ki_protection
    async def aclose(self) -> None:
        self.close()  # type: ignore[attr-defined]
        await trio.lowlevel.checkpoint()

    def statistics(self) -> trio.MemoryChannelStatistics:
        return self._state.statistics()


def _fail_all(waiting: OrderedDict, error: type[Exception]) -> None:
    """Wake every task in `waiting` with `error` (the other side is gone)."""
    for task in waiting:
        reschedule(task, Error(error()))
    waiting.clear()


class HopSendChannel(_HopEnd, trio.abc.SendChannel[T]):
    __slots__ = ()

    def __init__(self, state: _HopState[T]) -> None:
        super().__init__(state)
        state.open_senders += 1

    def _put_nowait(self, value: T) -> bool:
        """True if value was handed to a parked receiver or queued."""
        if self._closed:
            raise trio.ClosedResourceError
        state = self._state
        if not state.open_receivers:
            raise trio.BrokenResourceError
        if state.receivers:
            task, _ = state.receivers.popitem(last=False)
            reschedule(task, Value(value))
            return True
        if len(state.queue) < state.capacity:
            state.queue.append(value)
            if len(state.queue) > state.peak:
                state.peak = len(state.queue)
            return True
        return False

    @enable_ki_protection
    def send_nowait(self, value: T) -> None:
        if not self._put_nowait(value):
            raise trio.WouldBlock

    @enable_ki_protection
    async def send(self, value: T) -> None:
        if self._put_nowait(value):
            return
        task = current_task()
        self._parked.add(task)
        self._state.senders[task] = value

        def abort(_raise_cancel) -> Abort:
            self._parked.discard(task)
            self._state.senders.pop(task, None)
            return Abort.SUCCEEDED

        try:
            await wait_task_rescheduled(abort)
        finally:
            self._parked.discard(task)

    @enable_ki_protection
    def clone(self) -> HopSendChannel[T]:
        if self._closed:
            raise trio.ClosedResourceError
        return HopSendChannel(self._state)

    @enable_ki_protection
    def close(self) -> None:
        state = self._state
        if not self._close_handle(state.senders):
            return
        state.open_senders -= 1
        if not state.open_senders:
            _fail_all(state.receivers, trio.EndOfChannel)


class HopReceiveChannel(_HopEnd, trio.abc.ReceiveChannel[T]):
    __slots__ = ()

    def __init__(self, state: _HopState[T]) -> None:
        super().__init__(state)
        state.open_receivers += 1

    def _take(self) -> tuple[bool, T | None]:
        """(True, item) if an item was there; (False, None) if receive must wait."""
        if self._closed:
            raise trio.ClosedResourceError
        state = self._state
        if state.queue:
            value = state.queue.popleft()
            if state.senders:  # room now: the longest-waiting sender's item joins the queue
                task, waiting_value = state.senders.popitem(last=False)
                state.queue.append(waiting_value)
                reschedule(task)
            return True, value
        if state.senders:  # zero-capacity channel: take straight from a sender
            task, value = state.senders.popitem(last=False)
            reschedule(task)
            return True, value
        if not state.open_senders:
            raise trio.EndOfChannel
        return False, None

    @enable_ki_protection
    def receive_nowait(self) -> T:
        ready, value = self._take()
        if not ready:
            raise trio.WouldBlock
        return value  # type: ignore[return-value]

    @enable_ki_protection
    async def receive(self) -> T:
        ready, value = self._take()
        if ready:
            return value  # type: ignore[return-value]
        task = current_task()
        self._parked.add(task)
        self._state.receivers[task] = None

        def abort(_raise_cancel) -> Abort:
            self._parked.discard(task)
            self._state.receivers.pop(task, None)
            return Abort.SUCCEEDED

        try:
            return await wait_task_rescheduled(abort)
        finally:
            self._parked.discard(task)

    @enable_ki_protection
    def clone(self) -> HopReceiveChannel[T]:
        if self._closed:
            raise trio.ClosedResourceError
        return HopReceiveChannel(self._state)

    @enable_ki_protection
    def close(self) -> None:
        state = self._state
        if not self._close_handle(state.receivers):
            return
        state.open_receivers -= 1
        if not state.open_receivers:
            _fail_all(state.senders, trio.BrokenResourceError)
            state.queue.clear()


def open_hop_channel(capacity: int) -> tuple[HopSendChannel, HopReceiveChannel]:
    """A bounded channel of `capacity` items (batches) between two stages."""
    if not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    if capacity < 0:
        raise ValueError("capacity must be >= 0")
    state: _HopState = _HopState(capacity)
    return HopSendChannel(state), HopReceiveChannel(state)
