"""The node's sessions with Relay Servers and its bindings there, protocol v2 (sans-IO;
docs/protocol.md section 9).

- One RS session per RS used (HANDSHAKE_INIT(RS_HELLO) to the RS's key from the
  Direction), rekeyed after REKEY_AFTER_TIME like any session.
- `bind(relay, dc_id, tunnel_id, now)`: a binding per tunnel that may use that RS (RELAY,
  or PUNCH with its fallback). RELAY_BIND (with the DC's grant) goes in the RS session as
  soon as it is up, resent re-encrypted until RELAY_BOUND; RELAY_BOUND calls `on_bound(dc_id,
  tunnel_id, now)` (NodeSignalling points it at Handshakes.on_relay_bound).
- Every RELAY_KEEPALIVE_S the session carries RELAY_KEEPALIVE listing the tunnels bound at
  that RS (64 per message), which also keeps the RS's binding on our current endpoint.
- `bind` and `unbind(dc_id, tunnel_id)` have one caller, the tunnels' Handshakes: it binds
  when a Direction names a relay and unbinds when the tunnel came up on another route, is
  re-directed elsewhere or is forgotten (never came up, closed, expired). An RS session
  with no binding left is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..bodies_v2 import (
    RelayBind,
    RelayBound,
    RelayInfo,
    RelayKeepalive,
    RsHello,
    RsWelcome,
    TunnelRef,
)
from ..buffer import CodecError, Endpoint
from ..crypto import AuthError
from ..fields_v2 import RELAY_KEEPALIVE_MAX, Status
from ..handshake import T_SIGNAL
from ..initiate import PendingInit
from ..messages_v2 import REPLY_MAX, BodyKind, MsgType, decode, encode
from ..noise import SessionKeys
from ..session import REKEY_AFTER_TIME, ExpiredKeys, Keypair, KeyRing, ReplayError
from ..transactions import Transactions
from .wire import RsContext, Wire

RELAY_KEEPALIVE_S = 10.0
RELAY_BIND_TIMEOUT_S = 6.0
BINDINGS_MAX = 4096  # per node: each names a tunnel the DC directed to us

TunnelKey = tuple[bytes, int]  # (dc_id, tunnel_id)


@dataclass(eq=False)
class RsSession:
    """The node's session with one RS."""

    rs_public: bytes
    endpoint: Endpoint
    ring: KeyRing = field(default_factory=KeyRing)
    pending: PendingInit | None = None
    rekey_at: float | None = None
    keepalive_at: float | None = None


@dataclass(eq=False)
class Binding:
    relay: RelayInfo
    dc_id: bytes
    tunnel_id: int
    created_at: float
    bound: bool = False

    @property
    def key(self) -> TunnelKey:
        return self.dc_id, self.tunnel_id


