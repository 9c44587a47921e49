"""Relay Server state machine, protocol v2 (sans-IO; docs/protocol.md section 9).

Rules:
- A node opens an RS session with HANDSHAKE_INIT(RS_HELLO) from any key (the DC's grant is
  the authorisation), through the same HandshakeGate as every responder. The session is
  confirmed by its first transport packet; only then does it count, and a newer confirmed
  session of the same key replaces the older one (a rekey).
- A binding is created or moved only by a key-confirmed SIGNAL of that end's session
  (RELAY_BIND, or RELAY_KEEPALIVE) arriving from the session's current endpoint. A session
  endpoint moves only on a packet whose counter is above the highest seen (roaming); the
  bound ends follow their session's endpoint at once.
- Entries are keyed by (dc_id, tunnel_id); a grant that collides with a live entry of other
  ends is refused, never merged. At most ENTRIES_PER_KEY_MAX per end key, ENTRIES_MAX in all;
  an entry goes whole when idle for idle_timeout or when its grant expires.
- RELAY_ENVELOPE is forwarded between the two bound ends of its entry; from the handshakes
  it carries the RS learns each end's session index (at most 3 per end). DATA and SIGNAL
  are forwarded by (source, receiver_index): from one end's endpoint, with the other end's
  index, to the other end's endpoint. Nothing else is forwarded, and nothing is read.
- It follows the contract in proto/machine.py: typed events, drops by reason.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..proto.bodies_v2 import Message, RelayBind, RelayBound, RelayKeepalive, RsHello, RsWelcome
from ..proto.buffer import CodecError, Endpoint
from ..proto.crypto import AuthError, StaticKey
from ..proto.envelope import unwrap
from ..proto.fields_v2 import Status, dc_id_of, normalize_endpoint
from ..proto.gate import Admitted, HandshakeGate, SendCookie
from ..proto.grant import Grant, GrantError, check_grant, grant_key
from ..proto.handshake import (
    T_DATA,
    T_INIT,
    T_RELAY_ENVELOPE,
    T_RESP,
    T_SIGNAL,
    VERSION,
    build_resp,
    open_init,
)
from ..proto.initiate import Indexes
from ..proto.machine import Drops, Event
from ..proto.messages_v2 import REPLY_MAX, BodyKind, MsgType, decode, encode
from ..proto.session import Keypair, ReplayError, parse_transport

SWEEP_INTERVAL_S = 5.0  # how often idle entries and old sessions are looked for
ENTRIES_MAX = 65536
ENTRIES_PER_KEY_MAX = 1024
SESSIONS_MAX = 65536
UNCONFIRMED_S = 15.0  # an answered RS_HELLO not confirmed by then is forgotten
INDEXES_PER_END = 3
HELLO_INIT_MIN = REPLY_MAX[MsgType.RS_HELLO]

EntryKey = tuple[bytes, int]  # (dc_id, tunnel_id)


@dataclass(frozen=True)
class EndBound(Event):
    """An end bound its current endpoint to its side of a tunnel (first time, or after moving)."""

    log_name = "relay_bound"
    tunnel: int
    side: int  # 0: the grant's end_a, 1: its end_b
    endpoint: str  # "ip:port" of the end's session
    moved: bool  # this side was bound to another endpoint before


@dataclass(frozen=True)
class RelayIdleDropped(Event):
    """A relay entry carried nothing for idle_timeout (or its grant expired) and was removed."""

    tunnel: int
    forwarded: int  # datagrams it forwarded in its life


RelayEvent = EndBound | RelayIdleDropped


@dataclass(eq=False)
class RsPeer:
    """One RS session (one keypair) with a node."""

    public_key: bytes
    keypair: Keypair
    endpoint: Endpoint
    created_at: float
    confirmed: bool = False
    highest: int = -1


@dataclass(eq=False)
class RelayEntry:
    dc_id: bytes
    tunnel_id: int
    ends: tuple[bytes, bytes]
    expires_ms: int
    last_active: float
    bound: list[Endpoint | None] = field(default_factory=lambda: [None, None])
    indexes: tuple[deque[int], deque[int]] = field(default_factory=lambda: (deque(), deque()))
    forwarded: int = 0
    forwarded_bytes: int = 0

    @property
    def key(self) -> EntryKey:
        return self.dc_id, self.tunnel_id


class Relay:
    def __init__(
        self,
        *,
        static: StaticKey,
        dc_public: bytes,
        idle_timeout: float,
        random_bytes: Callable[[int], bytes] = os.urandom,
        generate_key: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
        epoch_offset: float | None = None,
    ) -> None:
        self._static = static
        self._grant_key = grant_key(static, dc_public)
        self._dc_id = dc_id_of(dc_public)
        self.idle_timeout = idle_timeout
        self._generate = generate_key
        if epoch_offset is None:
            epoch_offset = time.time() - time.monotonic()
        self._epoch_offset = epoch_offset
        self.gate = HandshakeGate(static, 0.0, random_bytes)
        self._indexes = Indexes(random_bytes)
        self._peers: dict[int, RsPeer] = {}  # by the RS's own index
        self._by_key: dict[bytes, RsPeer] = {}  # the current confirmed session per key
        self._at_endpoint: dict[Endpoint, bytes] = {}  # current session endpoint -> key
        self.entries: dict[EntryKey, RelayEntry] = {}
        self._entries_of: Counter[bytes] = Counter()
        self._forward: dict[tuple[bytes, int], tuple[EntryKey, int]] = {}
        self._out: list[tuple[bytes, Endpoint]] = []
        self._events: list[RelayEvent] = []
        self._sweep_at = 0.0
        self.drops = Drops()
        self.forwarded = 0
        self.forwarded_bytes = 0  # for metrics: one addition beside the count above

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[RelayEvent]:
        events, self._events = self._events, []
        return events

    def get_timer(self) -> float:
        return self._sweep_at

    def handle_timer(self, now: float) -> None:
        if now >= self._sweep_at:
            self._sweep_at = now + SWEEP_INTERVAL_S
            self._expire_entries(now)
            self._expire_sessions(now)

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        if len(datagram) < 4 or datagram[0] != VERSION:
            self.drops.drop("not_v2")
            return
        try:
            addr = normalize_endpoint(addr)
        except CodecError:
            self.drops.drop("bad_source")
            return
        kind = datagram[1]
        if kind == T_INIT:
            self._on_init(datagram, addr, now)
        elif kind == T_RELAY_ENVELOPE:
            self._on_envelope(datagram, addr, now)
        elif kind in (T_DATA, T_SIGNAL):
            self._on_transport(datagram, addr, now)
        else:
            self.drops.drop("unexpected_type")

    # --- RS sessions ------------------------------------------------------------------

    def _on_init(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        if len(datagram) < HELLO_INIT_MIN:
            self.drops.drop("init_too_small")
            return
        decision = self.gate.admit(datagram, addr, now)
        if isinstance(decision, SendCookie):
            self._out.append((decision.datagram, addr))
            return
        if not isinstance(decision, Admitted):
            self.drops.drop(decision.reason)
            return
        try:
            opened = open_init(decision.frame, self._static)
            body = decode(opened.body, where=BodyKind.INIT)
        except CodecError:
            self.drops.drop("bad_init")
            return
        if not isinstance(body, RsHello):
            self.drops.drop("unexpected_init_body")
            return
        key = opened.initiator_public
        fresh = self.gate.fresh(key, opened.timestamp, datagram, addr, now)
        if isinstance(fresh, bytes):
            self._out.append((fresh, addr))
            return
        if not fresh:
            self.drops.drop("replayed_init")
            return
        if len(self._peers) >= SESSIONS_MAX:
            self.drops.drop("too_many_sessions")
            return
        index = self._indexes.new()
        response, keys = build_resp(
            opened,
            self._generate(),
            sender_index=index,
            receiver_index=decision.frame.sender_index,
            body=encode(RsWelcome(body.txid, Status.OK)),
        )
        self.gate.answered(key, datagram, response, addr, now)
        self._out.append((response, addr))
        for old in [p for p in self._peers.values() if p.public_key == key and not p.confirmed]:
            self._drop_peer(old)  # one unconfirmed session per key
        keypair = Keypair(
            keys.send, keys.receive, index, decision.frame.sender_index, now, initiator=False
        )
        self._peers[index] = RsPeer(key, keypair, addr, now)

    def _on_session(self, peer: RsPeer, datagram: bytes, counter: int, addr: Endpoint, now: float):
        if peer.keypair.expired(now):
            self.drops.drop("expired_keys")
            return
        try:
            payload = peer.keypair.open(datagram, counter)
            msg = decode(payload, where=BodyKind.SESSION)
        except ReplayError:
            self.drops.drop("replayed")
            return
        except AuthError:
            self.drops.drop("bad_signal")
            return
        except CodecError:
            self.drops.drop("malformed_message")
            return
        if not peer.confirmed:
            self._confirm(peer)
        if counter > peer.highest:
            peer.highest = counter
            self._roam(peer, addr)
        if self._by_key.get(peer.public_key) is not peer:
            self.drops.drop("old_session")
        elif addr != peer.endpoint:
            self.drops.drop("not_current_endpoint")  # authentic but stale: moves nothing
        else:
            self._on_message(peer, msg, now)

    def _on_message(self, peer: RsPeer, msg: Message, now: float) -> None:
        if isinstance(msg, RelayBind):
            self._on_bind(peer, msg, now)
        elif isinstance(msg, RelayKeepalive):
            for ref in msg.tunnels:
                entry = self.entries.get((ref.dc_id, ref.tunnel_id))
                if entry is not None and peer.public_key in entry.ends:
                    side = entry.ends.index(peer.public_key)
                    if entry.bound[side] is not None:
                        self._bind_side(entry, side, peer, now)
        else:
            self.drops.drop("unexpected_message")

    def _confirm(self, peer: RsPeer) -> None:
        peer.confirmed = True
        old = self._by_key.get(peer.public_key)
        if old is not None and self._at_endpoint.get(old.endpoint) == old.public_key:
            del self._at_endpoint[old.endpoint]
        self._by_key[peer.public_key] = peer
        self._at_endpoint[peer.endpoint] = peer.public_key
        self.gate.pin(peer.public_key)

    def _roam(self, peer: RsPeer, addr: Endpoint) -> None:
        if peer.endpoint == addr:
            return
        if self._by_key.get(peer.public_key) is peer:
            if self._at_endpoint.get(peer.endpoint) == peer.public_key:
                del self._at_endpoint[peer.endpoint]
            self._at_endpoint[addr] = peer.public_key
        peer.endpoint = addr

    def _drop_peer(self, peer: RsPeer) -> None:
        self._peers.pop(peer.keypair.local_index, None)
        self._indexes.release(peer.keypair.local_index)
        if self._by_key.get(peer.public_key) is peer:
            del self._by_key[peer.public_key]
            self.gate.unpin(peer.public_key)
            if self._at_endpoint.get(peer.endpoint) == peer.public_key:
                del self._at_endpoint[peer.endpoint]

    def _reply(self, peer: RsPeer, msg: Message) -> None:
        self._out.append((peer.keypair.seal(T_SIGNAL, encode(msg)), peer.endpoint))

    # --- bindings ---------------------------------------------------------------------

    def _on_bind(self, peer: RsPeer, msg: RelayBind, now: float) -> None:
        try:
            grant = check_grant(self._grant_key, msg.grant, self._epoch_ms(now), self._dc_id)
            side = grant.side_of(peer.public_key)
        except GrantError as exc:
            self._refuse(peer, msg, _reason(str(exc)))
            return
        entry = self.entries.get((grant.dc_id, grant.tunnel_id))
        if entry is None:
            entry = self._new_entry(grant, now)
            if entry is None:
                self._refuse(peer, msg, "too_many_entries")
                return
        elif entry.ends != grant.ends:
            self._refuse(peer, msg, "grant_collision")
            return
        entry.expires_ms = max(entry.expires_ms, grant.expires_ms)  # a renewed grant
        self._bind_side(entry, side, peer, now)
        self._reply(
            peer, RelayBound(msg.txid, Status.OK, grant.dc_id, grant.tunnel_id, peer.endpoint)
        )

    def _refuse(self, peer: RsPeer, msg: RelayBind, reason: str) -> None:
        self.drops.drop(reason)
        self._reply(peer, RelayBound(msg.txid, Status.REFUSED))

    def _new_entry(self, grant: Grant, now: float) -> RelayEntry | None:
        if len(self.entries) >= ENTRIES_MAX or any(
            self._entries_of[k] >= ENTRIES_PER_KEY_MAX for k in grant.ends
        ):
            return None
        entry = RelayEntry(grant.dc_id, grant.tunnel_id, grant.ends, grant.expires_ms, now)
        self.entries[entry.key] = entry
        for key in grant.ends:
            self._entries_of[key] += 1
        return entry

    def _bind_side(self, entry: RelayEntry, side: int, peer: RsPeer, now: float) -> None:
        entry.last_active = now
        old = entry.bound[side]
        if old != peer.endpoint:
            entry.bound[side] = peer.endpoint
            endpoint = f"{peer.endpoint[0]}:{peer.endpoint[1]}"
            self._events.append(EndBound(entry.tunnel_id, side, endpoint, moved=old is not None))

    def _remove_entry(self, entry: RelayEntry) -> None:
        del self.entries[entry.key]
        for side in (0, 1):
            for index in entry.indexes[side]:
                self._forward.pop((entry.ends[1 - side], index), None)
        for key in entry.ends:
            self._entries_of[key] -= 1
            if self._entries_of[key] <= 0:
                del self._entries_of[key]

    # --- forwarding -------------------------------------------------------------------

    def _side_of_source(self, entry: RelayEntry, addr: Endpoint) -> int | None:
        key = self._at_endpoint.get(addr)
        if key is None or key not in entry.ends:
            return None
        side = entry.ends.index(key)
        return side if entry.bound[side] is not None else None

    def _endpoint_of(self, entry: RelayEntry, side: int) -> Endpoint | None:
        if entry.bound[side] is None:
            return None
        peer = self._by_key.get(entry.ends[side])
        return None if peer is None else peer.endpoint

    def _on_envelope(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        try:
            dc_id, tunnel_id, inner = unwrap(datagram)
        except CodecError:
            self.drops.drop("malformed_envelope")
            return
        entry = self.entries.get((dc_id, tunnel_id))
        if entry is None:
            self.drops.drop("no_binding")
            return
        side = self._side_of_source(entry, addr)
        if side is None:
            self.drops.drop("unbound_source")
            return
        target = self._endpoint_of(entry, 1 - side)
        if target is None:
            self.drops.drop("peer_not_bound")
            return
        if inner[1] in (T_INIT, T_RESP) and len(inner) >= 8:
            self._learn(entry, side, int.from_bytes(inner[4:8], "big"))
        self._forward_to(entry, datagram, target, now)

    def _learn(self, entry: RelayEntry, side: int, index: int) -> None:
        """`side` chose `index` for its session: packets from the other end carrying it go
        to `side`. Refused if (other end, index) already means something else."""
        source_key = entry.ends[1 - side]
        where = (source_key, index)
        known = self._forward.get(where)
        if known == (entry.key, side):
            return
        own = self._peers.get(index)
        if known is not None or (own is not None and own.public_key == source_key):
            self.drops.drop("ambiguous_index")
            return
        indexes = entry.indexes[side]
        indexes.append(index)
        self._forward[where] = (entry.key, side)
        while len(indexes) > INDEXES_PER_END:
            self._forward.pop((source_key, indexes.popleft()), None)

    def _on_transport(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        try:
            kind, index, counter = parse_transport(datagram)
        except CodecError:
            self.drops.drop("malformed_transport")
            return
        key = self._at_endpoint.get(addr)
        route = self._forward.get((key, index)) if key is not None else None
        if route is not None:
            entry = self.entries[route[0]]
            target = self._endpoint_of(entry, route[1])
            if target is None or entry.bound[1 - route[1]] is None:
                self.drops.drop("peer_not_bound")
                return
            self._forward_to(entry, datagram, target, now)
            return
        peer = self._peers.get(index)
        if kind == T_SIGNAL and peer is not None:
            self._on_session(peer, datagram, counter, addr, now)
        else:
            self.drops.drop("no_binding")

    def _forward_to(self, entry: RelayEntry, datagram: bytes, target: Endpoint, now: float):
        entry.last_active = now
        entry.forwarded += 1
        entry.forwarded_bytes += len(datagram)
        self.forwarded += 1
        self.forwarded_bytes += len(datagram)
        self._out.append((datagram, target))

    # --- sweeps -----------------------------------------------------------------------

    def _expire_entries(self, now: float) -> None:
        now_ms = self._epoch_ms(now)
        for entry in list(self.entries.values()):
            if now - entry.last_active > self.idle_timeout or now_ms > entry.expires_ms:
                self._remove_entry(entry)
                self._events.append(RelayIdleDropped(entry.tunnel_id, entry.forwarded))

    def _expire_sessions(self, now: float) -> None:
        for peer in list(self._peers.values()):
            unconfirmed = not peer.confirmed and now - peer.created_at >= UNCONFIRMED_S
            if unconfirmed or peer.keypair.expired(now):
                self._drop_peer(peer)

    def _epoch_ms(self, now: float) -> int:
        return int((self._epoch_offset + now) * 1000)


def _reason(text: str) -> str:
    return {
        "grant expired": "expired_grant",
        "grant tag does not verify": "bad_grant",
        "grant has the wrong length": "bad_grant",
        "grant from another DC": "bad_grant",
        "sender is not an end of this grant": "not_an_end",
    }.get(text, "bad_grant")
