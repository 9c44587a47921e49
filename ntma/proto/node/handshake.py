"""The node's tunnel handshakes (protocol v2, sans-IO): from a Direction to a live tunnel,
then its rekeys, route updates and end (docs/protocol.md 4.2 to 4.4, 7.2, 7.4).

INITIATE end: one HANDSHAKE_INIT(TUNNEL_INIT), the same datagram to every endpoint of
  the Direction (DIRECT, PUNCH), or through the relay once it confirmed our binding
  (RELAY; PUNCH after PUNCH_FALLBACK_S without an answer: RouteFallback). Resends are
  the same bytes (wire.initiations.due -> resend()); after REKEY_TIMEOUT a fresh init
  (on_expired) until the first-handshake deadline, FIRST_DEADLINE_S, then NO_ROUTE.
  On the response (on_established) the keypair is current at once and an empty DATA
  goes out to confirm it.
RESPOND end: waits for the peer's init (on_init): wire.gate's cheap checks, then two
  X25519, then the init must name a Direction we hold (its key and names), else it is
  kept as an early init until one does; freshness per (initiator key, dc_id,
  tunnel_id); HANDSHAKE_RESP(TUNNEL_ACCEPT) goes back the way the init came. The new
  keypair waits in ring.next until the peer's first DATA confirms it (the data path).
  A PUNCH responder sends PUNCH datagrams to open its own NAT.
Live tunnels: either end may rekey (REKEY_AFTER_TIME on the current keypair's
  initiator side, or the send path's rekey_wanted); the previous keypair receives until
  REJECT_AFTER_TIME; expired keypairs free their indexes. A Direction for a live tunnel
  with the same (dc_id, tunnel_id) and ends is a ROUTE_UPDATE: handshake again on it.
  A Direction whose (dc_id, tunnel_id) is held for other ends is refused, counted.

Every index this part allocates is in wire.indexes and wire.by_index (owner: the
Tunnel) and, for keypairs, in the TunnelTable's by_index; all three are freed together.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..bodies_v2 import Direction, RelayInfo, TunnelAccept, TunnelClose, TunnelInit
from ..buffer import CodecError, Endpoint
from ..crypto import AuthError
from ..fields_v2 import VIP6_NONE, Route, Status
from ..gate import Admitted, SendCookie
from ..handshake import InitFrame, OpenedInit, build_resp, open_init
from ..initiate import PendingInit
from ..messages_v2 import REPLY_MAX, BodyKind, MsgType, decode, encode
from ..noise import SessionKeys
from ..session import REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, Keypair
from ..tunnel import Tunnel, TunnelRef, TunnelTable, punch_datagram
from .events import DirectionResolved, PeerGone, RouteFallback, TunnelUp
from .ports import HandshakeWire, RelayBinder
from .tunnels import Directed, EarlyInit, EarlyInits, only_grant_renewed
from .wire import TunnelContext

FIRST_DEADLINE_S = 12.0  # a first handshake ends with the requester's DNS deadline (7.2)
PUNCH_FALLBACK_S = 2.5  # hole punching gets this long before the relay takes over
PUNCH_AGAIN_S = (0.5, 1.5)  # a PUNCH responder punches again at these offsets
DIRECTED_MAX = 4096  # Directions held (building or live): the DC bounds what it directs
TUNNEL_INIT_MIN = REPLY_MAX[MsgType.TUNNEL_INIT]


class Handshakes:
    def __init__(
        self,
        wire: HandshakeWire,
        tunnels: TunnelTable,
        generate_key: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
        relays: RelayBinder | None = None,
    ) -> None:
        self._wire = wire
        self._tunnels = tunnels
        self._generate_key = generate_key
        self.relays = relays  # the one owner of relay bindings: bound and unbound here
        self._directed: dict[TunnelRef, Directed] = {}
        self.forgotten: list[TunnelRef] = []  # since the caller last drained it
        self._early = EarlyInits()
        self._last_now = 0.0

    # --- what others ask --------------------------------------------------------------

    def __contains__(self, ref: TunnelRef) -> bool:
        return ref in self._directed

    def toward(self, fqdn: str) -> bool:
        """Is a first handshake toward that name under way?"""
        return any(
            h.tunnel is None and h.direction.peer_name == fqdn for h in self._directed.values()
        )

    def needs_relay(self, dc_id: bytes, tunnel_id: int) -> bool:
        """Keep the relay binding: the tunnel is being built with one, or is relayed."""
        held = self._directed.get((dc_id, tunnel_id))
        if held is None or held.relay is None:
            return False
        return held.tunnel is None or held.deadline is not None or held.tunnel.route == "relay"

    def direction_of(self, ref: TunnelRef) -> Direction | None:
        """The Direction the DC sent for tunnel `ref` (route and role), if held."""
        held = self._directed.get(ref)
        return None if held is None else held.direction

    def table_sizes(self) -> dict[str, int]:
        return {"directed": len(self._directed), "early_inits": len(self._early)}

    # --- Directions -------------------------------------------------------------------

    def on_direction(self, direction: Direction, now: float, again: bool = False) -> None:
        """A DIRECTION_RESPONSE's or ROUTE_DIRECTION's Direction; `again` for a
        ROUTE_UPDATE's: handshake again even if the Direction reads the same."""
        self._sweep(now)
        wire = self._wire
        names = wire.names.get(direction.self_name)
        if names is None:
            wire.drops.drop("direction_for_unknown_name")
            return
        ref = (direction.dc_id, direction.tunnel_id)
        held = self._directed.get(ref)
        if held is not None:
            self._redirect(held, direction, now, again)
            return
        if len(self._directed) >= DIRECTED_MAX:
            wire.drops.drop("too_many_directions")
            return
        held = Directed(direction, names.vip4, names.vip6)
        self._directed[ref] = held
        wire.gate.pin(held.fresh_key)
        self._begin(held, now)
        early = self._early.take(held.fresh_key, now)
        if early is not None:
            self._on_directed_init(held, early.frame, early.opened, early.init, early, now)

    def _redirect(self, held: Directed, direction: Direction, now: float, again: bool) -> None:
        """A Direction for a tunnel id we hold: the same again, a ROUTE_UPDATE, or a
        collision with other ends (refused, counted)."""
        if not held.same_ends(direction):
            self._wire.drops.drop("tunnel_id_collision")
            return
        if direction == held.direction and not again:
            return  # the same Direction again (a retransmitted ROUTE_DIRECTION)
        if not again and held.tunnel is not None and only_grant_renewed(held.direction, direction):
            held.direction, held.tunnel.relay = direction, direction.relay
            if self.relays is not None and self.needs_relay(*held.ref):
                self.relays.bind(direction.relay, *held.ref, now)  # the same RS, a new grant
            return
        new_rs = direction.relay and (direction.relay.endpoint, direction.relay.public_key)
        if held.relay is not None and new_rs != (held.relay.endpoint, held.relay.public_key):
            self._unbind(held)  # another relay, or none (the same one: bound again below)
        held.direction = direction
        if held.tunnel is not None:
            held.tunnel.relay = direction.relay
        self._begin(held, now)

    def _begin(self, held: Directed, now: float) -> None:
        """Start this route's handshake (a first one, or again for a ROUTE_UPDATE)."""
        d = held.direction
        self._cancel_pending(held)
        held.started_at, held.deadline = now, now + FIRST_DEADLINE_S
        held.targets = list(d.peer_endpoints)
        held.via_relay, held.relay_bound = d.route == Route.RELAY, False
        held.fallback_at, held.punch_at, held.rekey_since = None, [], None
        if d.relay is not None and self.relays is not None:
            self.relays.bind(d.relay, d.dc_id, d.tunnel_id, now)
        if held.initiates:
            if d.route == Route.PUNCH and d.relay is not None:
                held.fallback_at = now + PUNCH_FALLBACK_S
            if d.route != Route.RELAY:
                self._initiate(held, now)  # RELAY: once the relay confirms our binding
        elif d.route == Route.PUNCH:
            self._punch(held)
            held.punch_at = [now + t for t in PUNCH_AGAIN_S]

    # --- our inits --------------------------------------------------------------------

    def _initiate(self, held: Directed, now: float) -> None:
        d, wire = held.direction, self._wire
        body = encode(TunnelInit(d.dc_id, d.tunnel_id, d.self_name, d.peer_name))
        try:
            held.pending = wire.initiations.start(
                d.peer_key,
                body,
                TUNNEL_INIT_MIN,
                now,
                wire.clock_epoch(now),
                context=TunnelContext(d.dc_id, d.tunnel_id),
            )
        except CodecError:  # too many handshakes in flight
            wire.drops.drop("handshakes_full")
            return
        self._send_init(held)

    def _send_init(self, held: Directed) -> None:
        pending, wire = held.pending, self._wire
        if pending is None:
            return
        if held.via_relay:
            relay = held.relay
            if relay is not None and held.relay_bound:
                wire.send_via_relay(relay, *held.ref, pending.datagram)
            return
        wire.out.extend((pending.datagram, target) for target in held.targets)

    def _cancel_pending(self, held: Directed) -> None:
        if held.pending is not None:
            self._wire.initiations.forget(held.pending)
            held.pending = None

    def _held_for(self, pending: PendingInit) -> Directed | None:
        context = pending.context
        if not isinstance(context, TunnelContext):
            return None
        held = self._directed.get((context.dc_id, context.tunnel_id))
        return held if held is not None and held.pending is pending else None

    def resend(self, pending: PendingInit, now: float) -> None:
        """Send a pending init of ours again (initiations.due, or rebuilt after a
        COOKIE_REPLY): the same datagram, the same way."""
        held = self._held_for(pending)
        if held is not None:
            self._send_init(held)

    def on_expired(self, pending: PendingInit, now: float) -> None:
        """REKEY_TIMEOUT passed without a response (initiations.expired removed it): a
        fresh init, until the first handshake's deadline or REKEY_ATTEMPT_TIME."""
        held = self._held_for(pending)
        if held is None:
            return
        held.pending = None
        if held.deadline is not None:
            if now < held.deadline:
                self._initiate(held, now)
        elif held.rekey_since is not None:
            if now - held.rekey_since < REKEY_ATTEMPT_TIME:
                self._initiate(held, now)
            else:
                held.rekey_since = None  # given up: the keypair expires on its own

    def on_relay_bound(self, dc_id: bytes, tunnel_id: int, now: float) -> None:
        """The RS confirmed our binding: inits waiting for the relay can go."""
        held = self._directed.get((dc_id, tunnel_id))
        if held is None:
            return
        held.relay_bound = True
        if not held.via_relay or held.deadline is None:
            return
        if held.pending is not None:
            self._send_init(held)
        elif held.initiates:
            self._initiate(held, now)

    def _fall_back(self, held: Directed, now: float) -> None:
        """PUNCH went unanswered: a fresh init through the relay (the same bytes from the
        RS's address would look like a replay to the peer's freshness check)."""
        held.fallback_at = None
        d = held.direction
        self._wire.events.append(RouteFallback(d.tunnel_id, d.peer_name, "punch", "relay"))
        held.via_relay = True
        self._cancel_pending(held)
        if held.relay_bound:
            self._initiate(held, now)

    def _punch(self, held: Directed) -> None:
        punch = punch_datagram()
        self._wire.out.extend((punch, target) for target in held.targets)

    # --- the peer's init ---------------------------------------------------------------

    def on_init(
        self, datagram: bytes, addr: Endpoint, now: float, relay: RelayInfo | None = None
    ) -> None:
        """A HANDSHAKE_INIT sent to this node (relay: it came in a RELAY_ENVELOPE)."""
        self._sweep(now)
        wire = self._wire
        verdict = wire.gate.admit(datagram, addr, now)
        if isinstance(verdict, SendCookie):
            if relay is None:
                wire.out.append((verdict.datagram, addr))
            else:
                wire.drops.drop("under_load_via_relay")  # no envelope to answer in yet
            return
        if not isinstance(verdict, Admitted):
            wire.drops.drop(verdict.reason)
            return
        if len(datagram) < TUNNEL_INIT_MIN:
            wire.drops.drop("init_too_small")
            return
        try:
            opened = open_init(verdict.frame, wire.static)
            init = decode(opened.body, where=BodyKind.INIT)
        except AuthError:
            wire.drops.drop("init_auth")
            return
        except CodecError:
            wire.drops.drop("malformed_init")
            return
        if not isinstance(init, TunnelInit):
            wire.drops.drop("init_body_not_served")
            return
        early = EarlyInit(verdict.frame, opened, init, addr, relay, now)
        held = self._directed.get((init.dc_id, init.tunnel_id))
        if held is None:
            self._early.keep(early)
            wire.drops.drop("early_init_kept")
            return
        self._on_directed_init(held, verdict.frame, opened, init, early, now)

    def _on_directed_init(
        self,
        held: Directed,
        frame: InitFrame,
        opened: OpenedInit,
        init: TunnelInit,
        came: EarlyInit,
        now: float,
    ) -> None:
        wire = self._wire
        if not held.matches(opened.initiator_public, init):
            wire.drops.drop("init_not_directed")  # no reply (4.3 step 4)
            return
        fresh = wire.gate.fresh(held.fresh_key, opened.timestamp, frame.datagram, came.addr, now)
        if fresh is False:
            wire.drops.drop("replayed_init")
            return
        if isinstance(fresh, bytes):
            self._reply(held, fresh, came.addr, came.relay)  # our response was lost
            return
        if held.tunnel is None and self._tunnels.full:
            wire.drops.drop("too_many_tunnels")
            return
        local = wire.indexes.new()
        accept = encode(TunnelAccept(init.dc_id, init.tunnel_id, Status.OK))
        response, keys = build_resp(
            opened,
            self._generate_key(),
            sender_index=local,
            receiver_index=frame.sender_index,
            body=accept,
        )
        self._reply(held, response, came.addr, came.relay)
        wire.gate.answered(held.fresh_key, frame.datagram, response, came.addr, now)
        keypair = Keypair(keys.send, keys.receive, local, frame.sender_index, now, False)
        self._add_keypair(held, keypair, came.addr, came.relay, now)

    def _reply(
        self, held: Directed, response: bytes, addr: Endpoint, relay: RelayInfo | None
    ) -> None:
        """Answer the way the init came: back through the relay, or straight back."""
        if relay is not None:
            self._wire.send_via_relay(relay, *held.ref, response)
        else:
            self._wire.out.append((response, addr))

    # --- our init answered --------------------------------------------------------------

    def on_established(
        self,
        pending: PendingInit,
        remote_index: int,
        body: bytes,
        keys: SessionKeys,
        addr: Endpoint,
        now: float,
        relay: RelayInfo | None = None,
    ) -> None:
        """A HANDSHAKE_RESP to one of our TUNNEL_INITs (initiations.on_response opened
        it; the pending's index is now this session's)."""
        wire = self._wire
        held = self._held_for(pending)
        if held is None:
            wire.indexes.release(pending.sender_index)
            wire.drops.drop("response_for_no_tunnel")
            return
        held.pending = None
        try:
            accept = decode(body, where=BodyKind.RESPONSE)
        except CodecError:
            accept = None
        if not isinstance(accept, TunnelAccept) or (accept.dc_id, accept.tunnel_id) != held.ref:
            wire.indexes.release(pending.sender_index)
            wire.drops.drop("malformed_accept")
            return
        if accept.status != Status.OK:
            wire.indexes.release(pending.sender_index)
            wire.drops.drop("tunnel_refused")
            if held.tunnel is None:
                self._give_up(held)
            return
        keypair = Keypair(keys.send, keys.receive, pending.sender_index, remote_index, now, True)
        self._add_keypair(held, keypair, addr, relay, now)

    # --- keypairs and tunnels ------------------------------------------------------------

    def _add_keypair(
        self,
        held: Directed,
        keypair: Keypair,
        addr: Endpoint,
        relay: RelayInfo | None,
        now: float,
    ) -> None:
        """A handshake completed (either side): the keypair joins the tunnel's ring; a
        first handshake makes the tunnel, a route update moves it."""
        wire, table = self._wire, self._tunnels
        endpoint = relay.endpoint if relay is not None else addr
        new_route = held.deadline is not None
        tunnel, first = held.tunnel, held.tunnel is None
        if tunnel is None:
            tunnel = held.tunnel = held.make_tunnel(endpoint, relay is not None, now)
        else:  # the path this handshake took is the tunnel's route from now on
            tunnel.route = held.route_name(relay is not None)
            tunnel.relay = held.direction.relay
        if keypair.initiator and (first or new_route or endpoint != tunnel.endpoint):
            tunnel.endpoint = endpoint  # the response authenticated this path
        self._release(tunnel.install(keypair))
        wire.by_index[keypair.local_index] = tunnel
        table.add_keypair(tunnel, keypair)
        held.deadline, held.fallback_at, held.punch_at, held.rekey_since = None, None, [], None
        if held.relay is not None and not self.needs_relay(*held.ref):
            self._unbind(held)  # up on another route: the binding has done its job
        if first:
            self._install(tunnel)
        elif new_route:
            wire.events.append(TunnelUp(tunnel, True))
        if keypair.initiator:  # confirm at once: an empty DATA on the new keypair (4.4)
            wire.out.append((tunnel.seal(b"", now), tunnel.endpoint))

    def _install(self, tunnel: Tunnel) -> None:
        wire = self._wire
        replaced = self._tunnels.install(tunnel)
        if replaced is not None:
            old = self._directed.get(replaced.ref)
            if old is not None and old.tunnel is replaced:
                self._forget(old)
        wire.events.append(TunnelUp(tunnel, replaced is not None))
        resolved = DirectionResolved(
            tunnel.peer_fqdn, Status.OK, tunnel.peer_vip, tunnel.self_fqdn, _vip6(tunnel.peer_vip6)
        )
        wire.events.append(resolved)

    def _release(self, keypairs: list[Keypair]) -> None:
        """Free what dropped keypairs held: their index, here and in both tables."""
        wire = self._wire
        self._tunnels.drop_keypairs(keypairs)
        for keypair in keypairs:
            wire.indexes.release(keypair.local_index)
            wire.by_index.pop(keypair.local_index, None)

    # --- ends ---------------------------------------------------------------------------

    def close(self, dc_id: bytes, tunnel_id: int, now: float, reason: str = "") -> None:
        """TUNNEL_GONE from the DC: forget the tunnel and its Direction (not reported back
        as TUNNEL_CLOSED: the DC keeps it to re-direct when the peer returns)."""
        held = self._directed.get((dc_id, tunnel_id))
        if held is not None:
            self._wire.events.append(PeerGone(tunnel_id, held.direction.peer_name, reason))
            self._forget(held)
            self.forgotten.remove(held.ref)

    def on_signal(self, tunnel: Tunnel, payload: bytes, addr: Endpoint, now: float) -> None:
        """A SIGNAL in a tunnel's own session (opened by the caller): TUNNEL_CLOSE."""
        try:
            msg = decode(payload, where=BodyKind.SESSION)
        except CodecError:
            self._wire.drops.drop("malformed_tunnel_signal")
            return
        if not isinstance(msg, TunnelClose) or msg.tunnel_id != tunnel.tunnel_id:
            self._wire.drops.drop("unexpected_tunnel_signal")
            return
        held = self._directed.get(tunnel.ref)
        if held is not None and held.tunnel is tunnel:
            self._forget(held)

    def send_close(self, tunnel: Tunnel, now: float) -> None:
        """Tell the peer we dropped this tunnel (TUNNEL_CLOSE in its session)."""
        try:
            datagram = tunnel.seal_signal(encode(TunnelClose(tunnel.tunnel_id)), now)
        except CodecError:
            return
        self._wire.out.append((datagram, tunnel.endpoint))

    def _give_up(self, held: Directed) -> None:
        """A first handshake found no route: the name has none (DirectionResolved)."""
        d = held.direction
        self._wire.events.append(DirectionResolved(d.peer_name, Status.NO_ROUTE, None, d.self_name))
        self._forget(held)

    def _forget(self, held: Directed) -> None:
        """Drop a Direction and its tunnel: pending init, pin, relay binding, indexes."""
        if self._directed.get(held.ref) is held:
            del self._directed[held.ref]
        self._cancel_pending(held)
        self._wire.gate.unpin(held.fresh_key)
        if held.relay is not None:
            self._unbind(held)
        tunnel = held.tunnel
        if tunnel is not None:
            self._release(tunnel.ring.all())
            self._tunnels.discard(tunnel)
        self.forgotten.append(held.ref)  # NodeSignalling tells the DC (TUNNEL_CLOSED)

    def _unbind(self, held: Directed) -> None:
        if self.relays is not None:
            self.relays.unbind(*held.ref)
        held.relay_bound = False

    # --- timers ---------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        times: list[float] = []
        for held in self._directed.values():
            times += held.timers()
            tunnel = held.tunnel
            if tunnel is None:
                continue
            rekey_at = self._rekey_at(held)
            if rekey_at is not None:
                times.append(rekey_at)
            times += [k.created_at + REJECT_AFTER_TIME for k in tunnel.ring.all()]
        if self._tunnels.dropped or self._tunnels.removed:
            times.append(self._last_now)
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        """First-handshake deadlines, PUNCH's fallback and punches, rekeys, expiry."""
        self._sweep(now)
        for held in list(self._directed.values()):
            if held.deadline is not None and now >= held.deadline:
                self._deadline_passed(held)
                continue
            if held.fallback_at is not None and now >= held.fallback_at:
                self._fall_back(held, now)
            while held.punch_at and now >= held.punch_at[0]:
                held.punch_at.pop(0)
                self._punch(held)
            if held.tunnel is not None:
                self._keep_keys(held, now)

    def _deadline_passed(self, held: Directed) -> None:
        held.deadline = None
        self._cancel_pending(held)
        held.fallback_at, held.punch_at = None, []
        if held.tunnel is None:
            self._give_up(held)
        # a route update that found nothing: the tunnel keeps the path it had

    def _keep_keys(self, held: Directed, now: float) -> None:
        tunnel = held.tunnel
        assert tunnel is not None
        self._release(tunnel.expire(now))
        if not tunnel.ring.all():
            self._forget(held)  # every keypair expired: the tunnel is dead
            return
        rekey_at = self._rekey_at(held)
        if rekey_at is not None and now >= rekey_at:
            self._start_rekey(held, tunnel, now)

    def _rekey_at(self, held: Directed) -> float | None:
        """When this tunnel's next rekey starts (None: not now, or one is under way).
        get_timer and handle_timer both ask here, so the timer never spins."""
        tunnel = held.tunnel
        if tunnel is None or held.pending is not None or held.deadline is not None:
            return None
        if held.rekey_since is not None:
            return None
        current = tunnel.ring.current
        if current is None:
            return None  # a responder waiting for its first packet
        if tunnel.rekey_wanted:  # the send path: expired keys or the message limit
            return self._last_now
        if current.initiator:
            return current.created_at + REKEY_AFTER_TIME
        return None

    def _start_rekey(self, held: Directed, tunnel: Tunnel, now: float) -> None:
        tunnel.rekey_wanted = False
        held.rekey_since = now
        held.targets = [tunnel.endpoint]
        held.via_relay = tunnel.route == "relay" and held.relay is not None
        if held.via_relay:
            held.relay_bound = True  # the binding outlives the handshake (RELAY_KEEPALIVE)
        self._initiate(held, now)

    def _sweep(self, now: float) -> None:
        """Free what the data stages dropped: keypairs confirmed away, tunnels expired."""
        self._last_now = now
        table = self._tunnels
        if table.dropped:
            dropped, table.dropped = table.dropped, []
            self._release(dropped)
        while table.removed:
            tunnel = table.removed.pop()
            held = self._directed.get(tunnel.ref)
            if held is not None and held.tunnel is tunnel:
                self._forget(held)
            else:
                self._release(tunnel.ring.all())


def _vip6(vip6: str) -> str | None:
    return None if vip6 == VIP6_NONE else vip6
