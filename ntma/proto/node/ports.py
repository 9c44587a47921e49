"""What the tunnel handshakes (handshake.py) use of the node's other parts, as protocols:
the Wire (wire.py) and the relay bindings (relay.py)."""

from __future__ import annotations

from typing import Protocol

from ..bodies_v2 import RelayInfo
from ..buffer import Endpoint
from ..crypto import StaticKey
from ..gate import HandshakeGate
from ..initiate import Indexes, Initiations
from ..machine import Drops
from .events import NodeEvent


class HandshakeWire(Protocol):
    """What this part uses of proto/node/wire.py's Wire."""

    static: StaticKey
    out: list[tuple[bytes, Endpoint]]
    events: list[NodeEvent]
    drops: Drops
    indexes: Indexes
    initiations: Initiations
    gate: HandshakeGate
    by_index: dict[int, object]
    names: dict

    def clock_epoch(self, now: float) -> float: ...

    def send_via_relay(
        self, relay: RelayInfo, dc_id: bytes, tunnel_id: int, datagram: bytes
    ) -> None: ...


class RelayBinder(Protocol):
    """proto/node/relay.py's RelayBindings, as this part uses it."""

    def bind(self, relay: RelayInfo, dc_id: bytes, tunnel_id: int, now: float) -> None: ...

    def unbind(self, dc_id: bytes, tunnel_id: int) -> None: ...
