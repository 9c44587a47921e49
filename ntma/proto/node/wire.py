"""What every part of the node's signalling shares (protocol v2): its static key, the one
table of handshakes it started, its gate as a responder, which part owns each of its
session indexes, its registered names, and the outputs the driver drains.

The parts (session.py: the DC session; handshake.py: tunnels; relay.py: RS sessions) write
into one Wire; NodeSignalling (signalling.py) owns it and hands its outputs to the driver.

- `initiations`: ONE per node, for every handshake the node starts (to the DC, to peers,
  to RSes); each PendingInit's `context` says whose it is: DcContext, TunnelContext or
  RsContext, and NodeSignalling routes the response by it.
- `gate`: the node as a responder (TUNNEL_INITs only).
- `by_index`: local session index -> the owner of that session (the DcSession, an
  RsSession, or a Tunnel). Owners register and unregister their indexes here; the
  indexes themselves come from `indexes` (unique, never 0).
- `names`: the node's registered names -> their VIPs (filled at registration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..bodies_v2 import RelayInfo
from ..buffer import CodecError, Endpoint
from ..crypto import StaticKey
from ..envelope import wrap
from ..fields_v2 import VIP4_NONE, VIP6_NONE, dc_id_of
from ..gate import HandshakeGate
from ..initiate import Indexes, Initiations
from ..machine import Drops
from .events import NodeEvent


@dataclass(frozen=True)
class DcContext:
    """A PendingInit of the node's DC session (REGISTER)."""


@dataclass(frozen=True)
class TunnelContext:
    """A PendingInit of a tunnel (TUNNEL_INIT), by the tunnel's name at its DC."""

    dc_id: bytes
    tunnel_id: int


@dataclass(frozen=True)
class RsContext:
    """A PendingInit of an RS session (RS_HELLO), by the RS's static key."""

    rs_public: bytes


HandshakeContext = DcContext | TunnelContext | RsContext


@dataclass(frozen=True)
class NameVips:
    vip4: str = VIP4_NONE
    vip6: str = VIP6_NONE


class Wire:
    def __init__(
        self,
        *,
        static: StaticKey,
        dc_public: bytes,
        dc_endpoint: Endpoint,
        random_bytes: Callable[[int], bytes],
        generate_key: Callable[[], X25519PrivateKey],
        epoch_offset: float,
    ) -> None:
        self.static = static
        self.dc_public = dc_public
        self.dc_endpoint = dc_endpoint
        self.dc_id = dc_id_of(dc_public)
        self._random = random_bytes
        self.generate_key = generate_key
        self._epoch_offset = epoch_offset  # wall clock minus the clock `now` comes from
        self.indexes = Indexes(random_bytes)
        self.initiations = Initiations(static, self.indexes, generate_key)
        self.gate = HandshakeGate(static, 0.0, random_bytes)
        self.by_index: dict[int, object] = {}
        self.names: dict[str, NameVips] = {}
        self.out: list[tuple[bytes, Endpoint]] = []
        self.events: list[NodeEvent] = []
        self.drops = Drops()

    def random_bytes(self, n: int) -> bytes:
        return self._random(n)

    def txid(self) -> int:
        return int.from_bytes(self._random(4), "big")

    def clock_epoch(self, now: float) -> float:
        """The wall clock at `now`, for handshake timestamps."""
        return self._epoch_offset + now

    def epoch_ms(self, now: float) -> int:
        return int(self.clock_epoch(now) * 1000)

    def send_via_relay(
        self, relay: RelayInfo, dc_id: bytes, tunnel_id: int, datagram: bytes
    ) -> None:
        """A handshake datagram to a peer through its tunnel's RS, in a RELAY_ENVELOPE."""
        try:
            self.out.append((wrap(dc_id, tunnel_id, datagram), relay.endpoint))
        except CodecError:
            self.drops.drop("unwrappable_envelope")

    def release(self, index: int) -> None:
        """An owner is done with a session index."""
        self.by_index.pop(index, None)
        self.indexes.release(index)
