"""Wiring: one place that makes the channels and starts every stage by name.

Node data path (TUN front end; the adapter swaps in its Ethernet stages):

    tun_read -> classify -> encapsulate -> udp_send <- signalling
    udp_receive -> decapsulate -> tun_write
                -> signalling -> (tunnels into TunnelTable, answers to dns)
    dns (UDP and TCP) -> signalling (through the DirectionBroker)

Channel items are batches; see channels.py for sizes and overload policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from ..io.packetio import DatagramIO, PacketIO
from ..proto.node_sm import NodeSignalling
from ..proto.tunnel import TunnelTable
from .channels import DATA_QUEUE_BATCHES, SIGNAL_QUEUE_BATCHES
from .receive import run_decapsulate, run_tun_write, run_udp_receive
from .send import run_classify, run_encapsulate, run_tun_read, run_udp_send
from .signalling import DirectionBroker, run_signalling
from .spans import Spans


@dataclass
class NodePipeline:
    sm: NodeSignalling
    table: TunnelTable = field(default_factory=TunnelTable)
    spans: Spans = field(default_factory=Spans)
    broker: DirectionBroker | None = None

    def __post_init__(self) -> None:
        if self.broker is None:
            self.broker = DirectionBroker(self.spans.stage("dns"))


def _channel(size: int):
    return trio.open_memory_channel(size)


async def start_node_pipeline(
    nursery: trio.Nursery, pipe: NodePipeline, tun: PacketIO, udp: DatagramIO, on_registered
) -> None:
    """Start every stage of the node's data and signalling paths; returns once all run."""
    spans = pipe.spans
    tun_to_classify = _channel(DATA_QUEUE_BATCHES)
    classify_to_encap = _channel(DATA_QUEUE_BATCHES)
    to_udp_send = _channel(DATA_QUEUE_BATCHES)
    udp_to_decap = _channel(DATA_QUEUE_BATCHES)
    decap_to_tun = _channel(DATA_QUEUE_BATCHES)
    udp_to_signalling = _channel(SIGNAL_QUEUE_BATCHES)

    # Outbound, started from the sink backwards so no producer runs before its consumer.
    await nursery.start(run_udp_send, to_udp_send[1], udp, spans.stage("udp_send"))
    await nursery.start(
        run_encapsulate, classify_to_encap[1], to_udp_send[0].clone(), spans.stage("encapsulate")
    )
    await nursery.start(
        run_classify, tun_to_classify[1], classify_to_encap[0], pipe.table, spans.stage("classify")
    )
    await nursery.start(run_tun_read, tun, tun_to_classify[0], spans.stage("tun_read"))
    # Inbound.
    await nursery.start(run_tun_write, decap_to_tun[1], tun, spans.stage("tun_write"))
    await nursery.start(
        run_decapsulate, udp_to_decap[1], decap_to_tun[0], pipe.table, spans.stage("decapsulate")
    )
    await nursery.start(
        run_signalling,
        pipe.sm,
        udp_to_signalling[1],
        to_udp_send[0],
        pipe.broker,
        pipe.table,
        spans.stage("signalling"),
        on_registered,
    )
    await nursery.start(
        run_udp_receive, udp, udp_to_decap[0], udp_to_signalling[0], spans.stage("udp_receive")
    )
