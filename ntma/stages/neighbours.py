"""The neighbour responder: ARP for IPv4; Neighbor Discovery and Router Advertisements for
IPv6 (proto/gnlink6.py). One task, as one kind of work on one channel (frames in, frames
out to inject): ARP requests, NS, RS, and a device's first packets from an address not yet
learnt. The multicast RAs are this task's own timer (RaTimer): it waits on its inbox only
until the next RA is due.

A device's newly learnt IPv6 address is asked of the DC for its name (ask_name with vip6),
so the DC answers AAAA and directs tunnels with it.

Overload: the inbox drops the newest batch when full (classify's send_or_drop), as for
the other control channels; the RA timer does not depend on the inbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from ..observe.spans import StageStats
from ..proto.buffer import CodecError
from ..proto.devices import Device
from ..proto.ether import ETH_P_IPV6, mac_text
from ..proto.ether6 import ip6_text
from ..proto.gnlink import GnLink, answer_arp
from ..proto.gnlink6 import RaTimer, answer_nd
from .channels import Batch, Frames

_IPV6 = ETH_P_IPV6.to_bytes(2, "big")
_POLL_S = 1.0  # how often an idle responder looks whether the link has IPv6 yet


def answer_arps(
    frames: list[bytes],
    link: GnLink,
    stats: StageStats,
    timer: RaTimer | None = None,
    learnt: list[Device] | None = None,
    now: float = 0.0,
) -> list[bytes]:
    """The responder's work on one batch: the replies (refusals counted). IPv6 frames go
    to ND: an RS brings `timer`'s next RA forward; devices whose IPv6 address is new are
    appended to `learnt`."""
    replies = []
    for frame in frames:
        try:
            if frame[12:14] == _IPV6:
                outcome = answer_nd(frame, link)
                replies += outcome.replies
                if outcome.reason:
                    stats.drop(outcome.reason)
                if outcome.solicited and timer is not None:
                    timer.solicited(now)
                if outcome.learnt is not None and learnt is not None:
                    learnt.append(outcome.learnt)
                continue
            reply = answer_arp(frame, link)
        except CodecError:
            stats.drop("malformed")
            continue
        if reply is None:
            stats.drop("not_answered")
        else:
            replies.append(reply)
    return replies


async def run_arp_responder(
    inbox: trio.abc.ReceiveChannel[Frames],
    inject: trio.abc.SendChannel[Batch],
    link: GnLink,
    stats: StageStats,
    ask_name: Callable[[str, str], object] = lambda fqdn, vip6: None,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    log = structlog.get_logger().bind(stage="arp")
    timer = RaTimer()
    async with inbox, inject:
        task_status.started()
        while True:
            now = trio.current_time()
            if link.v6 is not None:
                timer.start(now)
            wake = timer.next_at if timer.next_at is not None else now + _POLL_S
            frames = None
            with trio.move_on_at(wake):
                frames = await inbox.receive()
            now = trio.current_time()
            replies: list[bytes] = []
            if frames is not None:
                started, learnt = time.perf_counter_ns(), []
                replies = answer_arps(frames, link, stats, timer, learnt, now)
                for device in learnt:
                    _ask_for(device, ask_name, log)
                stats.record(len(replies), sum(map(len, replies)), started)
            if link.v6 is not None and timer.due(now):
                replies.append(link.v6.multicast_advertisement())
                timer.sent(now)
            if replies:
                arrived = frames.arrived if frames is not None else time.perf_counter_ns()
                await inject.send(Frames(replies, arrived, frames.span if frames else None))


def _ask_for(device: Device, ask_name: Callable[[str, str], object], log) -> None:
    assert device.vip6 is not None
    vip6 = ip6_text(device.vip6)
    log.info("device_ipv6", device=device.fqdn, mac=mac_text(device.mac), vip6=vip6)
    ask_name(device.fqdn, vip6)
