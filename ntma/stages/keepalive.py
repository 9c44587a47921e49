"""Tunnel keep-alive and expiry.

Every KEEPALIVE_S, a tunnel that sent nothing since the last round gets an empty DATA
(authenticated like any other, PASSIVE_KEEPALIVE), so NAT mappings on the path stay
open and the peer sees we are alive. A tunnel that received nothing for EXPIRE_S is
removed from the TunnelTable (queued in its `removed`, so the handshake part frees its
indexes and Direction), and the next DNS query for its peer asks the DC again.
"""

from __future__ import annotations

import structlog
import trio

from ..observe.spans import StageStats
from ..proto.tunnel import ExpiredKeys, TunnelRef, TunnelTable
from .channels import Batch

KEEPALIVE_S = 10.0
EXPIRE_S = 180.0


def keepalive_round(
    table: TunnelTable,
    sent_before: dict[TunnelRef, int],
    now: float,
    stats: StageStats,
    log,
) -> list[tuple[bytes, tuple[str, int]]]:
    """One round: expire silent tunnels, and return keep-alives for idle ones."""
    datagrams = []
    for tunnel in list(table.by_ref.values()):
        ref = tunnel.ref
        if now - max(tunnel.created_at, tunnel.last_receive) > EXPIRE_S:
            table.remove(tunnel)
            sent_before.pop(ref, None)
            stats.count("tunnel_expired")
            log.info("tunnel_expired", tunnel=tunnel.tunnel_id, peer=tunnel.peer_fqdn)
            continue
        if sent_before.get(ref) == tunnel.packets_out:
            try:
                datagrams.append((tunnel.seal(b"", now), tunnel.endpoint))
            except ExpiredKeys:
                continue
            stats.count("keepalive_sent")
        sent_before[ref] = tunnel.packets_out
    for gone in set(sent_before) - set(table.by_ref):
        del sent_before[gone]
    return datagrams


async def run_tunnel_keepalive(
    table: TunnelTable,
    udp_out: trio.abc.SendChannel,
    stats: StageStats,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    log = structlog.get_logger().bind(stage="keepalive")
    sent_before: dict[TunnelRef, int] = {}
    async with udp_out:
        task_status.started()
        while True:
            await trio.sleep(KEEPALIVE_S)
            datagrams = keepalive_round(table, sent_before, trio.current_time(), stats, log)
            if datagrams:
                await udp_out.send(Batch(datagrams))
