"""The DC's directing (v2, sans-IO): Directions for a DIRECTION_REQUEST, re-directions when
an end moves, restarts or comes back, and TUNNEL_GONE when one goes (docs/protocol.md 7.2,
7.3).

Rules:
- A DIRECTION_REQUEST gets a route from the decision table (directions.plan_route), a new
  DirectedTunnel, ROUTE_DIRECTION to the target first and the requester's Direction in the
  answer.
- A re-direction (dc/redirects.py decides when) decides the tunnel's route again from both
  ends as the DC sees them now and sends each end its new Direction for the same
  tunnel_id: ROUTE_DIRECTION to an end that no longer holds the tunnel (it restarted or was
  told TUNNEL_GONE), ROUTE_UPDATE to one that does (it handshakes again on the new route).
  No route any more: TUNNEL_GONE(NO_ROUTE) to both, and the tunnel ends.
- Everything the DC sends on its own (ROUTE_DIRECTION, ROUTE_UPDATE, TUNNEL_GONE) is resent
  re-encrypted until that node acks it (8 s). A newer message for the same tunnel and end
  ends the older one's resends, so an old route never arrives after a new one.
- Each end of a tunnel is told at most once that it is gone (`DirectedTunnel.lost`).
- Grants expire (GRANT_LIFETIME_S): a tunnel with a relay gets a fresh Direction,
  ROUTE_DIRECTION with a new grant, GRANT_RENEW_BEFORE_S before; an end whose route is
  unchanged only binds again with it (no handshake).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from ..proto.bodies_v2 import (
    Direction,
    DirectionRequest,
    DirectionResponse,
    Message,
    RelayInfo,
    RouteDirection,
    RouteUpdate,
    TunnelGone,
)
from ..proto.fields_v2 import VIP6_NONE, GoneReason, Role, Route, Status
from ..proto.machine import Drops
from ..proto.transactions import Transactions
from .directions import (
    DirectedTunnel,
    DirectedTunnels,
    RelayChoice,
    direction_for,
    other,
    plan_route,
    relay_for,
)
from .events import DcEvent, NoRoute, RouteDecided, RouteDirectionUnacked, RouteUpdated
from .route import RoutePlan
from .sessions import NodeSession

DC_REQUEST_TIMEOUT_S = 8.0  # ROUTE_DIRECTION, ROUTE_UPDATE, TUNNEL_GONE: resent until acked
OUTGOING_MAX = 65536  # the DC's own requests in flight (each names a live directed tunnel)
GRANT_RENEW_BEFORE_S = 300.0  # a relayed tunnel's grant is renewed this long before expiry

Outgoing = RouteDirection | RouteUpdate | TunnelGone
Send = Callable[[NodeSession, Message, float], None]


class Director:
    def __init__(
        self,
        *,
        dc_id: bytes,
        sessions: dict[bytes, NodeSession],
        relays: list[RelayChoice],
        grant_lifetime_ms: int,
        send: Send,
        txid: Callable[[], int],
        epoch_ms: Callable[[float], int],
        events: list[DcEvent],
        tunnels: DirectedTunnels,
        drops: Drops,
        vip6_of: Callable[[str], str] = lambda vip4: VIP6_NONE,
    ) -> None:
        self.dc_id = dc_id
        self.vip6_of = vip6_of  # a name's IPv6 VIP from its IPv4 one (vip6.py)
        self.sessions = sessions
        self.relays = relays
        self.tunnels = tunnels
        self.tx: Transactions[str, tuple[int, bytes]] = Transactions(OUTGOING_MAX)
        self._grant_lifetime_ms = grant_lifetime_ms
        self._send = send
        self._txid = txid
        self._epoch_ms = epoch_ms
        self._events = events
        self._drops = drops
        self._renewals: list[tuple[int, int]] = []  # heap of (renew at, ms; tunnel id)
        self._renew_before_ms = int(min(GRANT_RENEW_BEFORE_S * 1000, grant_lifetime_ms / 2))

    # --- a node asks -------------------------------------------------------------------

    def on_request(
        self, requester: NodeSession, target: NodeSession, msg: DirectionRequest, now: float
    ) -> DirectionResponse:
        plan = plan_route(requester, target, relay_available=bool(self.relays))
        if plan is None:
            self._events.append(
                NoRoute(requester.fqdn, msg.fqdn, requester.reach().value, target.reach().value)
            )
            return DirectionResponse(msg.txid, Status.NO_ROUTE)
        tunnel = self.tunnels.add(requester, target, msg.from_name, msg.fqdn)
        if tunnel is None:
            self._drops.drop("too_many_tunnels")
            return DirectionResponse(msg.txid, Status.NO_ROUTE)
        for_requester, for_target, relay = self._directions(tunnel, plan, requester, target, now)
        self._request(target, RouteDirection(self._txid(), for_target), tunnel, now)
        self._events.append(RouteDecided(**_route_fields(tunnel, plan, requester, target, relay)))
        return DirectionResponse(msg.txid, Status.OK, for_requester)

    # --- the DC re-directs --------------------------------------------------------------

    def redirect(
        self, tunnel: DirectedTunnel, requester: NodeSession, target: NodeSession, cause: str,
        now: float,
    ) -> None:
        """Both ends online: a fresh route and a Direction to each (or TUNNEL_GONE)."""
        plan = plan_route(requester, target, relay_available=bool(self.relays))
        if plan is None:
            for end in (requester, target):
                self.tell_gone(end, tunnel, GoneReason.NO_ROUTE, now)
            self.tunnels.remove(tunnel.tunnel_id)
            self._events.append(
                NoRoute(tunnel.requester, tunnel.target, requester.reach().value,
                        target.reach().value)
            )
            return
        for_requester, for_target, relay = self._directions(tunnel, plan, requester, target, now)
        for end, direction in ((target, for_target), (requester, for_requester)):
            if end.public_key in tunnel.lost or cause == "grant_renewal":
                msg: Outgoing = RouteDirection(self._txid(), direction)
            else:
                msg = RouteUpdate(self._txid(), direction)
            self._request(end, msg, tunnel, now)
        tunnel.lost.clear()
        fields = _route_fields(tunnel, plan, requester, target, relay)
        self._events.append(RouteUpdated(cause=cause, **fields))

    def tell_gone(
        self, end: NodeSession, tunnel: DirectedTunnel, reason: GoneReason, now: float
    ) -> None:
        """TUNNEL_GONE to an end that still holds the tunnel (once)."""
        if end.public_key in tunnel.lost or not end.online:
            return
        tunnel.lost.add(end.public_key)
        self._request(end, TunnelGone(self._txid(), tunnel.tunnel_id, reason), tunnel, now)

    # --- our requests in flight ---------------------------------------------------------

    def finish(self, session: NodeSession, txid: int, tunnel_id: int | None) -> bool:
        """An ack ends our resends only from the node they went to."""
        tx = self.tx.get(txid)
        if (
            tx is None
            or tx.context[1] != session.public_key
            or (tunnel_id is not None and tx.context[0] != tunnel_id)
        ):
            return False
        self.tx.finish(txid)
        tunnel = self.tunnels.by_id.get(tx.context[0])
        if tunnel is not None and tunnel.inflight.get(session.public_key) == txid:
            del tunnel.inflight[session.public_key]
        return True

    def handle_timer(self, now: float) -> None:
        resend, expired = self.tx.due(now)
        for tx in resend:
            session = self.sessions.get(tx.context[1])
            if session is not None:
                self._send(session, tx.message, now)
        for tx in expired:
            self._events.append(RouteDirectionUnacked(tunnel_id=tx.context[0], kind=tx.kind))
        self._renew_grants(now)

    def next_renewal(self) -> float | None:
        """When the next grant renewal is due, on the `now` clock."""
        if not self._renewals:
            return None
        return self._renewals[0][0] / 1000 - self._epoch_ms(0.0) / 1000

    def _schedule_renewal(self, expires_ms: int, tunnel_id: int) -> None:
        heapq.heappush(self._renewals, (expires_ms - self._renew_before_ms, tunnel_id))
        if len(self._renewals) > 2 * len(self.tunnels) + 1024:  # stale entries of re-directions
            self._renewals = [
                (t.grant_expires_ms - self._renew_before_ms, t.tunnel_id)
                for t in self.tunnels.by_id.values()
                if t.grant_expires_ms is not None
            ]
            heapq.heapify(self._renewals)

    def _renew_grants(self, now: float) -> None:
        now_ms = self._epoch_ms(now)
        while self._renewals and self._renewals[0][0] <= now_ms:
            _, tunnel_id = heapq.heappop(self._renewals)
            tunnel = self.tunnels.by_id.get(tunnel_id)
            if tunnel is None or tunnel.grant_expires_ms is None:
                continue
            if tunnel.grant_expires_ms - now_ms > self._renew_before_ms:
                continue  # renewed since (a re-direction): its own entry is in the heap
            ends = [self.sessions.get(k) for k in (tunnel.requester_key, tunnel.target_key)]
            if ends[0] is None or ends[1] is None or not (ends[0].online and ends[1].online):
                continue  # dormant or ending: a re-direction will bring a fresh grant
            self.redirect(tunnel, ends[0], ends[1], "grant_renewal", now)

    def _request(self, end: NodeSession, msg: Outgoing, tunnel: DirectedTunnel, now: float):
        older = tunnel.inflight.get(end.public_key)
        if older is not None:
            self.tx.finish(older)
        tunnel.inflight[end.public_key] = msg.txid
        self._send(end, msg, now)
        kind = type(msg).__name__
        context = (tunnel.tunnel_id, end.public_key)
        self.tx.start(msg.txid, kind, msg, now, DC_REQUEST_TIMEOUT_S, context=context)

    def _directions(
        self,
        tunnel: DirectedTunnel,
        plan: RoutePlan,
        requester: NodeSession,
        target: NodeSession,
        now: float,
    ) -> tuple[Direction, Direction, RelayInfo | None]:
        """(the requester's Direction, the target's, the relay with its fresh grant)."""
        tunnel_id, relays = tunnel.tunnel_id, None
        tunnel.grant_expires_ms = None
        tunnel.route, tunnel.why = plan.route.name.lower(), plan.why
        tunnel.initiator = tunnel.requester if plan.requester_initiates else tunnel.target
        if plan.route != Route.DIRECT:
            expires_ms = self._epoch_ms(now) + self._grant_lifetime_ms
            relays = relay_for(self.relays, self.dc_id, tunnel_id, expires_ms, requester, target)
            if relays is not None:
                tunnel.grant_expires_ms = expires_ms
                self._schedule_renewal(expires_ms, tunnel_id)
        relay, relay_of_target = relays if relays is not None else (None, None)
        role = Role.INITIATE if plan.requester_initiates else Role.RESPOND
        names = (tunnel.requester, tunnel.target)
        for_target = direction_for(
            self.dc_id, tunnel_id, plan, other(role), names[1], requester, names[0],
            relay_of_target, self.vip6_of,
        )
        for_requester = direction_for(
            self.dc_id, tunnel_id, plan, role, names[0], target, names[1], relay, self.vip6_of
        )
        return for_requester, for_target, relay


def _route_fields(
    tunnel: DirectedTunnel,
    plan: RoutePlan,
    requester: NodeSession,
    target: NodeSession,
    relay: RelayInfo | None,
) -> dict:
    return {
        "tunnel_id": tunnel.tunnel_id,
        "requester": tunnel.requester,
        "target": tunnel.target,
        "route": plan.route.name.lower(),
        "why": plan.why,
        "initiator": tunnel.requester if plan.requester_initiates else tunnel.target,
        "requester_reach": requester.reach(plan.family).value,  # in the route's family
        "target_reach": target.reach(plan.family).value,
        "relay": f"{relay.endpoint[0]}:{relay.endpoint[1]}" if relay else None,
        "family": plan.family,
    }
