"""The DC's directed tunnels and the Directions it builds for them (v2, sans-IO).

- A tunnel is named by (dc_id, tunnel_id): dc_id = SHA-256(the DC's static public key)[:8],
  tunnel_id a random u64, never 0, unique among this DC's live tunnels
  (docs/protocol.md 6.3).
- The table is bounded (section 10): 256 live tunnels per requester name and 4,096 per
  target name; beyond, a new Direction is refused (NO_ROUTE) and no old one is evicted.
  A new Direction between the same two names replaces their old tunnel (the ends install
  the new one over it); a node's tunnels go when its session ends.
- A Direction's peer endpoints (section 3): the peer's observed endpoint per family first,
  then its local endpoints only when the route says the two ends share a NAT; at most 8.
- The relay for a tunnel is chosen by rendezvous hashing over the configured relays, and
  its grant (proto/grant.py) binds dc_id, tunnel_id, both ends' keys and an expiry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256

from ..proto.bodies_v2 import Direction, RelayInfo
from ..proto.buffer import Endpoint
from ..proto.fields_v2 import DIRECTION_ENDPOINTS_MAX, Role, Route
from ..proto.grant import Grant, make_grant
from .route import RoutePlan
from .sessions import NodeSession

PER_REQUESTER_MAX = 256
PER_TARGET_MAX = 4096
TUNNEL_ID_TRIES = 64


@dataclass(frozen=True)
class DirectedTunnel:
    tunnel_id: int
    requester: str  # names
    target: str
    requester_key: bytes
    target_key: bytes

    @property
    def pair(self) -> frozenset[str]:
        return frozenset((self.requester, self.target))


class DirectedTunnels:
    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._random = random_bytes
        self.by_id: dict[int, DirectedTunnel] = {}
        self._by_pair: dict[frozenset[str], int] = {}
        self._as_requester: Counter[str] = Counter()
        self._as_target: Counter[str] = Counter()

    def add(
        self, requester: NodeSession, target: NodeSession, requester_name: str, target_name: str
    ) -> DirectedTunnel | None:
        """A new live tunnel, or None when a bound refuses it."""
        old = self._by_pair.get(frozenset((requester_name, target_name)))
        if old is not None:
            self.remove(old)
        if (
            self._as_requester[requester_name] >= PER_REQUESTER_MAX
            or self._as_target[target_name] >= PER_TARGET_MAX
        ):
            return None
        tunnel_id = self._new_id()
        if tunnel_id is None:
            return None
        tunnel = DirectedTunnel(
            tunnel_id, requester_name, target_name, requester.public_key, target.public_key
        )
        self.by_id[tunnel_id] = tunnel
        self._by_pair[tunnel.pair] = tunnel_id
        self._as_requester[requester_name] += 1
        self._as_target[target_name] += 1
        return tunnel

    def remove(self, tunnel_id: int) -> DirectedTunnel | None:
        tunnel = self.by_id.pop(tunnel_id, None)
        if tunnel is None:
            return None
        if self._by_pair.get(tunnel.pair) == tunnel_id:
            del self._by_pair[tunnel.pair]
        self._as_requester[tunnel.requester] -= 1
        self._as_target[tunnel.target] -= 1
        for counter, name in (
            (self._as_requester, tunnel.requester),
            (self._as_target, tunnel.target),
        ):
            if counter[name] <= 0:
                del counter[name]
        return tunnel

    def of_key(self, public_key: bytes) -> list[DirectedTunnel]:
        return [t for t in self.by_id.values() if public_key in (t.requester_key, t.target_key)]

    def _new_id(self) -> int | None:
        for _ in range(TUNNEL_ID_TRIES):
            tunnel_id = int.from_bytes(self._random(8), "big")
            if tunnel_id and tunnel_id not in self.by_id:
                return tunnel_id
        return None  # only with a broken random source

    def __len__(self) -> int:
        return len(self.by_id)


@dataclass(frozen=True)
class RelayChoice:
    endpoint: Endpoint
    public_key: bytes
    secret: bytes  # the grant key this DC shares with that RS


def choose_relay(relays: list[RelayChoice], tunnel_id: int) -> RelayChoice | None:
    """Rendezvous hashing: each tunnel id picks the relay with the highest hash(tunnel id,
    relay key), so tunnels spread evenly and the choice needs no shared state."""
    if not relays:
        return None
    tid = tunnel_id.to_bytes(8, "big")
    return max(relays, key=lambda r: sha256(tid + r.public_key).digest())


def relay_info(
    relay: RelayChoice, dc_id: bytes, tunnel_id: int, expires_ms: int, a: bytes, b: bytes
) -> RelayInfo:
    grant = make_grant(relay.secret, Grant(dc_id, tunnel_id, expires_ms, a, b))
    return RelayInfo(relay.endpoint, relay.public_key, grant)


def relay_for(
    relays: list[RelayChoice],
    dc_id: bytes,
    tunnel_id: int,
    expires_ms: int,
    a: NodeSession,
    b: NodeSession,
) -> RelayInfo | None:
    """The relay this tunnel uses, with its grant for both ends (None: no relays)."""
    relay = choose_relay(relays, tunnel_id)
    if relay is None:
        return None
    return relay_info(relay, dc_id, tunnel_id, expires_ms, a.public_key, b.public_key)


def peer_endpoints(peer: NodeSession, private: bool) -> tuple[Endpoint, ...]:
    """Observed per family first; local ones only for a same-NAT route (section 3)."""
    observed = [peer.endpoints[f] for f in (4, 6) if f in peer.endpoints]
    local = [ep for ep in peer.local_endpoints if ep not in observed] if private else []
    return tuple((observed + local)[:DIRECTION_ENDPOINTS_MAX])


def direction_for(
    dc_id: bytes,
    tunnel_id: int,
    plan: RoutePlan,
    role: Role,
    self_name: str,
    peer: NodeSession,
    peer_name: str,
    relay: RelayInfo | None,
) -> Direction:
    return Direction(
        dc_id=dc_id,
        tunnel_id=tunnel_id,
        route=Route(plan.route),
        role=role,
        self_name=self_name,
        peer_name=peer_name,
        peer_vip4=peer.vip,
        peer_key=peer.public_key,
        peer_endpoints=peer_endpoints(peer, plan.private_endpoints),
        relay=relay,
    )


def other(role: Role) -> Role:
    return Role.RESPOND if role == Role.INITIATE else Role.INITIATE
