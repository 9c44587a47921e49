"""NodeSignalling: the node's sans-IO signalling machine (protocol v2), composed of its parts.

Rules:
- Everything that changes the node's signalling state lives in this package. Inputs are
  receive(), request_direction(), start(), deregister() and handle_timer(), each given
  `now` (monotonic seconds). Outputs are drained by the caller: datagrams_to_send(),
  events(), and the `drops` counter (proto/machine.py states the contract). No input
  raises out of receive(): what cannot be used is dropped and counted by reason.
- The parts share one Wire (wire.py): the DC session (session.py), tunnels' handshakes
  (handshake.py, `Handshakes`), RS sessions and bindings (relay.py).
- Dispatch by datagram type (byte 1): HANDSHAKE_INIT -> handshakes.on_init;
  HANDSHAKE_RESP -> wire.initiations.on_response, then by the pending init's context (DC
  session, tunnel, RS session); COOKIE_REPLY -> wire.initiations.on_cookie and the init
  again; SIGNAL -> by receiver index to its owner in wire.by_index; RELAY_ENVELOPE ->
  unwrapped (only from the RS a binding names), its handshake dispatched with `relay` set.
  DATA never reaches this machine (the stages sort by byte 1).
- This machine is the one caller of wire.initiations.due() and .expired(): it resends
  the DC's and RSes' inits itself and hands tunnels' to handshakes.resend/on_expired
  (after a COOKIE_REPLY too: on_cookie, then the init again).
- Registration first; names asked for before it wait (at most WAITING_NAMES_MAX). A
  Direction (DIRECTION_RESPONSE, or the DC's ROUTE_DIRECTION / ROUTE_UPDATE, each copy
  acked, each txid handled once) goes to handshakes.on_direction.
- Relay bindings have one owner: Handshakes (given `relays=`) binds when a Direction
  names a relay and unbinds when its tunnel no longer needs it or is forgotten.
- A SIGNAL to a tunnel's index is opened by the tunnel (tunnel.open_signal) and handed
  to handshakes.on_signal.
- Tunnels have one owner, the TunnelTable given here (or made here): handshakes install
  into it, the data stages read it; this machine reads it to answer names that already
  have a tunnel.
- Randomness (txids, indexes, cookies) and key generation are injected.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..bodies_v2 import (
    Ack,
    Direction,
    DirectionRequest,
    DirectionResponse,
    KeepaliveAck,
    Message,
    NameAddAck,
    ProbeAck,
    RelayInfo,
    RouteDirection,
    RouteDirectionAck,
    RouteUpdate,
    TunnelClosed,
    TunnelGone,
    UpdateAck,
)
from ..buffer import CodecError, Endpoint
from ..crypto import StaticKey
from ..envelope import unwrap
from ..fields_v2 import VIP6_NONE, Status, Want, check_name, normalize_endpoint
from ..handshake import T_COOKIE, T_INIT, T_RELAY_ENVELOPE, T_RESP, T_SIGNAL, VERSION
from ..initiate import PendingInit
from ..names import normalize_fqdn
from ..session import ReplayError, parse_transport
from ..tunnel import Tunnel, TunnelTable
from .events import DirectionResolved, NodeEvent, Registered
from .handshake import Handshakes
from .names import DeviceNames
from .relay import RelayBindings, RsSession
from .session import DcSession, DcTx, SessionState
from .wire import DcContext, RsContext, TunnelContext, Wire

DIRECTION_TIMEOUT_S = 5.0
TUNNEL_CLOSED_TIMEOUT_S = 8.0
_ANSWERS_FROM_DC = (KeepaliveAck, UpdateAck, DirectionResponse, ProbeAck, Ack, NameAddAck)
TUNNEL_STALE_S = 30.0
WAITING_NAMES_MAX = 64  # names asked before registration (section 10): newest refused
HELD_DIRECTIONS_MAX = 64  # Directions for names whose NAME_ADD_ACK is due: oldest dropped
DC_TXIDS_SEEN_MAX = 256  # ROUTE_DIRECTION / ROUTE_UPDATE / TUNNEL_GONE handled once

MakeHandshakes = Callable[..., Handshakes]  # (wire, tunnels, generate_key, relays=...)


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
        generate_key: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
        epoch_offset: float | None = None,
        tunnels: TunnelTable | None = None,
        boot_id: int | None = None,
        make_handshakes: MakeHandshakes | None = None,
        dc_other_endpoint: Endpoint | None = None,  # the DC in our other family (dual-stack)
    ) -> None:
        if epoch_offset is None:  # wall clock minus the clock `now` comes from
            epoch_offset = time.time() - time.monotonic()
        self.wire = Wire(
            static=static,
            dc_public=dc_public,
            dc_endpoint=dc_endpoint,
            random_bytes=random_bytes,
            generate_key=generate_key,
            epoch_offset=epoch_offset,
        )
        self.drops = self.wire.drops
        self.tunnels = tunnels if tunnels is not None else TunnelTable()
        if boot_id is None:
            boot_id = int.from_bytes(random_bytes(8), "big")
        self.session = DcSession(self.wire, fqdn, local_endpoints, boot_id)
        self.session.other_dc = dc_other_endpoint
        self.relays = RelayBindings(self.wire)
        self.handshakes = (make_handshakes or Handshakes)(
            self.wire, self.tunnels, generate_key, relays=self.relays
        )
        self.relays.on_bound = self.handshakes.on_relay_bound
        self.names = DeviceNames(self.wire, self.session)
        self._waiting_names: list[tuple[str, str]] = []  # (from_name, fqdn) asked early
        self._held_directions: list[tuple[Direction, bool]] = []  # for names not yet ours
        self._asking: dict[tuple[str, str], int] = {}  # (from_name, fqdn) -> txid in flight
        self._dc_txids: OrderedDict[int, None] = OrderedDict()

    @property
    def fqdn(self) -> str:
        return self.session.fqdn

    @fqdn.setter
    def fqdn(self, fqdn: str) -> None:
        self.session.fqdn = fqdn

    @property
    def registered(self) -> Registered | None:
        return self.session.registration

    @property
    def nat_probe_observed(self) -> Endpoint | None:
        return self.session.nat_probe_observed

    # --- outputs ----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self.wire.out = self.wire.out, []
        return out

    def events(self) -> list[NodeEvent]:
        events, self.wire.events = self.wire.events, []
        return events

    def get_timer(self) -> float | None:
        times = [self.wire.initiations.next_deadline(), *self.session.timers()]
        times += [self.relays.get_timer(), self.handshakes.get_timer()]
        return min((t for t in times if t is not None), default=None)

    # --- inputs -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.session.register(now)

    def deregister(self, now: float) -> None:
        self.session.deregister(now)

    def add_name(self, fqdn: str, now: float, vip6: str = VIP6_NONE) -> bool:
        """One more name of ours (a device behind an adapter), or the IPv6 address a device
        chose for itself (`vip6`, names.py): NameRegistered follows."""
        fqdn = normalize_fqdn(fqdn)
        try:
            check_name(fqdn)
        except CodecError:
            self.drops.drop("bad_name")
            return False
        return self.names.add(fqdn, now, vip6)

    def remove_name(self, fqdn: str, now: float) -> None:
        self.names.remove(normalize_fqdn(fqdn), now)

    def network_changed(self, now: float) -> None:
        """Our addresses or routes changed (netlink), or our NAT mapping did: tell the DC
        from where we are now (UPDATE, PROBE; the DC re-directs our tunnels, 7.3), move
        our RS sessions and bindings (RELAY_KEEPALIVE) and each tunnel's peer endpoint
        (an empty DATA: roaming) at once."""
        if self.session.state == SessionState.REGISTERING:
            self.session.register(now)  # no need to wait for the retry: try from here
            return
        if self.session.state != SessionState.REGISTERED:
            return
        self.session.moved(now)
        self._follow(now)

    def _follow(self, now: float) -> None:
        """From our new endpoint: a RELAY_KEEPALIVE to each RS, an empty DATA per tunnel."""
        self.relays.keepalive_now(now)
        for tunnel in list(self.tunnels.by_ref.values()):
            try:
                self.wire.out.append((tunnel.seal(b"", now), tunnel.endpoint))
            except CodecError:  # no keys to send with yet (a responder not confirmed)
                continue

    def request_direction(self, fqdn: str, now: float, from_name: str = "") -> None:
        """Resolve fqdn through the DC and build a tunnel from our name from_name (an
        adapter's device; "": the session's own name); a DirectionResolved follows, with
        from_name set to the name that asked."""
        fqdn, from_name = normalize_fqdn(fqdn), normalize_fqdn(from_name or self.fqdn)
        try:
            check_name(fqdn)
        except CodecError:
            self.wire.events.append(DirectionResolved(fqdn, Status.UNKNOWN, from_name=from_name))
            return
        tunnel = self.tunnels.by_fqdn(fqdn, from_name)
        registered = self.session.registration is not None
        if tunnel is not None:
            # VIPs are stable, so answer now; ask the DC again in the background when
            # the tunnel has gone quiet (the peer may have restarted).
            vip6 = None if tunnel.peer_vip6 == VIP6_NONE else tunnel.peer_vip6
            resolved = DirectionResolved(fqdn, Status.OK, tunnel.peer_vip, from_name, vip6)
            self.wire.events.append(resolved)
            quiet_since = max(getattr(tunnel, "created_at", 0.0), tunnel.last_receive)
            if now - quiet_since < TUNNEL_STALE_S or not registered:
                return
        if not registered:
            self._wait_for_registration(fqdn, from_name)
            return
        if from_name not in self.wire.names:  # a device whose NAME_ADD is not answered yet
            self.wire.events.append(DirectionResolved(fqdn, Status.NO_ROUTE, from_name=from_name))
            return
        if (from_name, fqdn) not in self._asking:
            msg = DirectionRequest(self.wire.txid(), from_name, fqdn, Want.V4)
            context = (from_name, fqdn)
            self.session.request(msg, DcTx.DIRECTION, now, DIRECTION_TIMEOUT_S, context=context)
            self._asking[context] = msg.txid

    def handle_timer(self, now: float) -> None:
        inits = self.wire.initiations
        for pending in inits.due(now):
            self._resend_init(pending, now)
        for pending in inits.expired(now):
            self._init_expired(pending, now)
        for tx in self.session.handle_timer(now):
            if tx.kind == DcTx.DIRECTION and isinstance(tx.context, tuple):
                self._asking.pop(tx.context, None)
                from_name, fqdn = tx.context
                self.wire.events.append(DirectionResolved(fqdn, Status.NO_ROUTE, None, from_name))
            elif tx.kind == DcTx.NAME_ADD:
                self.names.on_unanswered(tx.context)
        self.relays.handle_timer(now)
        self.handshakes.handle_timer(now)
        self._report_closed(now)

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        if len(datagram) < 4 or datagram[0] != VERSION:
            self.drops.drop("not_v2")
            return
        try:
            addr = normalize_endpoint(addr)
            self._dispatch(datagram[1], datagram, addr, now)
        except CodecError as exc:  # every part's decoders raise only this
            self.drops.drop(type(exc).__name__)
        self._report_closed(now)

    def _report_closed(self, now: float) -> None:
        """Tell the DC about tunnels this node dropped (expired, replaced, closed, no route),
        so they stop counting among the pair's directed tunnels (docs/protocol.md 10)."""
        closed, self.handshakes.forgotten = self.handshakes.forgotten, []
        for dc_id, tunnel_id in closed:
            if dc_id == self.wire.dc_id and self.session.state == SessionState.REGISTERED:
                msg = TunnelClosed(self.wire.txid(), tunnel_id)
                self.session.request(msg, DcTx.TUNNEL_CLOSED, now, TUNNEL_CLOSED_TIMEOUT_S)

    # --- dispatch ---------------------------------------------------------------------

    def _dispatch(
        self, kind: int, datagram: bytes, addr: Endpoint, now: float, relay: RelayInfo | None = None
    ) -> None:
        if kind == T_INIT:
            self.handshakes.on_init(datagram, addr, now, relay)
        elif kind == T_RESP:
            self._on_response(datagram, addr, now, relay)
        elif kind == T_COOKIE:
            self._on_cookie(datagram, now)
        elif kind == T_SIGNAL and relay is None:
            self._on_signal(datagram, addr, now)
        elif kind == T_RELAY_ENVELOPE and relay is None:
            self._on_envelope(datagram, addr, now)
        else:
            self.drops.drop("unexpected_type")

    def _on_envelope(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        dc_id, tunnel_id, inner = unwrap(datagram)
        relay = self.relays.relay_for(dc_id, tunnel_id, addr)
        if relay is None:
            self.drops.drop("envelope_not_from_our_relay")
            return
        self._dispatch(inner[1], inner, addr, now, relay)

    def _on_response(
        self, datagram: bytes, addr: Endpoint, now: float, relay: RelayInfo | None
    ) -> None:
        done = self.wire.initiations.on_response(datagram)
        if done is None:
            self.drops.drop("unexpected_response")
            return
        pending, remote_index, body, keys = done
        context = pending.context
        if isinstance(context, TunnelContext):
            self.handshakes.on_established(pending, remote_index, body, keys, addr, now, relay)
        elif isinstance(context, DcContext) and relay is None:
            if self.session.on_established(pending, remote_index, body, keys, now):
                self.names.on_registered(now)
                self._ask_waiting_names(now)
        elif isinstance(context, RsContext) and relay is None:
            self.relays.on_established(pending, remote_index, body, keys, now)
        else:
            self.wire.release(pending.sender_index)
            self.drops.drop("response_by_the_wrong_way")

    def _on_cookie(self, datagram: bytes, now: float) -> None:
        pending = self.wire.initiations.on_cookie(datagram, self.wire.clock_epoch(now))
        if pending is None:
            self.drops.drop("unexpected_cookie")
        else:
            self._resend_init(pending, now)

    def _resend_init(self, pending: PendingInit, now: float) -> None:
        context = pending.context
        if isinstance(context, DcContext):
            self.wire.out.append((pending.datagram, self.wire.dc_endpoint))
        elif isinstance(context, RsContext):
            self.relays.resend(pending)
        elif isinstance(context, TunnelContext):
            self.handshakes.resend(pending, now)

    def _init_expired(self, pending: PendingInit, now: float) -> None:
        context = pending.context
        if isinstance(context, DcContext):
            self.session.on_expired(pending, now)
        elif isinstance(context, RsContext):
            self.relays.on_expired(pending, now)
        elif isinstance(context, TunnelContext):
            self.handshakes.on_expired(pending, now)

    def _on_signal(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        _, index, counter = parse_transport(datagram)
        owner = self.wire.by_index.get(index)
        if owner is None:
            self.drops.drop("unknown_index")
        elif owner is self.session:
            msg = self.session.open(index, datagram, counter, now)
            if msg is not None:
                self._from_dc(msg, addr, now)
        elif isinstance(owner, RsSession):
            self.relays.on_signal(owner, index, datagram, counter, now)
        elif isinstance(owner, Tunnel):
            self._tunnel_signal(owner, index, datagram, counter, addr, now)
        else:
            self.drops.drop("unknown_index")

    def _tunnel_signal(
        self, tunnel: Tunnel, index: int, datagram: bytes, counter: int, addr: Endpoint, now: float
    ) -> None:
        try:
            payload = tunnel.open_signal(datagram, index, counter)
        except ReplayError:
            self.drops.drop("replayed")
            return
        except CodecError:  # AuthError, or no keypair for that index any more
            self.drops.drop("bad_tunnel_signal")
            return
        self.handshakes.on_signal(tunnel, payload, addr, now)

    # --- the DC's messages ------------------------------------------------------------

    def _from_dc(self, msg: Message, addr: Endpoint, now: float) -> None:
        if isinstance(msg, RouteDirection | RouteUpdate | TunnelGone):
            self._from_dc_request(msg, now)
            return
        if not isinstance(msg, _ANSWERS_FROM_DC):  # e.g. a RELAY_KEEPALIVE: not the DC's to send
            self.drops.drop(f"unexpected {type(msg).__name__} from DC")
            return
        tx = self.session.tx.finish(msg.txid)
        if tx is None and isinstance(msg, ProbeAck):
            self.session.echo(msg, addr, now)  # the DC's filter port, unasked
            return
        if tx is None:
            self.drops.drop("answer_to_no_request")  # a late duplicate, or a txid never asked
            return
        if tx.kind == DcTx.KEEPALIVE_OTHER:
            return  # heard in our other family too; its observed is the DC's main view
        if isinstance(msg, KeepaliveAck):
            self.session.on_keepalive_ack(msg, now)
        elif isinstance(msg, UpdateAck):
            self.session.on_observed(msg.observed, now)
        if self.session.mapping_changed:  # our NAT mapping changed under us (rebinding)
            self.session.mapping_changed = False
            self._follow(now)
        elif isinstance(msg, DirectionResponse):
            if isinstance(tx.context, tuple):
                self._on_direction_response(tx.context, msg, now)
        elif isinstance(msg, ProbeAck):
            self.session.on_probe_ack(msg, tx.kind)
        elif isinstance(msg, NameAddAck):
            self.names.on_ack(msg, tx.context)
            if msg.fqdn in self.wire.names:
                self._release_directions(msg.fqdn, now)

    def _from_dc_request(self, msg: RouteDirection | RouteUpdate | TunnelGone, now: float) -> None:
        """Ack every copy; act on each txid once."""
        if isinstance(msg, RouteDirection):
            self.session.send(RouteDirectionAck(msg.txid, msg.direction.tunnel_id), now)
        else:
            self.session.send(Ack(msg.txid), now)
        if msg.txid in self._dc_txids:
            return
        self._dc_txids[msg.txid] = None
        while len(self._dc_txids) > DC_TXIDS_SEEN_MAX:
            self._dc_txids.popitem(last=False)
        if isinstance(msg, TunnelGone):
            reason = getattr(msg.reason, "name", str(msg.reason)).lower()
            self.handshakes.close(self.wire.dc_id, msg.tunnel_id, now, reason)
        else:
            self._on_direction(msg.direction, now, again=isinstance(msg, RouteUpdate))

    def _wait_for_registration(self, fqdn: str, from_name: str) -> None:
        if (from_name, fqdn) in self._waiting_names:
            return
        if len(self._waiting_names) >= WAITING_NAMES_MAX:
            self.drops.drop("too_many_waiting_names")
            self.wire.events.append(DirectionResolved(fqdn, Status.NO_ROUTE, from_name=from_name))
            return
        self._waiting_names.append((from_name, fqdn))

    def _ask_waiting_names(self, now: float) -> None:
        waiting, self._waiting_names = self._waiting_names, []
        for from_name, fqdn in waiting:
            self.request_direction(fqdn, now, from_name)

    def _on_direction_response(
        self, asked: tuple[str, str], msg: DirectionResponse, now: float
    ) -> None:
        self._asking.pop(asked, None)
        if msg.direction is None:
            from_name, fqdn = asked
            self.wire.events.append(DirectionResolved(fqdn, msg.status, None, from_name))
        else:
            self._on_direction(msg.direction, now)

    def _on_direction(self, direction: Direction, now: float, again: bool = False) -> None:
        name = direction.self_name
        if direction.dc_id == self.wire.dc_id and name in self.names.wanted and (
            name not in self.wire.names  # its NAME_ADD_ACK is still due
        ):
            self._hold_direction(direction, again)
            return
        if direction.dc_id != self.wire.dc_id or direction.self_name not in self.wire.names:
            self.drops.drop("direction_not_for_us")
            return
        self.handshakes.on_direction(direction, now, again)

    def _hold_direction(self, direction: Direction, again: bool) -> None:
        """A Direction for a name of ours whose NAME_ADD_ACK has not come (it was lost or is
        behind): acted on when it comes (at most HELD_DIRECTIONS_MAX, the oldest dropped)."""
        self._held_directions.append((direction, again))
        if len(self._held_directions) > HELD_DIRECTIONS_MAX:
            self._held_directions.pop(0)
            self.drops.drop("held_directions_full")

    def _release_directions(self, fqdn: str, now: float) -> None:
        held, self._held_directions = self._held_directions, []
        for direction, again in held:
            if direction.self_name == fqdn:
                self._on_direction(direction, now, again)
            else:
                self._held_directions.append((direction, again))
