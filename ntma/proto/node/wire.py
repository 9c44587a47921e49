"""What every part of the node's signalling shares: the keys it seals with, the requests
in flight (with their kinds and typed contexts), and the outputs the driver drains.

The parts (session.py, handshake.py, relay.py) write into one Wire; NodeSignalling
(signalling.py) owns it and hands its outputs to the driver.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ..buffer import Endpoint
from ..crypto import SignalBox, StaticKey
from ..machine import Drops
from ..messages import Message
from ..packet import seal_message
from ..transactions import Transaction, Transactions
from .events import NodeEvent


class NodeTx(enum.Enum):
    """The node's request kinds, and the context each carries (None where the kind is enough)."""

    REGISTER = "register"  # None
    KEEPALIVE = "keepalive"  # None
    DEREGISTER = "deregister"  # None
    PROBE = "probe"  # None
    DIRECTION = "direction"  # AskedName
    TUNNEL = "tunnel"  # TunnelBeingBuilt
    RELAY_BIND = "relay_bind"  # TunnelBeingBuilt


@dataclass(frozen=True)
class AskedName:
    """A Direction Request's context: the name it asks for."""

    fqdn: str


@dataclass(frozen=True)
class TunnelBeingBuilt:
    """A Tunnel Request's or a Relay Bind's context: the tunnel it is for."""

    tunnel_id: int


TxContext = AskedName | TunnelBeingBuilt | None
NodeTransaction = Transaction[NodeTx, TxContext]


class Wire:
    def __init__(
        self,
        *,
        static: StaticKey,
        dc_public: bytes,
        dc_endpoint: Endpoint,
        random_bytes: Callable[[int], bytes],
        epoch_offset: float,
    ) -> None:
        self.static = static
        self.dc_public = dc_public
        self.dc_endpoint = dc_endpoint
        self._random = random_bytes
        self._epoch_offset = epoch_offset  # wall clock minus the clock `now` comes from
        self.boxes: dict[bytes, SignalBox] = {dc_public: SignalBox(static, dc_public)}
        self.tx: Transactions[NodeTx, TxContext] = Transactions()
        self.out: list[tuple[bytes, Endpoint]] = []
        self.events: list[NodeEvent] = []
        self.drops = Drops()

    def txid(self) -> int:
        return int.from_bytes(self._random(4), "big")

    def epoch_ms(self, now: float) -> int:
        return int((self._epoch_offset + now) * 1000)

    def know(self, public_key: bytes) -> None:
        """Make a peer's (or relay's) messages openable and sealable from now on."""
        self.boxes.setdefault(public_key, SignalBox(self.static, public_key))

    def seal(self, msg: Message, peer: bytes, addr: Endpoint) -> tuple[bytes, Endpoint]:
        nonce = self._random(SignalBox.NONCE_LEN)
        return seal_message(msg, self.boxes[peer], self.static.public, nonce), addr

    def send(self, msg: Message, peer: bytes, addr: Endpoint) -> None:
        self.out.append(self.seal(msg, peer, addr))

    def request_dc(
        self, msg: Message, kind: NodeTx, now: float, timeout: float, context: TxContext = None
    ) -> None:
        """Send msg to the DC and retransmit it until answered or timeout passes."""
        datagram = self.seal(msg, self.dc_public, self.dc_endpoint)
        self.out.append(datagram)
        self.tx.start(msg.txid, kind, [datagram], now, timeout, context=context)  # type: ignore[attr-defined]


# --- v2 handshake contexts (part A defines these in its wire.py; this copy only lets
# part B's handshake code import them before the two parts are merged) -------------------


@dataclass(frozen=True)
class DcContext:
    """A pending init of the node's DC session."""


@dataclass(frozen=True)
class TunnelContext:
    """A pending TUNNEL_INIT: the tunnel it is for."""

    dc_id: bytes
    tunnel_id: int


@dataclass(frozen=True)
class RsContext:
    """A pending RS_HELLO: the RS it is for."""

    rs_public: bytes