class RelayBindings:
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self.on_bound: Callable[[bytes, int, float], None] | None = None
        self.sessions: dict[bytes, RsSession] = {}  # by the RS's key
        self.bindings: dict[TunnelKey, Binding] = {}
        self._tx: Transactions[str, TunnelKey] = Transactions(BINDINGS_MAX)

    def __contains__(self, key: TunnelKey) -> bool:
        return key in self.bindings

    def relay_for(self, dc_id: bytes, tunnel_id: int, addr: Endpoint) -> RelayInfo | None:
        """The RS a RELAY_ENVELOPE for this tunnel may come from, if it came from there."""
        binding = self.bindings.get((dc_id, tunnel_id))
        if binding is None or binding.relay.endpoint != addr:
            return None
        return binding.relay

    def get_timer(self) -> float | None:
        times = [self._tx.next_deadline()]
        for session in self.sessions.values():
            times += [session.rekey_at, session.keepalive_at]
        return min((t for t in times if t is not None), default=None)

    # --- bindings ---------------------------------------------------------------------

    def bind(self, relay: RelayInfo, dc_id: bytes, tunnel_id: int, now: float) -> None:
        key = (dc_id, tunnel_id)
        old = self.bindings.get(key)
        if old is not None and old.relay == relay:
            return  # already binding or bound
        if old is None and len(self.bindings) >= BINDINGS_MAX:
            self._wire.drops.drop("too_many_relay_bindings")
            return
        binding = self.bindings[key] = Binding(relay, dc_id, tunnel_id, now)
        session = self.sessions.get(relay.public_key)
        if session is None:
            session = self.sessions[relay.public_key] = RsSession(relay.public_key, relay.endpoint)
            self._hello(session, now)
        elif session.ring.current is not None:
            self._send_bind(session, binding, now)

    def unbind(self, dc_id: bytes, tunnel_id: int) -> None:
        binding = self.bindings.pop((dc_id, tunnel_id), None)
        if binding is None:
            return
        for tx in self._tx.find("bind"):
            if tx.context == binding.key:
                self._tx.finish(tx.txid)
        rs = binding.relay.public_key
        if not any(b.relay.public_key == rs for b in self.bindings.values()):
            self._close(self.sessions.pop(rs, None))

    def _send_bind(self, session: RsSession, binding: Binding, now: float) -> None:
        msg = RelayBind(self._wire.txid(), binding.relay.grant)
        self._tx.start(msg.txid, "bind", msg, now, RELAY_BIND_TIMEOUT_S, context=binding.key)
        self._send(session, msg, now)

    def _send(self, session: RsSession, msg: object, now: float) -> bool:
        try:
            keypair = session.ring.sending(now)
            datagram = keypair.seal(T_SIGNAL, encode(msg))  # type: ignore[arg-type]
        except (ExpiredKeys, CodecError):
            self._wire.drops.drop("no_rs_session")
            return False
        self._wire.out.append((datagram, session.endpoint))
        return True

    # --- the RS session ---------------------------------------------------------------

    def _hello(self, session: RsSession, now: float) -> None:
        wire = self._wire
        if session.pending is not None:
            wire.initiations.forget(session.pending)
        body = encode(RsHello(wire.txid()))
        try:
            session.pending = wire.initiations.start(
                session.rs_public,
                body,
                REPLY_MAX[MsgType.RS_HELLO],
                now,
                wire.clock_epoch(now),
                context=RsContext(session.rs_public),
            )
        except CodecError:
            wire.drops.drop("too_many_handshakes")
            return
        wire.out.append((session.pending.datagram, session.endpoint))

    def resend(self, pending: PendingInit) -> None:
        """The same RS_HELLO datagram again (Initiations' schedule, or after a cookie)."""
        session = self._session_of(pending)
        if session is not None:
            self._wire.out.append((pending.datagram, session.endpoint))

    def on_expired(self, pending: PendingInit, now: float) -> None:
        session = self._session_of(pending)
        if session is not None:
            session.pending = None
            self._hello(session, now)

    def on_established(
        self, pending: PendingInit, remote_index: int, body: bytes, keys: SessionKeys, now: float
    ) -> None:
        wire = self._wire
        session = self._session_of(pending)
        try:
            msg = decode(body, where=BodyKind.RESPONSE)
        except CodecError:
            msg = None
        if session is None or not isinstance(msg, RsWelcome) or msg.status != Status.OK:
            wire.drops.drop("rs_refused" if isinstance(msg, RsWelcome) else "bad_rs_welcome")
            wire.release(pending.sender_index)
            return
        session.pending = None
        keypair = Keypair(keys.send, keys.receive, pending.sender_index, remote_index, now, True)
        for dropped in session.ring.install(keypair):
            wire.release(dropped.local_index)
        wire.by_index[keypair.local_index] = session
        session.rekey_at = now + REKEY_AFTER_TIME
        for binding in self._bindings_at(session):  # the first of these confirms the keys
            if not binding.bound and not self._in_flight(binding):
                self._send_bind(session, binding, now)
        self._keepalive(session, now)

    def _session_of(self, pending: PendingInit) -> RsSession | None:
        context = pending.context
        if not isinstance(context, RsContext):
            return None
        session = self.sessions.get(context.rs_public)
        return session if session is not None and session.pending is pending else None

    def on_signal(
        self, session: RsSession, index: int, datagram: bytes, counter: int, now: float
    ) -> None:
        drops = self._wire.drops
        keypair = next((k for k in session.ring.all() if k.local_index == index), None)
        if keypair is None or keypair.expired(now):
            drops.drop("stale_rs_index")
            return
        try:
            msg = decode(keypair.open(datagram, counter), where=BodyKind.SESSION)
        except ReplayError:
            drops.drop("replayed")
            return
        except AuthError:
            drops.drop("bad_signal")
            return
        except CodecError:
            drops.drop("malformed_message")
            return
        if isinstance(msg, RelayBound):
            self._on_bound(msg, now)
        else:
            drops.drop("unexpected_rs_message")

    def _on_bound(self, msg: RelayBound, now: float) -> None:
        tx = self._tx.finish(msg.txid)
        if tx is None:
            return  # a duplicate answer
        binding = self.bindings.get(tx.context)
        if binding is None:
            return
        if msg.status != Status.OK:
            self._wire.drops.drop("relay_refused")
            return
        binding.bound = True
        if self.on_bound is not None:
            self.on_bound(binding.dc_id, binding.tunnel_id, now)

    # --- timers -----------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        resend, expired = self._tx.due(now)
        for tx in resend:
            binding = self.bindings.get(tx.context)
            session = binding and self.sessions.get(binding.relay.public_key)
            if session is not None:
                self._send(session, tx.message, now)
        for _ in expired:
            self._wire.drops.drop("relay_bind_unanswered")  # tried again at the keep-alive
        for session in list(self.sessions.values()):
            if session.rekey_at is not None and now >= session.rekey_at:
                session.rekey_at = None
                self._hello(session, now)
            if session.keepalive_at is not None and now >= session.keepalive_at:
                self._keepalive(session, now)
            for dropped in session.ring.expire(now):
                self._wire.release(dropped.local_index)

    def keepalive_now(self, now: float) -> None:
        """Our address changed: a RELAY_KEEPALIVE now from each RS session moves the
        session and its bindings to where we are (the RS follows at once), rather than at
        the next RELAY_KEEPALIVE_S."""
        for session in self.sessions.values():
            if session.keepalive_at is not None:
                self._keepalive(session, now)

    def _keepalive(self, session: RsSession, now: float) -> None:
        """RELAY_KEEPALIVE for the tunnels bound here; RELAY_BIND again for the others."""
        session.keepalive_at = now + RELAY_KEEPALIVE_S
        bindings = self._bindings_at(session)
        refs = [TunnelRef(b.dc_id, b.tunnel_id) for b in bindings if b.bound]
        for start in range(0, len(refs), RELAY_KEEPALIVE_MAX):
            self._send(
                session, RelayKeepalive(tuple(refs[start : start + RELAY_KEEPALIVE_MAX])), now
            )
        if not refs:
            self._send(session, RelayKeepalive(()), now)  # keeps (or confirms) the session
        for binding in bindings:
            if not binding.bound and not self._in_flight(binding):
                self._send_bind(session, binding, now)

    def _bindings_at(self, session: RsSession) -> list[Binding]:
        return [b for b in self.bindings.values() if b.relay.public_key == session.rs_public]

    def _in_flight(self, binding: Binding) -> bool:
        return any(tx.context == binding.key for tx in self._tx.find("bind"))

    def _close(self, session: RsSession | None) -> None:
        if session is None:
            return
        if session.pending is not None:
            self._wire.initiations.forget(session.pending)
        for keypair in session.ring.all():
            self._wire.release(keypair.local_index)
