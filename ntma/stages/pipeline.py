"""Wiring: the place that makes the channels and starts every stage by name, each
front end on the core that core.py starts (the tunnel stages and signalling).

Node front end (TUN):     tun_read -> classify -> (core) ... (core) -> tun_write
Adapter front end (GN link, see ethernet.py):
    capture -> classify_frames -> arp (and ND) | dhcp | dns | (core) | passthrough_out -> inject
    passthrough_in -> inject;  (core) decapsulate -> inject

Channel items are batches; see channels.py for sizes and overload policies. Stages
are started from the sinks backwards, so no producer runs before its consumer. The
paper's Table 2 paths (spans.path) are handed, here and in core.py, to the stage where
each path starts, as an argument beside its StageStats; the batch carries it on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..io.packetio import DatagramIO, PacketIO
from ..proto.gnlink import GnLink
from .channels import CONTROL_QUEUE_BATCHES, DATA_QUEUE_BATCHES, Frames
from .core import NodePipeline, start_core
from .dns import DnsResolver
from .ethernet import (
    FrameRoutes,
    run_capture,
    run_classify_frames,
    run_inject,
    run_passthrough_in,
    run_passthrough_out,
)
from .gn_services import run_dhcp_responder, run_dns_frames
from .hop import open_hop_channel
from .neighbours import run_arp_responder
from .receive import run_tun_write
from .send import run_classify, run_tun_read


async def start_node_pipeline(
    nursery: trio.Nursery, pipe: NodePipeline, tun: PacketIO, udp: DatagramIO, on_registered
) -> None:
    """The NTM node: TUN front end on the core."""
    spans = pipe.spans
    to_tun_write = open_hop_channel(DATA_QUEUE_BATCHES)
    await nursery.start(run_tun_write, to_tun_write[1], tun, spans.stage("tun_write"))
    to_encap = await start_core(nursery, pipe, udp, to_tun_write[0], on_registered)
    tun_to_classify = open_hop_channel(DATA_QUEUE_BATCHES)
    await nursery.start(
        run_classify, tun_to_classify[1], to_encap, pipe.table, spans.stage("classify")
    )
    await nursery.start(run_tun_read, tun, tun_to_classify[0], spans.stage("tun_read"))


@dataclass
class AdapterParts:
    raw: PacketIO  # the GN-facing raw socket
    passthrough: PacketIO  # TUN into the kernel for ordinary traffic
    resolver: DnsResolver
    link: GnLink
    mtu: int
    save_leases: Callable[[dict[bytes, str]], None] | None = None
    # Set by start_adapter_pipeline: DHCP frames held for a device, once its VIP came.
    dhcp_replay: trio.abc.SendChannel[Frames] | None = None


async def start_adapter_pipeline(
    nursery: trio.Nursery, pipe: NodePipeline, parts: AdapterParts, udp: DatagramIO, on_registered
) -> None:
    """The adapter: Ethernet front end (GN link) on the same core."""
    spans, link = pipe.spans, parts.link
    to_inject = open_hop_channel(DATA_QUEUE_BATCHES)
    to_arp = open_hop_channel(CONTROL_QUEUE_BATCHES)
    to_dhcp = open_hop_channel(CONTROL_QUEUE_BATCHES)
    to_dns = open_hop_channel(CONTROL_QUEUE_BATCHES)
    to_passthrough = open_hop_channel(DATA_QUEUE_BATCHES)
    to_classify = open_hop_channel(DATA_QUEUE_BATCHES)
    inject = to_inject[0]
    await nursery.start(run_inject, to_inject[1], parts.raw, link, spans.stage("inject"))
    to_encap = await start_core(nursery, pipe, udp, inject.clone(), on_registered)
    await nursery.start(
        run_arp_responder, to_arp[1], inject.clone(), link, spans.stage("arp"), pipe.ask_name
    )
    parts.dhcp_replay = to_dhcp[0].clone()
    await nursery.start(
        run_dhcp_responder,
        to_dhcp[1],
        inject.clone(),
        link,
        spans.stage("dhcp"),
        pipe.ask_name,
        parts.save_leases,
    )
    await nursery.start(
        run_dns_frames, to_dns[1], inject.clone(), parts.resolver, link, spans.stage("dns")
    )
    await nursery.start(
        run_passthrough_out, to_passthrough[1], parts.passthrough, spans.stage("passthrough_out")
    )
    await nursery.start(
        run_passthrough_in, parts.passthrough, inject.clone(), spans.stage("passthrough_in")
    )
    routes = FrameRoutes(
        arp=to_arp[0],
        dhcp=to_dhcp[0],
        dns=to_dns[0],
        tunnel=to_encap,
        passthrough=to_passthrough[0],
        inject=inject,
    )
    await nursery.start(
        run_classify_frames,
        to_classify[1],
        routes,
        link,
        pipe.table,
        parts.mtu,
        spans.stage("classify"),
        spans.path("arp_processing"),
        spans.path("packet_relay"),
    )
    await nursery.start(run_capture, parts.raw, to_classify[0], spans.stage("capture"))
