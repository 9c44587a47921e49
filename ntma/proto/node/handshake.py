"""Tunnels being built, one Handshake each, from the Direction until TunnelUp (sans-IO).

DIRECT: the initiator sends Tunnel Requests to the peer's endpoints.
PUNCH: the same, while the responder sends PUNCH packets toward the initiator to open
  its own NAT; after PUNCH_FALLBACK_S without an answer the initiator sends its request
  through the relay instead (both ends bound there at the start).
RELAY: both ends bind at the relay; the initiator's request goes through it once the
  relay confirms the binding.
Requests and responses are idempotent on retransmit: the same txid gets the same answer,
and a finished tunnel answers a retransmitted request with its stored response.
A finished tunnel is installed in the TunnelTable, its one owner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..buffer import Endpoint
from ..crypto import StaticKey, derive_tunnel_keys, ephemeral_public
from ..messages import Direction, Punch, Role, Route, Status, TunnelRequest, TunnelResponse
from ..packet import wrap_envelope
from ..tunnel import Tunnel, TunnelTable
from .events import DirectionResolved, RouteFallback, TunnelUp
from .relay import RelayBindings
from .wire import NodeTx, TunnelBeingBuilt, Wire

TUNNEL_TIMEOUT_S = 6.0
PUNCH_FALLBACK_S = 2.5  # hole punching gets this long before the relay takes over


@dataclass
class Handshake:
    """One tunnel being built: what the DC directed, our ephemeral key, our txid."""

    direction: Direction
    ephemeral: X25519PrivateKey
    txid: int  # of our Tunnel Request (initiator), or of our wait for one (responder)
    fallback_at: float | None = None  # PUNCH initiator: when to go through the relay
    sent_via_relay: bool = False

    @property
    def tunnel_id(self) -> int:
        return self.direction.tunnel_id

    @property
    def initiates(self) -> bool:
        return self.direction.role == Role.INITIATE

    def timeout(self) -> float:
        route = self.direction.route
        return TUNNEL_TIMEOUT_S + (PUNCH_FALLBACK_S if route != Route.DIRECT else 0)

    def request(self, vip: str, epoch_ms: int) -> TunnelRequest:
        return TunnelRequest(
            self.txid, self.tunnel_id, epoch_ms, ephemeral_public(self.ephemeral), vip
        )

    def response(self, request: TunnelRequest, vip: str) -> TunnelResponse:
        return TunnelResponse(
            request.txid, request.tunnel_id, ephemeral_public(self.ephemeral), vip
        )

    def tunnel(
        self, static: StaticKey, peer_ephemeral: bytes, addr: Endpoint, now: float, via_relay: bool
    ) -> Tunnel:
        """The finished tunnel, its keys from both static and both ephemeral keys."""
        direction = self.direction
        keys = derive_tunnel_keys(
            tunnel_id=self.tunnel_id,
            initiator=self.initiates,
            static=static,
            peer_static=direction.peer_public_key,
            ephemeral=self.ephemeral,
            peer_ephemeral=peer_ephemeral,
        )
        tunnel = Tunnel(self.tunnel_id, direction.peer_fqdn, direction.peer_vip, addr, keys, now)
        # The route a tunnel actually took: a PUNCH that fell back is a relay tunnel.
        tunnel.route = "relay" if via_relay else direction.route.name.lower()
        return tunnel


class Handshakes:
    def __init__(
        self,
        wire: Wire,
        tunnels: TunnelTable,
        relays: RelayBindings,
        own_vip: Callable[[], str],
        generate_key: Callable[[], X25519PrivateKey],
    ) -> None:
        self._wire = wire
        self._tunnels = tunnels
        self._relays = relays
        self._own_vip = own_vip
        self._generate_key = generate_key
        self._building: dict[int, Handshake] = {}  # by tunnel id

    def __contains__(self, tunnel_id: int) -> bool:
        return tunnel_id in self._building

    def toward(self, fqdn: str) -> bool:
        return any(h.direction.peer_fqdn == fqdn for h in self._building.values())

    def timers(self) -> list[float | None]:
        return [h.fallback_at for h in self._building.values()]

    def start(self, direction: Direction, now: float) -> None:
        """Begin the tunnel a Direction asks for: bind at its relay, send what opens it."""
        wire = self._wire
        peer = direction.peer_public_key
        wire.know(peer)
        handshake = Handshake(direction, self._generate_key(), wire.txid())
        self._building[direction.tunnel_id] = handshake
        if direction.relay is not None:
            self._relays.bind(direction.tunnel_id, direction.relay, now)
        route = direction.route
        if handshake.initiates and route in (Route.DIRECT, Route.PUNCH):
            request = handshake.request(self._own_vip(), wire.epoch_ms(now))
            datagrams = [wire.seal(request, peer, ep) for ep in direction.peer_endpoints]
        elif not handshake.initiates and route == Route.PUNCH:
            punch = Punch(direction.tunnel_id)
            datagrams = [wire.seal(punch, peer, ep) for ep in direction.peer_endpoints]
        else:
            datagrams = []  # RELAY: the request goes out once the relay confirms the binding
        wire.out.extend(datagrams)
        if handshake.initiates and route == Route.PUNCH and direction.relay is not None:
            handshake.fallback_at = now + PUNCH_FALLBACK_S
        wire.tx.start(
            handshake.txid,
            NodeTx.TUNNEL,
            datagrams,
            now,
            handshake.timeout(),
            context=TunnelBeingBuilt(direction.tunnel_id),
        )

    def give_up(self, tunnel_id: int) -> None:
        """Our request (or the wait for the peer's) timed out: the name has no route."""
        handshake = self._building.pop(tunnel_id, None)
        if handshake is not None:
            self._wire.events.append(
                DirectionResolved(handshake.direction.peer_fqdn, Status.NO_ROUTE)
            )

    # --- through the relay --------------------------------------------------------------

    def on_relay_bound(self, tunnel_id: int, now: float) -> None:
        """The relay confirmed our binding: a RELAY initiator can now send its request."""
        handshake = self._building.get(tunnel_id)
        if handshake is None or handshake.sent_via_relay:
            return
        if handshake.initiates and handshake.direction.route == Route.RELAY:
            handshake.sent_via_relay = True
            self._request_via_relay(handshake, now)

    def fall_back(self, now: float) -> None:
        """PUNCH initiators whose punching went unanswered go through the relay."""
        for handshake in self._building.values():
            if handshake.fallback_at is not None and now >= handshake.fallback_at:
                handshake.fallback_at = None
                handshake.sent_via_relay = True
                direction = handshake.direction
                self._wire.events.append(
                    RouteFallback(direction.tunnel_id, direction.peer_fqdn, "punch", "relay")
                )
                self._request_via_relay(handshake, now)

    def _request_via_relay(self, handshake: Handshake, now: float) -> None:
        """Send (and from now on retransmit) the Tunnel Request through the relay."""
        wire = self._wire
        relay = handshake.direction.relay
        assert relay is not None
        request = handshake.request(self._own_vip(), wire.epoch_ms(now))
        sealed, _ = wire.seal(request, handshake.direction.peer_public_key, relay.endpoint)
        datagram = (wrap_envelope(handshake.tunnel_id, sealed), relay.endpoint)
        wire.out.append(datagram)
        tx = wire.tx.get(handshake.txid)
        if tx is not None:
            tx.datagrams = [datagram]
            tx.deadline = max(tx.deadline, now + TUNNEL_TIMEOUT_S)

    # --- the peer's messages ------------------------------------------------------------

    def on_request(
        self, sender: bytes, msg: TunnelRequest, addr: Endpoint, now: float, via_relay: bool
    ) -> None:
        handshake = self._building.get(msg.tunnel_id)
        wire = self._wire
        if handshake is None:
            tunnel = self._tunnels.by_id.get(msg.tunnel_id)
            if tunnel is not None and tunnel.last_response is not None:  # our answer was lost
                wire.out.append(_routed(tunnel.last_response, msg.tunnel_id, addr, via_relay))
            else:
                wire.drops.drop("tunnel request for no direction")
            return
        if sender != handshake.direction.peer_public_key or handshake.initiates:
            wire.drops.drop("tunnel request from the wrong key or role")
            return
        tunnel = handshake.tunnel(wire.static, msg.ephemeral, addr, now, via_relay)
        sealed, _ = wire.seal(handshake.response(msg, self._own_vip()), sender, addr)
        wire.out.append(_routed(sealed, msg.tunnel_id, addr, via_relay))
        tunnel.last_response = sealed
        self._ready(handshake, tunnel)

    def on_response(
        self, sender: bytes, msg: TunnelResponse, addr: Endpoint, now: float, via_relay: bool
    ) -> None:
        handshake = self._building.get(msg.tunnel_id)
        if (
            handshake is None
            or handshake.txid != msg.txid
            or sender != handshake.direction.peer_public_key
            or not handshake.initiates
        ):
            return  # a duplicate response after the tunnel is up, or a stray one
        self._ready(
            handshake, handshake.tunnel(self._wire.static, msg.ephemeral, addr, now, via_relay)
        )

    def _ready(self, handshake: Handshake, tunnel: Tunnel) -> None:
        wire = self._wire
        del self._building[tunnel.tunnel_id]
        wire.tx.finish(handshake.txid)
        replaced = self._tunnels.by_fqdn(tunnel.peer_fqdn) is not None
        self._tunnels.install(tunnel)
        wire.events.append(TunnelUp(tunnel, replaced))
        wire.events.append(DirectionResolved(tunnel.peer_fqdn, Status.OK, tunnel.peer_vip))


def _routed(
    sealed: bytes, tunnel_id: int, addr: Endpoint, via_relay: bool
) -> tuple[bytes, Endpoint]:
    """Answer the way the request came: wrapped for the relay, or straight back."""
    return (wrap_envelope(tunnel_id, sealed) if via_relay else sealed), addr
