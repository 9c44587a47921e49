"""Both ends of one tunnel, keyed as the handshake would key them."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..proto.crypto import StaticKey, TunnelKeys, derive_tunnel_keys, ephemeral_public
from ..proto.tunnel import Tunnel
from .traffic import GN_VIP, PEER_VIP


def mirrored_keys(
    a: StaticKey,
    b: StaticKey,
    tunnel_id: int = 7,
    eph_a: X25519PrivateKey | None = None,
    eph_b: X25519PrivateKey | None = None,
) -> tuple[TunnelKeys, TunnelKeys]:
    """Both ends' TunnelKeys for one tunnel, as the handshake would give them."""
    eph_a = eph_a or X25519PrivateKey.generate()
    eph_b = eph_b or X25519PrivateKey.generate()
    initiator = derive_tunnel_keys(
        tunnel_id=tunnel_id,
        initiator=True,
        static=a,
        peer_static=b.public,
        ephemeral=eph_a,
        peer_ephemeral=ephemeral_public(eph_b),
    )
    responder = derive_tunnel_keys(
        tunnel_id=tunnel_id,
        initiator=False,
        static=b,
        peer_static=a.public,
        ephemeral=eph_b,
        peer_ephemeral=ephemeral_public(eph_a),
    )
    return initiator, responder


def tunnel_pair(tunnel_id: int = 7) -> tuple[Tunnel, Tunnel]:
    """(the GN side's tunnel to the peer, the peer's tunnel to the GN)."""
    ka, kb = mirrored_keys(StaticKey.generate(), StaticKey.generate(), tunnel_id)
    return (
        Tunnel(tunnel_id, "cn.ntm.example", PEER_VIP, ("198.51.100.30", 7401), ka, 0.0),
        Tunnel(tunnel_id, "gn.ntm.example", GN_VIP, ("198.51.100.51", 7401), kb, 0.0),
    )
