"""The netwatch stage on a fake netlink socket (autojump clock): a change at a burst's first
notice and one when it settles,
excluded interfaces (also once they vanished), coalescing, overruns, junk, and no
netlink at all. The netns tests, on a real kernel, are in test_netwatch_netns.py."""

from __future__ import annotations

import functools

import pytest
import trio
from structlog.testing import capture_logs

from ntma.io.netlink import OVERRUN_MESSAGE, RTM_DELADDR
from ntma.observe.spans import StageStats
from ntma.stages.channels import NETWATCH_QUEUE
from ntma.stages.hop import open_hop_channel
from ntma.stages.netwatch import InterfaceNames, NetChange, run_netwatch

from .netlink_msgs import addr_msg, link_msg, route_msg

# Interface indexes no host has (lookups fail), so names come only from link notices.
WLAN, TUN, GONE = 900_001, 900_002, 900_003


class FakeNetlink:
    """Datagrams put in with `notify` come out of read_batch, one batch per notify."""

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[list[bytes]](16)
        self.closed = False

    def notify(self, *datagrams: bytes) -> None:
        self._send.send_nowait(list(datagrams))

    async def read_batch(self, max_datagrams: int = 64) -> list[bytes]:
        return await self._recv.receive()

    async def __aenter__(self) -> FakeNetlink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True


@pytest.fixture
def world():
    return FakeNetlink(), StageStats("netwatch")


async def start(nursery, world, exclude=frozenset({"ntm0"}), queue=NETWATCH_QUEUE):
    nl, stats = world
    send, recv = open_hop_channel(queue)
    watching = await nursery.start(
        functools.partial(run_netwatch, send, stats, exclude=exclude, open_socket=lambda: nl)
    )
    assert watching is True
    nl.notify(link_msg(WLAN, "wlan0"), link_msg(TUN, "ntm0"))  # names, before anything
    return recv


async def next_change(recv, within: float = 1.0) -> NetChange | None:
    with trio.move_on_after(within):
        return await recv.receive()
    return None


async def test_a_burst_is_a_change_at_once_and_one_when_it_settles(world, autojump_clock):
    nl, stats = world
    async with trio.open_nursery() as nursery:
        recv = await start(nursery, world)
        assert (await next_change(recv)).kinds == {"link"}  # the naming notices themselves
        await trio.sleep(0.1)  # past their settle window
        began = trio.current_time()
        nl.notify(addr_msg(WLAN, "10.0.0.9", kind=RTM_DELADDR))
        first = await next_change(recv)  # at once: the consumer re-announces without waiting
        assert first == NetChange(began, frozenset({"addr"}), frozenset({"wlan0"}))
        assert trio.current_time() == pytest.approx(began)
        await trio.sleep(0.01)
        nl.notify(addr_msg(WLAN, "10.0.0.7"), route_msg(2, "10.0.0.0", 24, WLAN))
        await trio.sleep(0.01)
        nl.notify(route_msg(2, None, 0, WLAN, "10.0.0.1"))
        settled = await next_change(recv)  # the rest of the burst, once it settled
        assert settled.kinds == {"addr", "route"} and settled.ifnames == {"wlan0"}
        assert trio.current_time() - began == pytest.approx(0.05)
        assert await next_change(recv) is None
        nl.notify(link_msg(WLAN, "wlan0"))  # after the window: a change of its own
        assert (await next_change(recv)).kinds == {"link"}
        nursery.cancel_scope.cancel()
    assert stats.counters["changes"] == 4 and stats.packets == 7  # notices
    assert nl.closed


async def test_excluded_interfaces_give_no_change_even_once_vanished(world, autojump_clock):
    nl, stats = world
    async with trio.open_nursery() as nursery:
        recv = await start(nursery, world)
        await next_change(recv)
        nl.notify(addr_msg(TUN, "10.99.0.5", 16), route_msg(2, "10.99.0.0", 16, TUN))
        nl.notify(link_msg(TUN, "ntm0", kind=17))  # DELLINK: ntm0 is gone; its name stays known
        nl.notify(route_msg(2, "10.99.0.0", 16, TUN, kind=25))
        assert await next_change(recv) is None
        assert stats.counters["excluded"] == 5  # with the first naming notice
        nl.notify(addr_msg(GONE, "10.7.7.7", kind=RTM_DELADDR))  # never named: not excluded
        noticed = trio.current_time()
        assert await next_change(recv) == NetChange(noticed, frozenset({"addr"}), frozenset())
        nursery.cancel_scope.cancel()


async def test_changes_while_one_is_pending_coalesce(world, autojump_clock):
    nl, stats = world
    async with trio.open_nursery() as nursery:
        recv = await start(nursery, world)  # its naming burst is the pending change
        await trio.sleep(1)
        for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            nl.notify(addr_msg(WLAN, address))
            await trio.sleep(1)
        assert stats.counters["coalesced"] == 3
        assert (await next_change(recv)).kinds == {"link"}
        assert await next_change(recv) is None  # the consumer re-reads the state: nothing lost
        nl.notify(addr_msg(WLAN, "10.0.0.4"))
        assert (await next_change(recv)).kinds == {"addr"}
        nursery.cancel_scope.cancel()


async def test_an_overrun_is_a_change(world, autojump_clock):
    nl, stats = world
    async with trio.open_nursery() as nursery:
        recv = await start(nursery, world)
        await next_change(recv)
        nl.notify(OVERRUN_MESSAGE)
        assert (await next_change(recv)).kinds == {"overrun"}
        assert stats.counters["overrun"] == 1
        nursery.cancel_scope.cancel()


async def test_junk_is_counted_and_changes_nothing(world, autojump_clock):
    nl, stats = world
    async with trio.open_nursery() as nursery:
        recv = await start(nursery, world)
        await next_change(recv)
        nl.notify(b"\xff" * 40, b"\x01\x02\x03")
        assert await next_change(recv) is None
        assert stats.drops["malformed"] == 2
        nursery.cancel_scope.cancel()


async def test_the_stage_ends_when_the_consumer_is_gone(world, autojump_clock):
    nl, _ = world
    async with trio.open_nursery() as nursery:
        recv = await start(nursery, world)
        await recv.aclose()
    assert nl.closed  # the naming burst found nobody listening: the nursery could end


async def test_without_netlink_it_warns_once_and_returns(autojump_clock):
    def refused():
        raise PermissionError(13, "Permission denied")

    send, recv = open_hop_channel(NETWATCH_QUEUE)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            watching = await nursery.start(
                functools.partial(run_netwatch, send, StageStats("netwatch"), open_socket=refused)
            )
    assert watching is False
    assert [(e["event"], e["log_level"]) for e in logs] == [("netwatch_unavailable", "warning")]
    with pytest.raises(trio.EndOfChannel):  # the consumer's loop ends
        await recv.receive()


def test_interface_names_remember_the_vanished_and_stay_bounded():
    names = InterfaceNames(limit=4)
    assert names.name(1) == "lo"  # from the kernel, now
    for n in range(10):
        names.learn(GONE + n, f"if{n}")
    assert names.name(GONE + 9) == "if9" and names.name(GONE) is None
    assert names.name(0) is None
