"""The DC's directed tunnels and the Directions it builds for them (v2, sans-IO).

- A tunnel is named by (dc_id, tunnel_id): dc_id = SHA-256(the DC's static public key)[:8],
  tunnel_id a random u64, never 0, unique among this DC's live tunnels
  (docs/protocol.md 6.3).
- The table is bounded (section 10): 256 live tunnels per requester name and 4,096 per
  target name; beyond, a new Direction is refused (NO_ROUTE) and no old one is evicted.
  A new Direction between the same two names replaces their old tunnel (the ends install
  the new one over it); a node's tunnels go when its session ends. Indexed by name pair,
  by id and by each end's key (what a move, a restart or an offline end looks up).
- A tunnel stays while an end is offline (dormant, dc/redirects.py) and remembers which
  ends no longer hold it (`lost`: that end restarted, or was told TUNNEL_GONE), so a
  re-direction sends those ends ROUTE_DIRECTION and the others ROUTE_UPDATE.
- A Direction's peer endpoints (section 3): the peer's observed endpoint per family first,
  then its local endpoints only when the route says the two ends share a NAT; at most 8.
- The relay for a tunnel is chosen by rendezvous hashing over the configured relays, and
  its grant (proto/grant.py) binds dc_id, tunnel_id, both ends' keys and an expiry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from hashlib import sha256

from ..proto.bodies_v2 import Direction, RelayInfo
from ..proto.buffer import Endpoint
from ..proto.fields_v2 import DIRECTION_ENDPOINTS_MAX, VIP6_NONE, Role, Route
from ..proto.grant import Grant, make_grant
from ..proto.tunnel import family_of
from .route import Reach, RoutePlan, decide_route
from .sessions import NodeSession

PER_REQUESTER_MAX = 256
PER_TARGET_MAX = 4096
TUNNEL_ID_TRIES = 64


@dataclass(eq=False)
class DirectedTunnel:
    tunnel_id: int
    requester: str  # names
    target: str
    requester_key: bytes
    target_key: bytes
    lost: set[bytes] = field(default_factory=set)  # keys of ends that do not hold it now
    inflight: dict[bytes, int] = field(default_factory=dict)  # end key -> our request's txid
    grant_expires_ms: int | None = None  # its relay grant's expiry (punch and relay routes)
    route: str = ""  # the latest decision: direct | punch | relay, and the table's reason
    why: str = ""
    initiator: str = ""  # the name of the end that opens it

    def other_key(self, key: bytes) -> bytes:
        return self.target_key if key == self.requester_key else self.requester_key

    def name_of(self, key: bytes) -> str:
        return self.requester if key == self.requester_key else self.target

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
        self._by_key: dict[bytes, dict[int, None]] = {}  # end key -> its tunnel ids

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
        for key in (tunnel.requester_key, tunnel.target_key):
            self._by_key.setdefault(key, {})[tunnel_id] = None
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
        for key in (tunnel.requester_key, tunnel.target_key):
            ids = self._by_key.get(key)
            if ids is not None:
                ids.pop(tunnel_id, None)
                if not ids:
                    del self._by_key[key]
        return tunnel

    def of_key(self, public_key: bytes) -> list[DirectedTunnel]:
        return [self.by_id[t] for t in self._by_key.get(public_key, ())]

    def _new_id(self) -> int | None:
        for _ in range(TUNNEL_ID_TRIES):
            tunnel_id = int.from_bytes(self._random(8), "big")
            if tunnel_id and tunnel_id not in self.by_id:
                return tunnel_id
        return None  # only with a broken random source

    def __len__(self) -> int:
        return len(self.by_id)


_RANK = {Route.DIRECT: 0, Route.PUNCH: 1, Route.RELAY: 2}


def plan_route(
    requester: NodeSession, target: NodeSession, *, relay_available: bool
) -> RoutePlan | None:
    """The decision table (7.2) for two sessions as the DC sees them now, per address family
    both ends have (the DC has heard each end from an endpoint of that family): the best
    route of any common family, IPv6 first on a tie (direct IPv6 between two dual-stack
    ends). No family in common (an IPv4-only end and an IPv6-only one): the relay, which
    each end reaches in its own family."""
    common = [f for f in (6, 4) if f in requester.endpoints and f in target.endpoints]
    if not common:
        if not relay_available:
            return None
        return RoutePlan(Route.RELAY, True, "no address family in common: through the relay")
    plans = [p for p in (_plan_in(requester, target, f, relay_available) for f in common) if p]
    return min(plans, key=lambda p: _RANK[p.route], default=None)


def _plan_in(
    requester: NodeSession, target: NodeSession, family: int, relay_available: bool
) -> RoutePlan | None:
    req_reach, tgt_reach = requester.reach(family), target.reach(family)
    same_nat = (
        Reach.PUBLIC not in (req_reach, tgt_reach)
        and requester.endpoints[family][0] == target.endpoints[family][0]
    )
    plan = decide_route(req_reach, tgt_reach, same_nat=same_nat, relay_available=relay_available)
    return None if plan is None else replace(plan, family=family)


@dataclass(frozen=True)
class RelayChoice:
    endpoints: dict[int, Endpoint]  # the RS per family: each end is sent its own family's
    public_key: bytes
    secret: bytes  # the grant key this DC shares with that RS

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints.get(4) or self.endpoints[6]

    def endpoint_for(self, end: NodeSession) -> Endpoint:
        """The RS endpoint an end can reach: of the family it reaches the DC in, else any."""
        return self.endpoints.get(family_of(end.endpoint)) or self.endpoint


def relay_choices(
    relays: list[tuple[Endpoint, bytes]], secret_for: Callable[[bytes], bytes]
) -> list[RelayChoice]:
    """The configured relays, one choice per RS key (an RS listed once per family)."""
    by_key: dict[bytes, dict[int, Endpoint]] = {}
    for endpoint, key in relays:
        by_key.setdefault(key, {}).setdefault(family_of(endpoint), endpoint)
    return [RelayChoice(eps, key, secret_for(key)) for key, eps in by_key.items()]


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
) -> tuple[RelayInfo, RelayInfo] | None:
    """The relay this tunnel uses, with its grant for both ends, as (a's, b's): the same
    grant, each with the RS endpoint of that end's family (None: no relays)."""
    relay = choose_relay(relays, tunnel_id)
    if relay is None:
        return None
    info = relay_info(relay, dc_id, tunnel_id, expires_ms, a.public_key, b.public_key)
    return (
        replace(info, endpoint=relay.endpoint_for(a)),
        replace(info, endpoint=relay.endpoint_for(b)),
    )


def peer_endpoints(peer: NodeSession, private: bool, family: int = 0) -> tuple[Endpoint, ...]:
    """Observed per family first (the plan's family first, when it has one); local ones only
    for a same-NAT route (section 3), of the plan's family."""
    order = (family, 10 - family) if family else (4, 6)
    observed = [peer.endpoints[f] for f in order if f in peer.endpoints]
    local = [
        ep
        for ep in peer.local_endpoints
        if ep not in observed and (not family or family_of(ep) == family)
    ] if private else []
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
    vip6_of: Callable[[str], str] = lambda vip4: VIP6_NONE,
) -> Direction:
    peer_vip4 = peer.vip_of(peer_name)
    return Direction(
        dc_id=dc_id,
        tunnel_id=tunnel_id,
        route=Route(plan.route),
        role=role,
        self_name=self_name,
        peer_name=peer_name,
        peer_vip4=peer_vip4,
        peer_vip6=vip6_of(peer_vip4),
        peer_key=peer.public_key,
        peer_endpoints=peer_endpoints(peer, plan.private_endpoints, plan.family),
        relay=relay,
    )


def other(role: Role) -> Role:
    return Role.RESPOND if role == Role.INITIATE else Role.INITIATE
