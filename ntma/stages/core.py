"""The core the node and the adapter share: the tunnel stages and signalling.

    <front end> -> encapsulate -> udp_send <- signalling, tunnel keep-alive
    udp_receive -> decapsulate -> <front end>
                -> signalling -> tunnels into the TunnelTable, answers to DNS
    netwatch (kernel address/route/link notices) -> signalling (re-announce, 7.3)

pipeline.py starts it under each front end (the node's TUN, the adapter's GN link).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ..io.packetio import DatagramIO
from ..observe.spans import Spans
from ..proto.fields_v2 import VIP6_NONE
from ..proto.node import NameFailed, NameRegistered, NodeSignalling
from ..proto.tunnel import TunnelTable
from .channels import DATA_QUEUE_BATCHES, NETWATCH_QUEUE, SIGNAL_QUEUE_BATCHES, Batch
from .hop import open_hop_channel
from .keepalive import run_tunnel_keepalive
from .netwatch import run_netwatch
from .receive import run_decapsulate, run_udp_receive
from .send import run_encapsulate, run_udp_send
from .signalling import Ask, AskKind, DirectionBroker, run_signalling


@dataclass
class NodePipeline:
    sm: NodeSignalling
    table: TunnelTable = field(init=False)  # the machine's: it installs, data stages read
    spans: Spans = field(default_factory=Spans)
    broker: DirectionBroker | None = None
    # Interfaces netwatch ignores (our own TUN, the GN link); None: no netwatch (tests that
    # run without a kernel of their own).
    watch_exclude: frozenset[str] | None = None
    # The adapter's: what to do when one of its devices' names got its VIP (or was refused).
    on_name: Callable[[NameRegistered | NameFailed], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        self.table = self.sm.tunnels
        if self.broker is None:
            self.broker = DirectionBroker(self.spans.stage("dns"), self.sm.fqdn)

    def ask_name(self, fqdn: str, vip6: str = VIP6_NONE) -> bool:
        """One more name of ours (a device behind the adapter), or the IPv6 address its
        device chose (vip6), asked through signalling."""
        assert self.broker is not None
        return self.broker.ask(Ask(AskKind.ADD_NAME, fqdn, vip6=vip6))

    def give_back_name(self, fqdn: str) -> bool:
        """A name of ours no device holds any more (a reload): NAME_REMOVE."""
        assert self.broker is not None
        return self.broker.ask(Ask(AskKind.REMOVE_NAME, fqdn))


async def start_core(
    nursery: trio.Nursery,
    pipe: NodePipeline,
    udp: DatagramIO,
    decap_out: trio.abc.SendChannel[Batch],
    on_registered,
) -> trio.abc.SendChannel[Batch]:
    """Start encapsulate, udp_send, udp_receive, decapsulate and signalling.

    Decapsulated packet batches go to decap_out (the front end's writer). Returns the
    channel the front end sends (tunnel, packet) batches to.
    """
    spans = pipe.spans
    to_encap = open_hop_channel(DATA_QUEUE_BATCHES)
    to_udp_send = open_hop_channel(DATA_QUEUE_BATCHES)
    udp_to_decap = open_hop_channel(DATA_QUEUE_BATCHES)
    udp_to_signalling = open_hop_channel(SIGNAL_QUEUE_BATCHES)
    await nursery.start(run_udp_send, to_udp_send[1], udp, spans.stage("udp_send"))
    await nursery.start(
        run_encapsulate,
        to_encap[1],
        to_udp_send[0].clone(),
        spans.stage("encapsulate"),
        spans.path("tunnel_send"),
    )
    await nursery.start(
        run_decapsulate,
        udp_to_decap[1],
        decap_out,
        pipe.table,
        spans.stage("decapsulate"),
        spans.path("response_relay"),
    )
    await nursery.start(
        run_tunnel_keepalive,
        pipe.table,
        to_udp_send[0].clone(),
        spans.stage("keepalive"),
    )
    changes_send, changes = open_hop_channel(NETWATCH_QUEUE)
    if pipe.watch_exclude is not None:
        watch = functools.partial(run_netwatch, exclude=pipe.watch_exclude)
        await nursery.start(watch, changes_send, spans.stage("netwatch"))
    else:
        await changes_send.aclose()  # signalling then waits on datagrams and names only
    await nursery.start(
        functools.partial(run_signalling, changes=changes, on_name=pipe.on_name),
        pipe.sm,
        udp_to_signalling[1],
        to_udp_send[0],
        pipe.broker,
        spans.stage("signalling"),
        on_registered,
    )
    await nursery.start(
        run_udp_receive, udp, udp_to_decap[0], udp_to_signalling[0], spans.stage("udp_receive")
    )
    return to_encap[0]
