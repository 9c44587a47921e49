"""Queue sizes and overload policies for the pipeline's memory channels.

Every channel between stages carries one item type, Batch (a list with an arrival
stamp and the path it is measured on), so one hop is paid per batch, not per packet
(the DNS responder's direction requests, names, go through signalling.DirectionBroker). The
channels themselves are `hop.open_hop_channel`: bounded Trio-style memory channels whose
hand-off to a waiting stage costs one scheduler pass, not two.
- Data channels (tun -> classify -> encapsulate -> udp send; udp receive ->
  decapsulate -> tun write) block when full: backpressure reaches the socket or
  TUN read, and the kernel drops, as it would for a slow interface.
- The signalling channel drops the newest batch when full (counted): a flood of
  handshakes must not stall the data path; retransmission recovers real ones.
- Direction requests from the DNS responder drop the newest when full (the
  query then times out with SERVFAIL).
- Network changes from netwatch hold one pending NetChange; a further one while it
  waits is dropped (counted `coalesced`): the consumer re-reads the kernel's state
  itself, so the one pending change already stands for every later one.
"""

from __future__ import annotations

import trio

from ..observe.spans import PathStats, StageStats

DATA_QUEUE_BATCHES = 16
SIGNAL_QUEUE_BATCHES = 64
CONTROL_QUEUE_BATCHES = 32  # ARP, DHCP, DNS from the GN: drop newest when full
DIRECTION_QUEUE = 64
NETWATCH_QUEUE = 1  # NetChange items, not batches: drop newest (coalesce) when full


class Batch(list):
    """Every channel's item: a list of packets, datagrams or (tunnel, packet) pairs that
    carries when its first stage received it (perf_counter_ns; 0 if nobody stamped it)
    and the path whose latency the last stage records (spans.PathStats; None: not
    measured). Stages read both directly, so every producer sends a Batch."""

    __slots__ = ("arrived", "span")
    framed = False  # a class attribute (free to create): see Frames

    def __init__(self, items=(), arrived: int = 0, span: PathStats | None = None) -> None:
        list.__init__(self, items)  # not super(): one lookup less, per batch on every hop
        self.arrived = arrived
        self.span = span


class Frames(Batch):
    """A batch of complete Ethernet frames for the GN (ARP and DHCP replies); on the
    inject channel every other batch holds IPv4 packets that inject frames for the GN."""

    __slots__ = ()
    framed = True


def send_or_drop(
    channel: trio.abc.SendChannel, item, stats: StageStats, reason: str, count: int = 1
) -> bool:
    """Drop-newest policy: True if queued, else counted under reason."""
    try:
        channel.send_nowait(item)
        return True
    except trio.WouldBlock:
        stats.drop(reason, count)
        return False
