"""Both ends of one v2 tunnel, keyed as a completed handshake would key them."""

from __future__ import annotations

import os

from ..proto.session import Keypair
from ..proto.tunnel import Tunnel
from .traffic import GN_VIP, PEER_VIP

DC_ID = bytes.fromhex("0123456789abcdef")


def keypair_pair(
    index_a: int = 0x0A0A0A0A, index_b: int = 0x0B0B0B0B, now: float = 0.0
) -> tuple[Keypair, Keypair]:
    """(initiator's, responder's) keypair of one session: a's send key is b's receive
    key and each puts the other's index in what it sends."""
    k_i2r, k_r2i = os.urandom(32), os.urandom(32)
    a = Keypair(k_i2r, k_r2i, index_a, index_b, now, initiator=True)
    b = Keypair(k_r2i, k_i2r, index_b, index_a, now, initiator=False)
    return a, b


def tunnel_pair(tunnel_id: int = 7, now: float = 0.0) -> tuple[Tunnel, Tunnel]:
    """(the GN side's tunnel to the peer, the peer's tunnel to the GN), both with a
    current keypair (the responder's already confirmed)."""
    ka, kb = keypair_pair(now=now)
    a = Tunnel(DC_ID, tunnel_id, "cn.ntm.example", PEER_VIP, GN_VIP, ("198.51.100.30", 7401), now)
    b = Tunnel(DC_ID, tunnel_id, "gn.ntm.example", GN_VIP, PEER_VIP, ("198.51.100.51", 7401), now)
    a.install(ka)
    b.install(kb)
    b.confirm(kb)
    return a, b


def device_tunnels(vips: list[str], peer_vip: str = PEER_VIP) -> list[Tunnel]:
    """One tunnel per device VIP to the same peer (an adapter's devices each have their own),
    each with a current keypair."""
    tunnels = []
    for i, vip in enumerate(vips, 1):
        tunnel = Tunnel(
            DC_ID, 100 + i, "cn.ntm.example", peer_vip, vip, ("198.51.100.30", 7401), 0.0
        )
        tunnel.install(keypair_pair(0x0A000000 + i, 0x0B000000 + i)[0])
        tunnels.append(tunnel)
    return tunnels
