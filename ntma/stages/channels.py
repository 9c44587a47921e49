"""Queue sizes and overload policies for the pipeline's memory channels.

Items are batches (lists), so one channel hop is paid per batch, not per packet. The
channels themselves are `hop.open_hop_channel`: bounded Trio-style memory channels whose
hand-off to a waiting stage costs one scheduler pass, not two.
- Data channels (tun -> classify -> encapsulate -> udp send; udp receive ->
  decapsulate -> tun write) block when full: backpressure reaches the socket or
  TUN read, and the kernel drops, as it would for a slow interface.
- The signalling channel drops the newest batch when full (counted): a flood of
  handshakes must not stall the data path; retransmission recovers real ones.
- Direction requests from the DNS responder drop the newest when full (the
  query then times out with SERVFAIL).
"""

from __future__ import annotations

import trio

from ..observe.spans import StageStats

DATA_QUEUE_BATCHES = 16
SIGNAL_QUEUE_BATCHES = 64
CONTROL_QUEUE_BATCHES = 32  # ARP, DHCP, DNS from the GN: drop newest when full
DIRECTION_QUEUE = 64


class Batch(list):
    """A batch that carries when its first stage received it, and the path whose
    latency the last stage records (see spans.PathStats)."""

    __slots__ = ("arrived", "span")

    def __init__(self, items=(), arrived: int = 0, span=None) -> None:
        super().__init__(items)
        self.arrived = arrived
        self.span = span


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
