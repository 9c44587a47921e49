"""The stage-to-stage channel: Trio memory-channel semantics, without needless yields."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

from ntma.stages.hop import open_hop_channel


async def test_items_arrive_in_order_and_async_for_ends_when_senders_close():
    send, recv = open_hop_channel(4)
    got = []
    async with trio.open_nursery() as nursery:

        async def consume():
            async with recv:
                async for item in recv:
                    got.append(item)

        nursery.start_soon(consume)
        async with send:
            extra = send.clone()
            for i in range(10):
                await send.send(i)
            await extra.send(10)
            await extra.aclose()
    assert got == list(range(11))


async def test_full_channel_blocks_sender_until_receiver_takes(autojump_clock):
    send, recv = open_hop_channel(2)
    send.send_nowait("a")
    send.send_nowait("b")
    with pytest.raises(trio.WouldBlock):
        send.send_nowait("c")
    sent = trio.Event()

    async def blocked_sender():
        await send.send("c")
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_sender)
        await trio.sleep(1)
        assert not sent.is_set()
        assert send.statistics().tasks_waiting_send == 1
        assert await recv.receive() == "a"
        await sent.wait()
    assert [recv.receive_nowait(), recv.receive_nowait()] == ["b", "c"]
    stats = recv.statistics()
    assert (stats.current_buffer_used, stats.max_buffer_size, stats.peak_buffer_used) == (0, 2, 2)


async def test_send_to_a_parked_receiver_does_not_yield():
    """The point of this channel: a hand-off to a waiting stage is not a checkpoint."""
    send, recv = open_hop_channel(1)
    results = []

    async def receiver():
        results.append(await recv.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        with trio.testing.assert_no_checkpoints():
            await send.send("x")  # rescheduled the receiver; we kept running
            send.send_nowait("y")  # buffered
        with trio.testing.assert_no_checkpoints():
            assert await recv.receive() == "y"
    assert results == ["x"]


async def test_wait_on_empty_channel_is_a_checkpoint_and_can_be_cancelled(autojump_clock):
    send, recv = open_hop_channel(1)
    with trio.move_on_after(1) as scope:
        await recv.receive()
    assert scope.cancelled_caught
    assert recv.statistics().tasks_waiting_receive == 0
    send.send_nowait(1)
    with trio.move_on_after(1) as scope:
        await send.send(2)  # full: waits, then cancelled
    assert scope.cancelled_caught
    assert send.statistics().tasks_waiting_send == 0
    assert recv.receive_nowait() == 1
    with pytest.raises(trio.WouldBlock):
        recv.receive_nowait()


async def test_closing_every_receiver_breaks_senders_and_drops_the_buffer(autojump_clock):
    send, recv = open_hop_channel(1)
    send.send_nowait(1)
    errors = []

    async def blocked_sender():
        try:
            await send.send(2)
        except trio.BrokenResourceError:
            errors.append("broken")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_sender)
        await trio.testing.wait_all_tasks_blocked()
        other = recv.clone()
        recv.close()
        assert send.statistics().tasks_waiting_send == 1  # one receiver is still open
        await other.aclose()
    assert errors == ["broken"]
    assert send.statistics().current_buffer_used == 0
    with pytest.raises(trio.BrokenResourceError):
        send.send_nowait(3)


async def test_closing_every_sender_ends_parked_receivers():
    send, recv = open_hop_channel(1)
    ended = []

    async def receiver():
        try:
            await recv.receive()
        except trio.EndOfChannel:
            ended.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        send.close()
    assert ended == [True, True]


async def test_closed_handle_raises_and_wakes_its_own_waiters():
    send, _ = full = open_hop_channel(1)
    send.send_nowait("fills it")
    _, recv = open_hop_channel(1)
    closed = []

    async def parked(op, *args):
        try:
            await op(*args)
        except trio.ClosedResourceError:
            closed.append(op.__name__)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(parked, recv.receive)
        nursery.start_soon(parked, send.send, "never taken")
        await trio.testing.wait_all_tasks_blocked()
        recv2 = recv.clone()  # another receiver: the channel stays open while recv closes
        send2 = send.clone()
        recv.close()
        send.close()
    assert sorted(closed) == ["receive", "send"]
    assert full[1].statistics().tasks_waiting_send == 0
    assert full[1].receive_nowait() == "fills it"  # send2 keeps that channel open
    for call in (recv.receive_nowait, recv.clone, send.clone):
        with pytest.raises(trio.ClosedResourceError):
            call()
    send.close()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        send.send_nowait(1)
    with pytest.raises(trio.WouldBlock):
        recv2.receive_nowait()
    send2.close()


async def test_zero_capacity_channel_hands_over_directly():
    send, recv = open_hop_channel(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, "direct")
        await trio.testing.wait_all_tasks_blocked()
        assert recv.statistics().tasks_waiting_send == 1
        assert recv.receive_nowait() == "direct"
    with pytest.raises(ValueError):
        open_hop_channel(-1)
    with pytest.raises(TypeError):
        open_hop_channel(1.5)


async def test_waking_a_waiter_is_protected_from_keyboard_interrupt(monkeypatch):
    """A Ctrl-C between taking a waiter and waking it would lose both; as in Trio's own
    channels, every wake-up happens with KeyboardInterrupt held back."""
    import ntma.stages.hop as hop

    protected = []

    def recording_reschedule(task, *args):
        protected.append(trio.lowlevel.currently_ki_protected())
        trio.lowlevel.reschedule(task, *args)

    async def quietly(op, *args):
        with contextlib.suppress(trio.EndOfChannel, trio.BrokenResourceError):
            await op(*args)

    monkeypatch.setattr(hop, "reschedule", recording_reschedule)
    send, recv = open_hop_channel(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(quietly, recv.receive)
        nursery.start_soon(quietly, recv.receive)
        await trio.testing.wait_all_tasks_blocked()
        send.send_nowait("x")  # wakes one receiver with the item
        send.close()  # wakes the other with EndOfChannel
    send, recv = open_hop_channel(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(quietly, send.send, "y")
        nursery.start_soon(quietly, send.send, "z")
        await trio.testing.wait_all_tasks_blocked()
        assert recv.receive_nowait() in ("y", "z")  # wakes one sender
        recv.close()  # wakes the other with BrokenResourceError
    assert protected == [True, True, True, True]
