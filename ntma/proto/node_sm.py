"""Node-side signalling state machine (sans-IO).

Rules:
- Everything that changes the node's signalling state lives here. Inputs are
  receive(), request_direction(), start(), deregister() and handle_timer(), each
  given `now` (monotonic seconds). Outputs are drained by the caller:
  datagrams_to_send() and events().
- Registration first; names asked for before it are queued. Keep Alive runs
  while registered; a missed Keep Alive or REREGISTER starts registration again.
- A Direction (from our Direction Request or the DC's Route Direction) makes us
  either the tunnel's initiator (send Tunnel Request to the peer) or its
  responder (wait for the peer's request). Requests and responses are
  idempotent on retransmit: the same txid gets the same answer.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .buffer import CodecError, Endpoint
from .crypto import SignalBox, StaticKey, derive_tunnel_keys, ephemeral_public
from .messages import (
    Deregister,
    DeregisterAck,
    Direction,
    DirectionRequest,
    DirectionResponse,
    Keepalive,
    KeepaliveAck,
    Message,
    Probe,
    ProbeAck,
    Punch,
    Register,
    RegisterAck,
    RelayBind,
    RelayBound,
    RelayInfo,
    Role,
    Route,
    RouteDirection,
    RouteDirectionAck,
    Status,
    TunnelRequest,
    TunnelResponse,
)
from .names import normalize_fqdn
from .packet import (
    UnknownPeer,
    is_envelope,
    open_message,
    peek_sender,
    seal_message,
    unwrap_envelope,
    wrap_envelope,
)
from .transactions import Transactions
from .tunnel import Tunnel

REGISTER_TIMEOUT_S = 8.0
DIRECTION_TIMEOUT_S = 5.0
TUNNEL_TIMEOUT_S = 6.0
REFUSED_RETRY_S = 30.0
EARLY_REQUESTS_MAX = 16
PUNCH_FALLBACK_S = 2.5  # hole punching gets this long before the relay takes over
RELAY_REBIND_S = 20.0
PROBE_TIMEOUT_S = 4.0
TUNNEL_STALE_S = 30.0


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    vip: str
    prefix_len: int
    observed: Endpoint  # our endpoint as the DC sees it
    behind_nat: bool
    keepalive_s: int


@dataclass(frozen=True)
class RegistrationFailed:
    status: Status
    reason: str  # readable, for the log


@dataclass(frozen=True)
class DcUnreachable:
    """The DC did not answer a registration or keep-alive in time."""

    kind: str


@dataclass(frozen=True)
class TunnelUp:
    tunnel: Tunnel
    replaced: bool


@dataclass(frozen=True)
class DirectionResolved:
    """Outcome for a name asked with request_direction(): OK with the peer VIP once
    the tunnel is up, or the DC's (or a time-out's) status."""

    fqdn: str
    status: Status
    vip: str | None = None


@dataclass(frozen=True)
class MessageDropped:
    reason: str


@dataclass(frozen=True)
class RouteFallback:
    """Hole punching got no answer in time: the tunnel is being built through the relay."""

    tunnel_id: int
    peer: str
    from_route: str
    to_route: str


Event = (
    Registered
    | RegistrationFailed
    | DcUnreachable
    | TunnelUp
    | DirectionResolved
    | MessageDropped
    | RouteFallback
)


@dataclass
class _Handshake:
    """A tunnel being built, from the Direction until TunnelUp."""

    direction: Direction
    ephemeral: X25519PrivateKey
    txid: int
    fallback_at: float | None = None  # PUNCH initiator: when to go through the relay
    sent_via_relay: bool = False


class NodeSignalling:
    def __init__(
        self,
        *,
        fqdn: str,
        static: StaticKey,
        dc_public: bytes,
        dc_endpoint: Endpoint,
        local_endpoints: Callable[[], list[Endpoint]],
        random_bytes: Callable[[int], bytes] = os.urandom,
        epoch_offset: float | None = None,
    ) -> None:
        self.fqdn = fqdn
        self._static = static
        self._dc_public = dc_public
        self._dc_endpoint = dc_endpoint
        self._local_endpoints = local_endpoints
        self._random = random_bytes
        if epoch_offset is None:  # wall clock minus the clock `now` comes from
            epoch_offset = time.time() - time.monotonic()
        self._epoch_offset = epoch_offset
        self._boxes: dict[bytes, SignalBox] = {dc_public: SignalBox(static, dc_public)}
        self._tx = Transactions()
        self._out: list[tuple[bytes, Endpoint]] = []
        self._events: list[Event] = []
        self.registered: Registered | None = None
        self._keepalive_at: float | None = None
        self._register_retry_at: float | None = None
        self._waiting_names: set[str] = set()  # asked before registration finished
        self._asking: dict[str, int] = {}  # fqdn -> direction txid in flight
        self._handshakes: dict[int, _Handshake] = {}  # tunnel id -> handshake
        self._tunnels_by_fqdn: dict[str, Tunnel] = {}
        self._early: OrderedDict[bytes, tuple[bytes, Endpoint]] = OrderedDict()
        self._relay_bindings: dict[int, tuple[RelayInfo, float]] = {}  # tunnel -> (relay, rebind)
        self.nat_probe_observed: Endpoint | None = None

    # --- outputs ----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def get_timer(self) -> float | None:
        times = [self._tx.next_deadline(), self._keepalive_at, self._register_retry_at]
        times += [h.fallback_at for h in self._handshakes.values()]
        times += [due for _, due in self._relay_bindings.values()]
        return min((t for t in times if t is not None), default=None)

    # --- inputs -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._register(now)

    def deregister(self, now: float) -> None:
        if self.registered is not None:
            self._request(Deregister(self._txid(), self._epoch_ms(now)), "deregister", now, 2.0)
            self.registered = None
            self._keepalive_at = None

    def request_direction(self, fqdn: str, now: float) -> None:
        """Resolve fqdn through the DC and build a tunnel; a DirectionResolved follows."""
        fqdn = normalize_fqdn(fqdn)
        tunnel = self._tunnels_by_fqdn.get(fqdn)
        if tunnel is not None:
            # VIPs are stable, so answer now; ask the DC again in the background when
            # the tunnel has gone quiet (the peer may have restarted).
            self._events.append(DirectionResolved(fqdn, Status.OK, tunnel.peer_vip))
            quiet_since = max(tunnel.created_at, tunnel.last_receive)
            if now - quiet_since < TUNNEL_STALE_S or self.registered is None:
                return
        if self.registered is None:
            self._waiting_names.add(fqdn)
            return
        if fqdn not in self._asking and not self._handshake_for(fqdn):
            txid = self._txid()
            msg = DirectionRequest(txid, self._epoch_ms(now), fqdn)
            self._request(msg, "direction", now, DIRECTION_TIMEOUT_S, context=fqdn)
            self._asking[fqdn] = txid

    def forget_tunnel(self, tunnel: Tunnel) -> None:
        if self._tunnels_by_fqdn.get(tunnel.peer_fqdn) is tunnel:
            del self._tunnels_by_fqdn[tunnel.peer_fqdn]

    def handle_timer(self, now: float) -> None:
        resend, expired = self._tx.due(now)
        self._out.extend(resend)
        for tx in expired:
            self._on_expired(tx.kind, tx.context, now)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._keepalive_at = None
            ka = Keepalive(self._txid(), self._epoch_ms(now))
            timeout = max(2.0, min(6.0, self.registered.keepalive_s if self.registered else 6))
            self._request(ka, "keepalive", now, timeout)
        if self._register_retry_at is not None and now >= self._register_retry_at:
            self._register_retry_at = None
            self._register(now)
        self._punch_fallbacks(now)
        self._rebind_relays(now)

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        sealed = datagram
        try:
            via_relay = is_envelope(datagram)
            if via_relay:
                _, sealed = unwrap_envelope(datagram)
            sender, msg = open_message(sealed, self._boxes.get)
            if sender == self._dc_public:
                self._from_dc(msg, addr, now)
            else:
                self._from_peer(sender, msg, addr, now, via_relay)
        except UnknownPeer:
            self._stash_early(datagram, sealed, addr)
        except CodecError as exc:  # includes invalid (low-order) keys from a peer
            self._events.append(MessageDropped(type(exc).__name__))

    # --- DC messages ------------------------------------------------------------------

    def _from_dc(self, msg: Message, addr: Endpoint, now: float) -> None:
        if isinstance(msg, RouteDirection):
            ack = RouteDirectionAck(msg.txid, msg.direction.tunnel_id)
            self._send_to(ack, self._dc_public, self._dc_endpoint)
            self._on_direction(msg.direction, now)
            return
        tx = self._tx.finish(msg.txid)
        if tx is None:
            return  # a late duplicate answer
        if isinstance(msg, RegisterAck):
            self._on_register_ack(msg, now)
        elif isinstance(msg, KeepaliveAck):
            self._on_keepalive_ack(msg, now)
        elif isinstance(msg, DirectionResponse):
            self._on_direction_response(tx.context, msg, now)
        elif isinstance(msg, ProbeAck):
            self.nat_probe_observed = msg.observed
        elif isinstance(msg, DeregisterAck):
            pass
        else:
            self._events.append(MessageDropped(f"unexpected {type(msg).__name__} from DC"))

    def _on_register_ack(self, msg: RegisterAck, now: float) -> None:
        if msg.status != Status.OK:
            reason = msg.reason or msg.status.name
            self._events.append(RegistrationFailed(msg.status, reason))
            self._register_retry_at = now + REFUSED_RETRY_S
            return
        behind_nat = msg.observed not in self._local_endpoints()
        self.registered = Registered(
            msg.vip, msg.prefix_len, msg.observed, behind_nat, msg.keepalive_s
        )
        self._events.append(self.registered)
        self._keepalive_at = now + max(1, msg.keepalive_s)
        if msg.probe is not None and behind_nat:  # let the DC see our NAT's mapping type
            probe = Probe(self._txid(), self._epoch_ms(now))
            datagram = self._seal(probe, self._dc_public, msg.probe)
            self._out.append(datagram)
            self._tx.start(probe.txid, "probe", [datagram], now, PROBE_TIMEOUT_S)
        for fqdn in sorted(self._waiting_names):
            self.request_direction(fqdn, now)
        self._waiting_names.clear()

    def _on_keepalive_ack(self, msg: KeepaliveAck, now: float) -> None:
        if msg.status == Status.REREGISTER or self.registered is None:
            self._register(now)
            return
        self._keepalive_at = now + max(1, self.registered.keepalive_s)

    def _on_direction_response(self, fqdn: str, msg: DirectionResponse, now: float) -> None:
        self._asking.pop(fqdn, None)
        if msg.status == Status.REREGISTER:
            self._waiting_names.add(fqdn)
            self._register(now)
        elif msg.direction is None:
            self._events.append(DirectionResolved(fqdn, msg.status))
        else:
            self._on_direction(msg.direction, now)

    def _on_expired(self, kind: str, context: object, now: float) -> None:
        if kind in ("register", "keepalive"):
            self._events.append(DcUnreachable(kind))
            self.registered = None
            self._register(now)
        elif kind == "direction":
            self._asking.pop(str(context), None)
            self._events.append(DirectionResolved(str(context), Status.NO_ROUTE))
        elif kind == "tunnel":
            handshake = self._handshakes.pop(int(context), None)  # type: ignore[call-overload]
            if handshake is not None:
                fqdn = handshake.direction.peer_fqdn
                self._events.append(DirectionResolved(fqdn, Status.NO_ROUTE))

    def _register(self, now: float) -> None:
        for tx in self._tx.find("register") + self._tx.find("keepalive"):
            self._tx.finish(tx.txid)
        self._keepalive_at = None
        msg = Register(self._txid(), self._epoch_ms(now), self.fqdn, self._local_endpoints())
        self._request(msg, "register", now, REGISTER_TIMEOUT_S)

    # --- tunnel handshake -------------------------------------------------------------
    # DIRECT: the initiator sends Tunnel Requests to the peer's endpoints.
    # PUNCH: the same, while the responder sends PUNCH packets toward the initiator to
    #   open its own NAT; after PUNCH_FALLBACK_S without an answer the initiator sends
    #   its request through the relay instead (both ends bound there at the start).
    # RELAY: both ends bind at the relay; the initiator's request goes through it once
    #   the relay confirms the binding.

    def _on_direction(self, direction: Direction, now: float) -> None:
        if direction.tunnel_id in self._handshakes or self._tunnel_with_id(direction.tunnel_id):
            return  # retransmitted Route Direction, or our own request's answer twice
        peer = direction.peer_public_key
        self._boxes.setdefault(peer, SignalBox(self._static, peer))
        handshake = _Handshake(direction, X25519PrivateKey.generate(), self._txid())
        self._handshakes[direction.tunnel_id] = handshake
        if direction.relay is not None:
            self._boxes.setdefault(
                direction.relay.public_key, SignalBox(self._static, direction.relay.public_key)
            )
            self._bind_relay(direction.tunnel_id, direction.relay, now)
        initiate = direction.role == Role.INITIATE
        if initiate and direction.route in (Route.DIRECT, Route.PUNCH):
            datagrams = [
                self._seal(self._tunnel_request(handshake, now), peer, ep)
                for ep in direction.peer_endpoints
            ]
            self._out.extend(datagrams)
        elif not initiate and direction.route == Route.PUNCH:
            datagrams = [
                self._seal(Punch(direction.tunnel_id), peer, ep) for ep in direction.peer_endpoints
            ]
            self._out.extend(datagrams)
        else:
            datagrams = []  # RELAY: the request goes out once the relay confirms the binding
        if initiate and direction.route == Route.PUNCH and direction.relay is not None:
            handshake.fallback_at = now + PUNCH_FALLBACK_S
        timeout = TUNNEL_TIMEOUT_S + (PUNCH_FALLBACK_S if direction.route != Route.DIRECT else 0)
        self._tx.start(
            handshake.txid, "tunnel", datagrams, now, timeout, context=direction.tunnel_id
        )
        early = self._early.pop(peer, None)
        if early is not None:
            self.receive(early[0], early[1], now)

    def _tunnel_request(self, handshake: _Handshake, now: float) -> TunnelRequest:
        return TunnelRequest(
            handshake.txid,
            handshake.direction.tunnel_id,
            self._epoch_ms(now),
            ephemeral_public(handshake.ephemeral),
            self.registered.vip if self.registered else "0.0.0.0",
        )

    def _request_via_relay(self, handshake: _Handshake, now: float) -> None:
        """Send (and from now on retransmit) the Tunnel Request through the relay."""
        direction = handshake.direction
        relay = direction.relay
        assert relay is not None
        sealed, _ = self._seal(
            self._tunnel_request(handshake, now), direction.peer_public_key, relay.endpoint
        )
        datagram = (wrap_envelope(direction.tunnel_id, sealed), relay.endpoint)
        self._out.append(datagram)
        tx = self._tx.get(handshake.txid)
        if tx is not None:
            tx.datagrams = [datagram]
            tx.deadline = max(tx.deadline, now + TUNNEL_TIMEOUT_S)

    def _bind_relay(self, tunnel_id: int, relay: RelayInfo, now: float) -> None:
        bind = RelayBind(self._txid(), self._epoch_ms(now), relay.grant)
        datagram = self._seal(bind, relay.public_key, relay.endpoint)
        self._out.append(datagram)
        self._tx.start(
            bind.txid, "relay_bind", [datagram], now, TUNNEL_TIMEOUT_S, context=tunnel_id
        )
        self._relay_bindings[tunnel_id] = (relay, now + RELAY_REBIND_S)

    def _on_relay_bound(self, msg: RelayBound, now: float) -> None:
        if self._tx.finish(msg.txid) is None:
            return
        handshake = self._handshakes.get(msg.tunnel_id)
        if handshake is None or handshake.sent_via_relay:
            return
        direction = handshake.direction
        if direction.role == Role.INITIATE and direction.route == Route.RELAY:
            handshake.sent_via_relay = True
            self._request_via_relay(handshake, now)

    def _punch_fallbacks(self, now: float) -> None:
        for handshake in self._handshakes.values():
            if handshake.fallback_at is not None and now >= handshake.fallback_at:
                handshake.fallback_at = None
                handshake.sent_via_relay = True
                direction = handshake.direction
                self._events.append(
                    RouteFallback(direction.tunnel_id, direction.peer_fqdn, "punch", "relay")
                )
                self._request_via_relay(handshake, now)

    def _rebind_relays(self, now: float) -> None:
        """Bind again now and then, so the relay follows us if our address changed."""
        for tunnel_id, (relay, due) in list(self._relay_bindings.items()):
            tunnel = self._tunnel_with_id(tunnel_id)
            if tunnel_id not in self._handshakes and (tunnel is None or tunnel.route != "relay"):
                del self._relay_bindings[tunnel_id]
            elif now >= due:
                self._bind_relay(tunnel_id, relay, now)

    def _from_peer(
        self, sender: bytes, msg: Message, addr: Endpoint, now: float, via_relay: bool
    ) -> None:
        if isinstance(msg, TunnelRequest):
            self._on_tunnel_request(sender, msg, addr, now, via_relay)
        elif isinstance(msg, TunnelResponse):
            self._on_tunnel_response(sender, msg, addr, now, via_relay)
        elif isinstance(msg, RelayBound):
            self._on_relay_bound(msg, now)
        elif isinstance(msg, Punch):
            pass  # its only job was to open the sender's NAT toward us
        else:
            self._events.append(MessageDropped(f"unexpected {type(msg).__name__} from a peer"))

    def _on_tunnel_request(
        self, sender: bytes, msg: TunnelRequest, addr: Endpoint, now: float, via_relay: bool
    ) -> None:
        handshake = self._handshakes.get(msg.tunnel_id)
        if handshake is None:
            tunnel = self._tunnel_with_id(msg.tunnel_id)
            if tunnel is not None and tunnel.last_response is not None:  # our answer was lost
                self._out.append(self._routed(tunnel.last_response, msg.tunnel_id, addr, via_relay))
            else:
                self._events.append(MessageDropped("tunnel request for no direction"))
            return
        direction = handshake.direction
        if sender != direction.peer_public_key or direction.role != Role.RESPOND:
            self._events.append(MessageDropped("tunnel request from the wrong key or role"))
            return
        keys = derive_tunnel_keys(
            tunnel_id=msg.tunnel_id,
            initiator=False,
            static=self._static,
            peer_static=sender,
            ephemeral=handshake.ephemeral,
            peer_ephemeral=msg.ephemeral,
        )
        vip = self.registered.vip if self.registered else "0.0.0.0"
        response = TunnelResponse(
            msg.txid, msg.tunnel_id, ephemeral_public(handshake.ephemeral), vip
        )
        sealed, _ = self._seal(response, sender, addr)
        self._out.append(self._routed(sealed, msg.tunnel_id, addr, via_relay))
        tunnel = Tunnel(msg.tunnel_id, direction.peer_fqdn, direction.peer_vip, addr, keys, now)
        tunnel.last_response = sealed
        tunnel.route = _route_name(direction.route, via_relay)
        self._tunnel_ready(handshake, tunnel)

    def _on_tunnel_response(
        self, sender: bytes, msg: TunnelResponse, addr: Endpoint, now: float, via_relay: bool
    ) -> None:
        handshake = self._handshakes.get(msg.tunnel_id)
        if (
            handshake is None
            or handshake.txid != msg.txid
            or sender != handshake.direction.peer_public_key
            or handshake.direction.role != Role.INITIATE
        ):
            return  # a duplicate response after the tunnel is up, or a stray one
        direction = handshake.direction
        keys = derive_tunnel_keys(
            tunnel_id=msg.tunnel_id,
            initiator=True,
            static=self._static,
            peer_static=sender,
            ephemeral=handshake.ephemeral,
            peer_ephemeral=msg.ephemeral,
        )
        tunnel = Tunnel(msg.tunnel_id, direction.peer_fqdn, direction.peer_vip, addr, keys, now)
        tunnel.route = _route_name(direction.route, via_relay)
        self._tunnel_ready(handshake, tunnel)

    def _tunnel_ready(self, handshake: _Handshake, tunnel: Tunnel) -> None:
        self._handshakes.pop(tunnel.tunnel_id, None)
        self._tx.finish(handshake.txid)
        replaced = self._tunnels_by_fqdn.get(tunnel.peer_fqdn) is not None
        self._tunnels_by_fqdn[tunnel.peer_fqdn] = tunnel
        self._events.append(TunnelUp(tunnel, replaced))
        self._events.append(DirectionResolved(tunnel.peer_fqdn, Status.OK, tunnel.peer_vip))

    @staticmethod
    def _routed(
        sealed: bytes, tunnel_id: int, addr: Endpoint, via_relay: bool
    ) -> tuple[bytes, Endpoint]:
        return (wrap_envelope(tunnel_id, sealed) if via_relay else sealed), addr

    def _tunnel_with_id(self, tunnel_id: int) -> Tunnel | None:
        return next((t for t in self._tunnels_by_fqdn.values() if t.tunnel_id == tunnel_id), None)

    def _handshake_for(self, fqdn: str) -> bool:
        return any(h.direction.peer_fqdn == fqdn for h in self._handshakes.values())

    def _stash_early(self, datagram: bytes, sealed: bytes, addr: Endpoint) -> None:
        """Keep a peer's Tunnel Request that beat the DC's Route Direction to us."""
        try:
            sender = peek_sender(sealed)
        except CodecError as exc:
            self._events.append(MessageDropped(type(exc).__name__))
            return
        self._early[sender] = (datagram, addr)
        while len(self._early) > EARLY_REQUESTS_MAX:
            self._early.popitem(last=False)
        self._events.append(MessageDropped("signalling from a key not yet directed (kept)"))

    # --- helpers ----------------------------------------------------------------------

    def _txid(self) -> int:
        return int.from_bytes(self._random(4), "big")

    def _epoch_ms(self, now: float) -> int:
        return int((self._epoch_offset + now) * 1000)

    def _seal(self, msg: Message, peer: bytes, addr: Endpoint) -> tuple[bytes, Endpoint]:
        nonce = self._random(SignalBox.NONCE_LEN)
        return seal_message(msg, self._boxes[peer], self._static.public, nonce), addr

    def _send_to(self, msg: Message, peer: bytes, addr: Endpoint) -> None:
        self._out.append(self._seal(msg, peer, addr))

    def _request(
        self, msg: Message, kind: str, now: float, timeout: float, context: object = None
    ) -> None:
        datagram = self._seal(msg, self._dc_public, self._dc_endpoint)
        self._out.append(datagram)
        self._tx.start(msg.txid, kind, [datagram], now, timeout, context=context)  # type: ignore[union-attr]


def _route_name(route: Route, via_relay: bool) -> str:
    """The route a tunnel actually took: a PUNCH that fell back is a relay tunnel."""
    return "relay" if via_relay else route.name.lower()
