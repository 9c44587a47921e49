"""What the node's handshake part holds per tunnel, and the early inits (sans-IO).

`Directed`: one Direction the DC sent us (building or live), with the state of its
handshake: our init in flight (one at a time), where inits go, the relay, PUNCH's
fallback and punches, the first-handshake deadline and a rekey in progress.
`EarlyInits`: TUNNEL_INITs that arrived before the Direction naming their sender
(docs/protocol.md 7.4), at most EARLY_INITS_MAX, the oldest evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace

from ..bodies_v2 import Direction, RelayInfo, TunnelInit
from ..buffer import Endpoint
from ..fields_v2 import Role, Route
from ..handshake import InitFrame, OpenedInit
from ..initiate import PendingInit
from ..session import REKEY_TIMEOUT
from ..tunnel import Tunnel, TunnelRef

EARLY_INITS_MAX = 16


def freshness_key(peer_key: bytes, dc_id: bytes, tunnel_id: int) -> bytes:
    """A node's freshness key (4.3 step 5): initiator key, dc_id, tunnel_id."""
    return peer_key + dc_id + tunnel_id.to_bytes(8, "big")


@dataclass(eq=False)
class Directed:
    direction: Direction
    self_vip: str
    self_vip6: str
    started_at: float = 0.0
    deadline: float | None = None  # a first (or route-update) handshake's end; None once up
    pending: PendingInit | None = None  # our TUNNEL_INIT in flight
    targets: list[Endpoint] = field(default_factory=list)  # where our init goes (direct)
    via_relay: bool = False  # our inits go through the relay
    relay_bound: bool = False
    fallback_at: float | None = None  # PUNCH initiator: when to go through the relay
    punch_at: list[float] = field(default_factory=list)  # PUNCH responder: punches due
    rekey_since: float | None = None  # a rekey in progress since
    tunnel: Tunnel | None = None

    @property
    def ref(self) -> TunnelRef:
        return (self.direction.dc_id, self.direction.tunnel_id)

    @property
    def fresh_key(self) -> bytes:
        d = self.direction
        return freshness_key(d.peer_key, d.dc_id, d.tunnel_id)

    @property
    def initiates(self) -> bool:
        return self.direction.role == Role.INITIATE

    @property
    def relay(self) -> RelayInfo | None:
        return self.direction.relay

    def same_ends(self, other: Direction) -> bool:
        """Does other name the same two ends (so it may update this tunnel)?"""
        d = self.direction
        return (d.peer_key, d.peer_name, d.self_name) == (
            other.peer_key,
            other.peer_name,
            other.self_name,
        )

    def matches(self, initiator_key: bytes, init: TunnelInit) -> bool:
        """A TUNNEL_INIT from the peer this Direction names, for these names."""
        d = self.direction
        return (
            initiator_key == d.peer_key
            and init.initiator_name == d.peer_name
            and init.responder_name == d.self_name
        )

    def route_name(self, relayed: bool) -> str:
        """The route a tunnel actually took: a PUNCH that fell back is a relay tunnel."""
        return "relay" if relayed else self.direction.route.name.lower()

    def make_tunnel(self, endpoint: Endpoint, relayed: bool, now: float) -> Tunnel:
        """The tunnel a first handshake makes, from the Direction's names and VIPs."""
        d = self.direction
        return Tunnel(
            d.dc_id,
            d.tunnel_id,
            d.peer_name,
            d.peer_vip4,
            self.self_vip,
            endpoint,
            now,
            peer_key=d.peer_key,
            self_fqdn=d.self_name,
            peer_vip6=d.peer_vip6,
            self_vip6=self.self_vip6,
            relay=d.relay,
            route=self.route_name(relayed),
        )

    def timers(self) -> list[float]:
        times = [t for t in (self.deadline, self.fallback_at) if t is not None]
        times += self.punch_at[:1]
        return times

    def wants_relay_first(self) -> bool:
        return self.direction.route == Route.RELAY


@dataclass(eq=False)
class EarlyInit:
    frame: InitFrame
    opened: OpenedInit
    init: TunnelInit
    addr: Endpoint
    relay: RelayInfo | None
    at: float


class EarlyInits:
    def __init__(self) -> None:
        self._inits: OrderedDict[bytes, EarlyInit] = OrderedDict()

    def keep(self, early: EarlyInit) -> None:
        init = early.init
        key = freshness_key(early.opened.initiator_public, init.dc_id, init.tunnel_id)
        self._inits.pop(key, None)
        self._inits[key] = early
        while len(self._inits) > EARLY_INITS_MAX:
            self._inits.popitem(last=False)

    def take(self, key: bytes, now: float) -> EarlyInit | None:
        """The init kept for that freshness key, if it is still worth answering (the
        initiator replaces an init after REKEY_TIMEOUT)."""
        early = self._inits.pop(key, None)
        if early is None or now - early.at >= REKEY_TIMEOUT:
            return None
        return early

    def __len__(self) -> int:
        return len(self._inits)

def only_grant_renewed(old: Direction, new: Direction) -> bool:
    """The same route through the same RS, only a fresh grant (the DC renews before expiry)."""
    if old.relay is None or new.relay is None or old.relay.grant == new.relay.grant:
        return False
    same_rs = (old.relay.endpoint, old.relay.public_key) == (
        new.relay.endpoint,
        new.relay.public_key,
    )
    return same_rs and replace(new, relay=old.relay) == old
