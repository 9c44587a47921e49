"""STAND-IN for part B's tunnel handshakes (branch h-v2a only; take part B's file at
integration). It implements the agreed interface and does nothing, so the node's v2
signalling (part A) imports and runs without tunnels: every Direction is recorded, no
tunnel is ever built.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..bodies_v2 import Direction, RelayInfo
from ..buffer import Endpoint
from ..initiate import PendingInit
from ..noise import SessionKeys
from ..tunnel import TunnelTable
from .wire import Wire


class Handshakes:
    def __init__(
        self, wire: Wire, tunnels: TunnelTable, generate_key: Callable[[], X25519PrivateKey]
    ) -> None:
        self._wire = wire
        self._tunnels = tunnels
        self.directions: list[Direction] = []

    def on_direction(self, direction: Direction, now: float) -> None:
        self.directions.append(direction)

    def on_init(self, datagram: bytes, addr: Endpoint, now: float, relay: RelayInfo | None) -> None:
        self._wire.drops.drop("tunnel_init_unhandled")

    def on_established(
        self,
        pending: PendingInit,
        remote_index: int,
        body: bytes,
        keys: SessionKeys,
        addr: Endpoint,
        now: float,
        relay: RelayInfo | None,
    ) -> None:
        self._wire.release(pending.sender_index)

    def on_resend(self, pending: PendingInit, now: float) -> None:
        pass

    def on_expired(self, pending: PendingInit, now: float) -> None:
        pass

    def on_relay_bound(self, dc_id: bytes, tunnel_id: int, now: float) -> None:
        pass

    def on_signal(self, tunnel: object, payload: bytes, addr: Endpoint, now: float) -> None:
        pass

    def close(self, dc_id: bytes, tunnel_id: int, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass
