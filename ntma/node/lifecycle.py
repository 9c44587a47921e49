"""What the node and the adapter runners share: building the signalling state
machine for one UDP socket, and the shutdown sequence (deregister, final stats)."""

from __future__ import annotations

import signal
import time

import trio

from ..io.addresses import local_endpoints_for_listen
from ..io.packetio import DatagramIO
from ..proto.buffer import Endpoint
from ..proto.crypto import StaticKey
from ..proto.node import NodeSignalling
from ..stages.core import NodePipeline

DEREGISTER_GRACE_S = 0.2


def make_signalling(
    *,
    fqdn: str,
    key: StaticKey,
    dc_public_key: bytes,
    dc_address: Endpoint,
    listen: Endpoint,
    exclude: set[str],
    dc_address6: Endpoint | None = None,
) -> NodeSignalling:
    return NodeSignalling(
        fqdn=fqdn,
        static=key,
        dc_public=dc_public_key,
        dc_endpoint=dc_address,
        local_endpoints=local_endpoints_for_listen(listen, exclude),
        epoch_offset=time.time() - trio.current_time(),
        dc_other_endpoint=dc_address6,
    )


async def wait_then_deregister(signals, pipe: NodePipeline, udp: DatagramIO, log) -> None:
    """Return after the first SIGINT/SIGTERM, once the DC has been told we are leaving."""
    async for signum in signals:
        log.info("shutting_down", signal=signal.Signals(signum).name)
        break
    pipe.sm.deregister(trio.current_time())
    await udp.send_batch(pipe.sm.datagrams_to_send())
    await trio.sleep(DEREGISTER_GRACE_S)  # lets the DC's ack arrive; not required


def log_final(pipe: NodePipeline, log) -> None:
    pipe.spans.log_summaries(log, "stage_stats_final")
    for tunnel in list(pipe.table.by_ref.values()):
        log.info(
            "tunnel_closed",
            tunnel=tunnel.tunnel_id,
            peer=tunnel.peer_fqdn,
            packets_in=tunnel.packets_in,
            packets_out=tunnel.packets_out,
        )
