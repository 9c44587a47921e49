"""Direction Coordinator state machine, protocol v2 (sans-IO).

Rules:
- It follows the contract in proto/machine.py. Inputs: receive(datagram, addr, now) for
  the main port, receive_probe(...) for the probe port, receive_filter(...) for the filter
  port, handle_timer(now). Outputs, drained by the driver: datagrams_to_send(),
  probe_datagrams_to_send() and filter_datagrams_to_send() (they leave from those ports),
  events() (typed, in dc/events.py) and drops.
- Main port: HANDSHAKE_INIT(REGISTER) goes through the HandshakeGate (mac1, cookie under
  load, budgets), then two X25519, then: an admitted key or no reply at all; a timestamp
  newer than any seen for the key (in memory, and durably in the store) or dropped; then
  HANDSHAKE_RESP(REGISTER_ACK) with the VIP looked up or reserved, and **nothing
  committed**. The first SIGNAL of that session commits it (dc/sessions.py).
- SIGNAL: found by the DC's own index, opened, and only then looked at. A session's
  endpoint moves only on a packet whose counter is above the highest seen (roaming).
  Requests are answered once per txid; a retransmission gets the cached answer,
  re-encrypted, to the session's current endpoint. ROUTE_DIRECTION is resent re-encrypted
  until the target acks it.
- Probe port: SIGNAL(PROBE) only (it may be the packet that confirms a new session); it
  moves nothing but the probe view, and PROBE_ACK goes to the PROBE's source from the
  probe port; the filter port only sends (dc/probes.py).
- The DC never initiates and sends nothing to a source it has no session with, except
  handshake responses (never larger than their init) and cookie replies.
- Durable facts (name -> key, VIP, greatest timestamp per key) go to the NodeStore;
  sessions live in memory. After a DC restart nobody has a session: nodes miss their
  KEEPALIVE_ACK, register again, and get their old VIPs from the store.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..proto.bodies_v2 import (
    Ack,
    Deregister,
    DirectionRequest,
    DirectionResponse,
    Keepalive,
    KeepaliveAck,
    Message,
    NameAdd,
    NameRemove,
    Probe,
    Register,
    RegisterAck,
    RouteDirectionAck,
    TunnelClosed,
    Update,
    UpdateAck,
)
from ..proto.buffer import CodecError, Endpoint
from ..proto.crypto import StaticKey
from ..proto.fields_v2 import GoneReason, Status, dc_id_of, normalize_endpoint
from ..proto.gate import Admitted, HandshakeGate, SendCookie
from ..proto.grant import grant_key
from ..proto.handshake import T_INIT, T_SIGNAL, VERSION, build_resp, open_init
from ..proto.initiate import Indexes
from ..proto.machine import Drops
from ..proto.messages_v2 import REPLY_MAX, BodyKind, MsgType, decode, encode
from ..proto.names import normalize_fqdn
from ..proto.session import Keypair
from .admission import Admission, SubZone
from .directing import Director
from .directions import DirectedTunnels, relay_choices
from .events import (
    DcEvent,
    NodeDeregistered,
    NodeMoved,
    NodeOffline,
    NodeOnline,
    NodeRegistered,
    NodeRestarted,
    NodeRevoked,
    RegistrationRefused,
)
from .names import Names
from .probes import Probes
from .redirects import Redirects
from .sessions import NodeSession, Opened, Pending, SessionTable, family_of, open_signal
from .store import NodeRecord, NodeStore, PoolExhausted

SWEEP_INTERVAL_S = 1.0
GRANT_LIFETIME_S = 3600.0  # a relay accepts binds for a tunnel this long
DC_BUDGET_MIN = 500.0  # handshakes per second before "under load" (4.5)
REGISTER_INIT_MIN = REPLY_MAX[MsgType.REGISTER]

Request = Keepalive | Update | DirectionRequest | Deregister | TunnelClosed | NameAdd | NameRemove


class Coordinator:
    def __init__(
        self,
        *,
        static: StaticKey,
        store: NodeStore,
        zone: str,
        admission: dict[str, bytes],
        keepalive_s: int,
        keepalive_misses: int,
        random_bytes: Callable[[int], bytes] = os.urandom,
        generate_key: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
        epoch_offset: float | None = None,
        probe_endpoint: Endpoint | None = None,
        filter_port: bool = False,
        relays: list[tuple[Endpoint, bytes]] = (),  # type: ignore[assignment]
        grant_lifetime_s: float = GRANT_LIFETIME_S,
        budget_per_s: float | None = None,
        subzones: Sequence[SubZone] = (),
    ) -> None:
        self._static = static
        self.dc_id = dc_id_of(static.public)
        self.probe_endpoint = probe_endpoint
        self.relays = relay_choices(relays, lambda key: grant_key(static, key))
        self._grant_lifetime_ms = int(grant_lifetime_s * 1000)
        self.store = store
        self.admission = Admission(zone, admission, subzones)
        self.zone = self.admission.zone
        self.keepalive_s = keepalive_s
        self._offline_after = keepalive_s * keepalive_misses
        self._random = random_bytes
        self._generate = generate_key
        if epoch_offset is None:  # wall clock minus the clock `now` comes from
            epoch_offset = time.time() - time.monotonic()
        self._epoch_offset = epoch_offset
        budget = budget_per_s or max(DC_BUDGET_MIN, len(self.admission.keys) / 60)
        self.gate = HandshakeGate(static, 0.0, random_bytes, budget_per_s=budget)
        self.indexes = Indexes(random_bytes)
        self.table = SessionTable()
        self.tunnels = DirectedTunnels(random_bytes)
        self._out: list[tuple[bytes, Endpoint]] = []
        self._events: list[DcEvent] = []
        self._sweep_at = 0.0
        self.drops = Drops()
        self.probes = Probes(self._events, self.drops, self._txid, filter_port)
        self.director = Director(
            dc_id=self.dc_id,
            sessions=self.table.by_key,
            relays=self.relays,
            grant_lifetime_ms=self._grant_lifetime_ms,
            send=self._send,
            txid=self._txid,
            epoch_ms=self._epoch_ms,
            events=self._events,
            tunnels=self.tunnels,
            drops=self.drops,
            vip6_of=self.store.vip6.of,
        )
        self.redirects = Redirects(self.director, self._events)
        self.names = Names(self.store, self.admission, self.table, self._events, self._epoch_ms)

    @property
    def sessions(self) -> dict[bytes, NodeSession]:
        """Committed sessions by the node's public key."""
        return self.table.by_key

    # --- outputs ----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._out = self._out, []
        return out

    def probe_datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """Replies that must leave from the probe port (the NAT mapping the probe made)."""
        out, self.probes.probe_out = self.probes.probe_out, []
        return out

    def filter_datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """The unasked PROBE_ACKs: they leave from the filter port (dc/probes.py)."""
        out, self.probes.filter_out = self.probes.filter_out, []
        return out

    def events(self) -> list[DcEvent]:
        events = self._events[:]
        self._events.clear()  # the same list: the director and redirects append to it
        return events

    def get_timer(self) -> float:
        times = [
            self.director.tx.next_deadline(),
            self.redirects.next_deadline(),
            self.director.next_renewal(),
            self._sweep_at,
        ]
        return min(t for t in times if t is not None)

    def online_record(self, fqdn: str) -> NodeRecord | None:
        """The node's record if it is registered and keeping alive (for DNS)."""
        fqdn = normalize_fqdn(fqdn)
        record = self.store.get(fqdn)
        if record is None:
            return None
        session = self.sessions.get(record.public_key)
        if session is None or not session.online or fqdn not in session.names:
            return None
        return record

    def in_zone(self, fqdn: str) -> bool:
        return self.admission.in_zone(fqdn)

    # --- inputs -----------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self.director.handle_timer(now)
        if now >= self._sweep_at:
            self._sweep_at = now + SWEEP_INTERVAL_S
            self._mark_offline(now)
            self._release(self.table.expire(now))
        self.redirects.expire(now)  # its deadline is in get_timer: not only at the sweep
        self.redirects.run(now)

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        """A datagram on the main port."""
        addr = self._source(datagram, addr)
        if addr is None:
            return
        if datagram[1] == T_INIT:
            self._on_init(datagram, addr, now)
        elif datagram[1] == T_SIGNAL:
            opened = self._open_signal(datagram, now)
            if opened is not None:
                self._on_signal(*opened, addr, now)
                self.redirects.run(now)  # a mover that just told us where it is
        else:
            self.drops.drop("unexpected_type")

    def receive_probe(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        """A datagram on the probe port: only SIGNAL(PROBE). The PROBE_ACK goes out from
        the probe port (probe_datagrams_to_send)."""
        addr = self._source(datagram, addr)
        if addr is None:
            return
        if datagram[1] != T_SIGNAL:
            self.drops.drop("probe_not_signal")
            return
        opened = self._open_signal(datagram, now)
        if opened is None:
            return
        owner, _, _, msg = opened
        if not isinstance(msg, Probe):
            self.drops.drop("probe_port_message")
            return
        # An authentic packet of the new session confirms its keys wherever it arrives;
        # the session's endpoint stays the one the main port saw.
        session = self._commit(owner, now) if isinstance(owner, Pending) else owner
        self.probes.on_probe(session, msg, addr, now)
        self.redirects.run(now)  # a mover whose NAT type we were waiting for

    def receive_filter(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        """The filter port only sends: nothing that arrives there is looked at."""
        self.drops.drop("filter_port_input")

    # --- handshakes -------------------------------------------------------------------

    def _source(self, datagram: bytes, addr: Endpoint) -> Endpoint | None:
        if len(datagram) < 4 or datagram[0] != VERSION:
            self.drops.drop("not_v2")
            return None
        try:
            return normalize_endpoint(addr)
        except CodecError:
            self.drops.drop("bad_source")
            return None

    def _on_init(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        if len(datagram) < REGISTER_INIT_MIN:
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
        except CodecError:
            self.drops.drop("bad_init")
            return
        key = opened.initiator_public
        if key not in self.admission.keys:
            self.drops.drop("unadmitted_key")  # no reply: a refusal goes to admitted keys only
            return
        try:
            body = decode(opened.body, where=BodyKind.INIT)
        except CodecError:
            self.drops.drop("malformed_body")
            return
        if not isinstance(body, Register):
            self.drops.drop("unexpected_init_body")
            return
        fresh = self.gate.fresh(key, opened.timestamp, datagram, addr, now)
        if isinstance(fresh, bytes):
            self._out.append((fresh, addr))  # our response was lost: the same one again
            return
        if not fresh:
            self.drops.drop("replayed_init")
            return
        stored = self.store.last_timestamp(key)
        if stored is not None and opened.timestamp <= stored:
            self.drops.drop("init_ts_behind")
            return
        answer, vip = self._register_answer(key, body, addr)
        index = self.indexes.new()
        response, keys = build_resp(
            opened,
            self._generate(),
            sender_index=index,
            receiver_index=decision.frame.sender_index,
            body=encode(answer),
        )
        self.gate.answered(key, datagram, response, addr, now)
        self._out.append((response, addr))
        if vip is None:
            self.indexes.release(index)
            return
        keypair = Keypair(
            keys.send, keys.receive, index, decision.frame.sender_index, now, initiator=False
        )
        pending = Pending(key, body.fqdn, body.boot_id, vip, keypair, addr, opened.timestamp, now)
        self._release(self.table.add_pending(pending))

    def _register_answer(
        self, key: bytes, msg: Register, addr: Endpoint
    ) -> tuple[RegisterAck, str | None]:
        """The REGISTER_ACK and the VIP promised (None for a refusal). Stores nothing."""
        refusal = self.admission.refusal(msg.fqdn, key)
        if refusal:
            self._events.append(RegistrationRefused(msg.fqdn, _ep(addr), refusal))
            return RegisterAck(msg.txid, Status.REFUSED), None
        record = self.store.get(msg.fqdn)
        try:
            if record is not None:
                vip = record.vip
            else:
                others = {p.vip for p in self.table.pending.values() if p.public_key != key}
                vip = self.store.free_vip(others)
        except PoolExhausted:
            return RegisterAck(msg.txid, Status.POOL_EXHAUSTED), None
        vip6 = self.store.vip6
        ack = RegisterAck(
            msg.txid,
            Status.OK,
            vip4=vip,
            prefix4=self.store.pool.prefixlen,
            vip6=vip6.of(vip),
            prefix6=vip6.prefix6,
            observed=addr,
            keepalive_s=self.keepalive_s,
            probe=self.probe_endpoint,
        )
        return ack, vip

    def _commit(self, pending: Pending, now: float) -> NodeSession:
        """Key confirmation: the registration takes effect."""
        old = self.table.by_key.get(pending.public_key)
        was_offline = old is not None and not old.online
        session, replaced, freed = self.table.commit(pending, now)
        session.filter_probed = self.probes.filter_port
        self._release(freed)
        self.store.record_timestamp(pending.public_key, pending.timestamp)
        self.gate.pin(pending.public_key)
        if replaced is None and session.previous is not None:
            # The REGISTER's source is where the node is now, whichever port confirmed it
            # (a PROBE on the probe port must not leave the old endpoint to re-direct to).
            self._move_to(session, pending.endpoint, now)
            if was_offline:  # registered again after an outage, same process: it is back
                self._events.append(NodeOnline(session.fqdn))
                self.redirects.back_online(session, now)
            return session  # a rekey of a live session: nothing else changes
        self.store.register(
            session.fqdn,
            session.public_key,
            session.endpoint,
            session.local_endpoints,
            self._epoch_ms(now),
            vip=pending.vip,
        )
        if replaced is not None and replaced.boot_id != session.boot_id:
            count = len(self.tunnels.of_key(session.public_key))
            self._events.append(NodeRestarted(session.fqdn, count))
            self.redirects.restarted(session, now)
        self._events.append(
            NodeRegistered(session.fqdn, session.vip, _ep(session.endpoint), session.reach().value)
        )
        return session

    # --- session messages -------------------------------------------------------------

    def _open_signal(self, datagram: bytes, now: float) -> Opened | None:
        return open_signal(self.table, datagram, now, self.drops)

    def _on_signal(
        self,
        owner: Pending | NodeSession,
        keypair: Keypair,
        counter: int,
        msg: Message,
        addr: Endpoint,
        now: float,
    ) -> None:
        session = self._commit(owner, now) if isinstance(owner, Pending) else owner
        index = keypair.local_index
        fresh = counter > session.highest.get(index, -1)
        if fresh:
            session.highest[index] = counter
        self._seen(session, addr, now, fresh)
        if isinstance(msg, RouteDirectionAck | Ack):
            tunnel_id = msg.tunnel_id if isinstance(msg, RouteDirectionAck) else None
            if not self.director.finish(session, msg.txid, tunnel_id):
                self.drops.drop("unexpected_ack")
        elif isinstance(msg, Request):
            self._on_request(session, msg, now)
        elif isinstance(msg, Probe):
            self.drops.drop("probe_on_main_port")
        else:
            self.drops.drop("unexpected_message")

    def _on_request(self, session: NodeSession, msg: Request, now: float) -> None:
        cached = session.answers.get(msg.txid)
        if cached is not None:  # a retransmission: the same answer, under a new counter
            self._send(session, cached, now)
            return
        answer = self._answer(session, msg, now)
        session.remember(msg.txid, answer)
        self._send(session, answer, now)
        if isinstance(msg, Deregister):
            self._end(session, now)
            self._events.append(NodeDeregistered(session.fqdn))

    def _answer(self, session: NodeSession, msg: Request, now: float) -> Message:
        if isinstance(msg, Keepalive):
            return KeepaliveAck(msg.txid, Status.OK, session.endpoint)
        if isinstance(msg, Update):
            local = list(dict.fromkeys(msg.local_endpoints))
            if local != session.local_endpoints:
                session.local_endpoints = local
                self.redirects.moved(session, now)
            for family in session.endpoints:
                self.probes.report(session, family)
            return UpdateAck(msg.txid, Status.OK, session.endpoint)
        if isinstance(msg, DirectionRequest):
            return self._on_direction_request(session, msg, now)
        if isinstance(msg, NameAdd):
            held = session.holds(msg.fqdn)
            ack = self.names.add(session, msg, now)
            if ack.status == Status.OK and not held:
                self.redirects.name_added(session, now)
            return ack
        if isinstance(msg, NameRemove):
            if self.names.remove(session, msg.fqdn):
                self.redirects.name_removed(session, msg.fqdn, now)
            return Ack(msg.txid)
        if isinstance(msg, TunnelClosed):
            tunnel = self.tunnels.by_id.get(msg.tunnel_id)
            if tunnel is not None and session.public_key in (
                tunnel.requester_key,
                tunnel.target_key,
            ):
                self.tunnels.remove(msg.tunnel_id)
            return Ack(msg.txid)
        return Ack(msg.txid)  # DEREGISTER

    # --- reload -----------------------------------------------------------------------

    def reload(
        self,
        admission: dict[str, bytes],
        subzones: Sequence[SubZone],
        relays: list[tuple[Endpoint, bytes]],
        now: float,
    ) -> dict[str, Any]:
        """A new admission list and relays (SIGHUP, reload.py). A session whose REGISTER
        name its key may no longer hold ends (its peers get TUNNEL_GONE), an added name so
        revoked is removed, and pendings of keys no longer admitted are forgotten."""
        self.admission.replace(admission, subzones)
        self.relays[:] = relay_choices(relays, lambda key: grant_key(self._static, key))
        self._release(self.table.drop_pending(lambda key: key in self.admission.keys))
        revoked = []
        for session in list(self.table.by_key.values()):
            key = session.public_key
            if self.admission.refusal(session.fqdn, key, stored=True):
                self._end(session, now)
                self._events.append(NodeRevoked(session.fqdn))
                revoked.append(session.fqdn)
                continue
            for name in [n for n in session.added if self.admission.refusal(n, key, stored=True)]:
                if self.names.remove(session, name):
                    self.redirects.name_removed(session, name, now)
                    revoked.append(name)
        return {"admitted": len(admission), "subzones": len(subzones), "revoked": revoked,
                "relays": len(self.relays)}

    # --- directions -------------------------------------------------------------------

    def _on_direction_request(
        self, requester: NodeSession, msg: DirectionRequest, now: float
    ) -> DirectionResponse:
        if msg.from_name not in requester.names:
            self.drops.drop("direction_from_another_name")
            return DirectionResponse(msg.txid, Status.BAD_REQUEST)
        found = self._target(requester, msg.fqdn)
        if isinstance(found, Status):
            return DirectionResponse(msg.txid, found)
        return self.director.on_request(requester, found, msg, now)

    def _target(self, requester: NodeSession, fqdn: str) -> NodeSession | Status:
        """The session a DIRECTION_REQUEST names, or the status that refuses it."""
        if not self.in_zone(fqdn):
            return Status.NOT_NTM
        record = self.store.get(fqdn)
        if record is None:
            return Status.UNKNOWN
        target = self.sessions.get(record.public_key)
        if target is None or not target.online or fqdn not in target.names:
            return Status.OFFLINE
        if target is requester:
            return Status.BAD_REQUEST
        return target

    # --- sessions ---------------------------------------------------------------------

    def _send(self, session: NodeSession, msg: Message, now: float) -> None:
        keypair = session.sending(now)
        if keypair is None:
            self.drops.drop("expired_keys")
            return
        try:
            payload = encode(msg)
        except CodecError:
            self.drops.drop("unencodable_answer")
            return
        self._out.append((keypair.seal(T_SIGNAL, payload), session.endpoint))

    def _seen(self, session: NodeSession, addr: Endpoint, now: float, fresh: bool) -> None:
        session.last_seen = now
        if not session.online:
            session.online = True
            self._events.append(NodeOnline(session.fqdn))
            self.redirects.back_online(session, now)
        if fresh:
            self._move_to(session, addr, now)

    def _move_to(self, session: NodeSession, addr: Endpoint, now: float) -> None:
        """An authentic datagram from `addr`: NAT rebinding or the node moved (roaming)."""
        family = family_of(addr)
        old = session.endpoints.get(family)
        if old == addr:
            return
        session.endpoints[family] = addr
        if old is not None:
            self._events.append(NodeMoved(session.fqdn, _ep(old), _ep(addr)))
            self.redirects.moved(session, now)
        self.probes.report(session, family)  # its probe may have come first
        self.store.update_observed(session.fqdn, session.endpoint, self._epoch_ms(now))

    def _end(self, session: NodeSession, now: float) -> None:
        self._release(self.table.remove(session))
        self.gate.unpin(session.public_key)
        self.redirects.ended(session, GoneReason.DEREGISTERED, now)

    def _mark_offline(self, now: float) -> None:
        for session in self.sessions.values():
            if session.online and now - session.last_seen > self._offline_after:
                session.online = False
                silent_s = round(now - session.last_seen, 1)
                self._events.append(NodeOffline(session.fqdn, silent_s))
                self.redirects.went_offline(session, now)

    def _release(self, indexes: list[int]) -> None:
        for index in indexes:
            self.indexes.release(index)

    # --- helpers ----------------------------------------------------------------------

    def _txid(self) -> int:
        return int.from_bytes(self._random(4), "big")

    def _epoch_ms(self, now: float) -> int:
        return int((self._epoch_offset + now) * 1000)


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


def parse_pool(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text, strict=True)
