"""Direction Coordinator state machine (sans-IO).

Rules:
- It follows the contract in proto/machine.py. Inputs: receive(datagram, addr, now)
  for the signalling port, receive_probe(...) for the probe port, handle_timer(now).
  Outputs, drained by the driver: datagrams_to_send(), probe_datagrams_to_send() (they
  leave from the probe port), events() (typed, in dc/events.py) and drops.
- Durable facts (name -> key, VIP, endpoints) go to the NodeStore; sessions
  (who is online, at which endpoint, which requests were answered) are in
  memory. After a DC restart nobody has a session, so nodes are told to
  register again and get their old VIPs from the store.
- Every request is answered idempotently: a retransmitted txid gets the cached
  reply and changes nothing. A new txid must carry a timestamp within
  CLOCK_SKEW_MS of ours, so a recorded message cannot be replayed later.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256

from ..proto.buffer import CodecError, Endpoint
from ..proto.crypto import SignalBox, StaticKey
from ..proto.grant import Grant, grant_key, make_grant
from ..proto.machine import Drops
from ..proto.messages import (
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
    Register,
    RegisterAck,
    RelayInfo,
    Role,
    Route,
    RouteDirection,
    RouteDirectionAck,
    Status,
    sendable_endpoints,
)
from ..proto.names import is_ntm_name, normalize_fqdn
from ..proto.packet import open_message, seal_message
from ..proto.transactions import Transactions
from .events import (
    DcEvent,
    NodeDeregistered,
    NodeMoved,
    NodeNat,
    NodeOffline,
    NodeOnline,
    NodeRegistered,
    NoRoute,
    RegistrationRefused,
    RouteDecided,
    RouteDirectionUnacked,
)
from .route import Reach, RoutePlan, decide_route, reach_of
from .store import NodeRecord, NodeStore, PoolExhausted

CLOCK_SKEW_MS = 120_000
RECENT_TXIDS_MAX = 256
ROUTE_DIRECTION_TIMEOUT_S = 8.0
SWEEP_INTERVAL_S = 1.0
GRANT_LIFETIME_S = 3600.0  # a relay accepts binds for a tunnel this long

Request = Register | Keepalive | DirectionRequest | Deregister  # answered once per txid


@dataclass
class Session:
    fqdn: str
    public_key: bytes
    endpoint: Endpoint
    local_endpoints: list[Endpoint]
    last_seen: float
    online: bool = True
    recent: OrderedDict[int, bytes] = field(default_factory=OrderedDict)  # txid -> sealed reply
    probe_observed: Endpoint | None = None  # as the probe port saw it
    nat_reported: Reach | None = None  # the NAT type last logged for this node

    def reach(self) -> Reach:
        return reach_of(self.endpoint, self.local_endpoints, self.probe_observed)


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
        epoch_offset: float | None = None,
        probe_endpoint: Endpoint | None = None,
        relays: list[tuple[Endpoint, bytes]] = (),
        grant_lifetime_s: float = GRANT_LIFETIME_S,
    ) -> None:
        self._static = static
        self.probe_endpoint = probe_endpoint
        # Relay Servers with the key this DC shares with each, for their grants.
        self.relays = [(ep, key, grant_key(static, key)) for ep, key in relays]
        self._grant_lifetime_ms = int(grant_lifetime_s * 1000)
        self.store = store
        self.zone = normalize_fqdn(zone)
        self._admission = {normalize_fqdn(name): key for name, key in admission.items()}
        self._admitted_keys = set(self._admission.values())
        self.keepalive_s = keepalive_s
        self._offline_after = keepalive_s * keepalive_misses
        self._random = random_bytes
        if epoch_offset is None:  # wall clock minus the clock `now` comes from
            epoch_offset = time.time() - time.monotonic()
        self._epoch_offset = epoch_offset
        self._boxes: dict[bytes, SignalBox] = {}
        self.sessions: dict[bytes, Session] = {}  # by public key
        self._tx = Transactions()
        self._out: list[tuple[bytes, Endpoint]] = []
        self._probe_out: list[tuple[bytes, Endpoint]] = []
        self._events: list[DcEvent] = []
        self._sweep_at = 0.0
        self.drops = Drops()

    # --- outputs ----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._out = self._out, []
        return out

    def probe_datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """Replies that must leave from the probe port (the NAT mapping the probe made)."""
        out, self._probe_out = self._probe_out, []
        return out

    def events(self) -> list[DcEvent]:
        events, self._events = self._events, []
        return events

    def get_timer(self) -> float:
        pending = self._tx.next_deadline()
        return self._sweep_at if pending is None else min(pending, self._sweep_at)

    def online_record(self, fqdn: str) -> NodeRecord | None:
        """The node's record if it is registered and keeping alive (for DNS)."""
        record = self.store.get(normalize_fqdn(fqdn))
        if record is None:
            return None
        session = self.sessions.get(record.public_key)
        return record if session is not None and session.online else None

    def in_zone(self, fqdn: str) -> bool:
        return is_ntm_name(normalize_fqdn(fqdn), [self.zone])

    # --- inputs -----------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        resend, expired = self._tx.due(now)
        self._out.extend(resend)
        for tx in expired:
            self._events.append(RouteDirectionUnacked(tunnel_id=tx.context[0]))
        if now >= self._sweep_at:
            self._sweep_at = now + SWEEP_INTERVAL_S
            self._mark_offline(now)

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        """A datagram on the signalling port."""
        opened = self._open(datagram)
        if opened is None:
            return
        sender, msg = opened
        if isinstance(msg, Probe):
            self._drop_probe(sender)
        elif isinstance(msg, RouteDirectionAck):
            self._on_route_direction_ack(sender, msg)
        elif isinstance(msg, Request):
            self._on_request(sender, msg, addr, now)
        else:
            self.drops.drop("unexpected message type")

    def receive_probe(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        """A datagram on the probe port: only PROBE, from a node with a session. The
        PROBE_ACK goes out from the probe port (probe_datagrams_to_send)."""
        opened = self._open(datagram)
        if opened is None:
            return
        sender, msg = opened
        session = self.sessions.get(sender)
        if not isinstance(msg, Probe) or session is None:
            self._drop_probe(sender)
        elif self._fresh(msg.timestamp_ms, now):
            self._on_probe(session, msg, addr)

    # --- handlers ---------------------------------------------------------------------

    def _open(self, datagram: bytes) -> tuple[bytes, Message] | None:
        try:
            return open_message(datagram, self._box_for)
        except CodecError as exc:
            self.drops.drop(type(exc).__name__)
            return None

    def _fresh(self, timestamp_ms: int, now: float) -> bool:
        """A new request must be timed within CLOCK_SKEW_MS of us (no replays from a recording)."""
        if abs(timestamp_ms - self._epoch_ms(now)) > CLOCK_SKEW_MS:
            self.drops.drop("stale timestamp")
            return False
        return True

    def _drop_probe(self, sender: bytes) -> None:
        no_session = sender not in self.sessions
        self.drops.drop("probe from no session" if no_session else "probe on the wrong port")

    def _on_probe(self, session: Session, msg: Probe, addr: Endpoint) -> None:
        session.probe_observed = addr
        reach = session.reach()
        if reach is not session.nat_reported:
            session.nat_reported = reach
            self._events.append(
                NodeNat(session.fqdn, reach.value, main=_ep(session.endpoint), probe=_ep(addr))
            )
        box = self._box_for(session.public_key)
        nonce = self._random(SignalBox.NONCE_LEN)
        self._probe_out.append(
            (seal_message(ProbeAck(msg.txid, addr), box, self._static.public, nonce), addr)
        )

    def _on_route_direction_ack(self, sender: bytes, msg: RouteDirectionAck) -> None:
        tx = self._tx.get(msg.txid)
        if (
            tx is not None
            and tx.kind == "route_direction"
            and tx.context == (msg.tunnel_id, sender)
        ):  # only the directed node can end its retransmits
            self._tx.finish(msg.txid)
        else:
            self.drops.drop("unexpected route direction ack")

    def _on_request(self, sender: bytes, msg: Request, addr: Endpoint, now: float) -> None:
        session = self.sessions.get(sender)
        if session is not None and msg.txid in session.recent:
            self._out.append((session.recent[msg.txid], addr))  # retransmit: same answer
            return
        if not self._fresh(msg.timestamp_ms, now):
            return
        sealed = self._seal(self._dispatch(sender, msg, addr, now), sender, addr)
        self._out.append(sealed)
        self._remember(sender, msg.txid, sealed[0])

    def _dispatch(self, sender: bytes, msg: Request, addr: Endpoint, now: float) -> Message:
        if isinstance(msg, Register):
            return self._on_register(sender, msg, addr, now)
        session = self.sessions.get(sender)
        if isinstance(msg, Deregister):
            if session is not None:
                del self.sessions[sender]
                self._events.append(NodeDeregistered(session.fqdn))
            return DeregisterAck(msg.txid)
        if session is None:  # no session (the DC restarted, say): the node registers again
            if isinstance(msg, Keepalive):
                return KeepaliveAck(msg.txid, Status.REREGISTER, addr)
            return DirectionResponse(msg.txid, Status.REREGISTER)
        self._seen(session, addr, now)
        if isinstance(msg, Keepalive):
            return KeepaliveAck(msg.txid, Status.OK, addr)
        return self._on_direction_request(session, msg, now)

    def _on_register(self, sender: bytes, msg: Register, addr: Endpoint, now: float) -> Message:
        fqdn = normalize_fqdn(msg.fqdn)
        refusal = self._admission_refusal(fqdn, sender)
        if refusal:
            self._events.append(RegistrationRefused(fqdn, _ep(addr), refusal))
            return RegisterAck(msg.txid, Status.REFUSED, reason=refusal)
        local = sendable_endpoints(msg.local_endpoints)  # only these ever reach a Direction
        try:
            record = self.store.register(fqdn, sender, addr, local, self._epoch_ms(now))
        except PoolExhausted:
            return RegisterAck(msg.txid, Status.POOL_EXHAUSTED, reason="VIP pool exhausted")
        old = self.sessions.get(sender)
        session = Session(fqdn, sender, addr, local, now)
        if old is not None:
            session.recent = old.recent
            if old.endpoint == addr:
                session.probe_observed = old.probe_observed  # same mapping: the NAT type holds
        self.sessions[sender] = session
        self._events.append(NodeRegistered(fqdn, record.vip, _ep(addr), session.reach().value))
        return RegisterAck(
            msg.txid,
            Status.OK,
            record.vip,
            self.store.pool.prefixlen,
            addr,
            self.keepalive_s,
            probe=self.probe_endpoint,
        )

    def _admission_refusal(self, fqdn: str, sender: bytes) -> str:
        if not self.in_zone(fqdn):
            return f"name {fqdn} is outside this DC's zone {self.zone}"
        admitted = self._admission.get(fqdn)
        if admitted is None:
            return f"name {fqdn} is not on the DC's admission list"
        if admitted != sender:
            return f"this node's public key is not the one admitted for {fqdn}"
        return ""

    # --- directions -------------------------------------------------------------------

    def _on_direction_request(
        self, requester: Session, msg: DirectionRequest, now: float
    ) -> DirectionResponse:
        fqdn = normalize_fqdn(msg.fqdn)
        found = self._target(requester, fqdn)
        if isinstance(found, Status):
            return DirectionResponse(msg.txid, found)
        target, target_vip = found
        req_reach, tgt_reach = requester.reach(), target.reach()
        same_nat = (
            Reach.PUBLIC not in (req_reach, tgt_reach)
            and requester.endpoint[0] == target.endpoint[0]
        )
        plan = decide_route(
            req_reach, tgt_reach, same_nat=same_nat, relay_available=bool(self.relays)
        )
        if plan is None:
            self._events.append(NoRoute(requester.fqdn, fqdn, req_reach.value, tgt_reach.value))
            return DirectionResponse(msg.txid, Status.NO_ROUTE)
        tunnel_id = self._tunnel_id()
        relay = (
            self._relay_for(tunnel_id, requester, target, now)
            if plan.route in (Route.PUNCH, Route.RELAY)
            else None
        )
        for_requester = self._direct_both(
            tunnel_id, plan, relay, requester, target, target_vip, now
        )
        self._events.append(
            RouteDecided(
                tunnel_id=tunnel_id,
                requester=requester.fqdn,
                target=fqdn,
                route=plan.route.name.lower(),
                why=plan.why,
                initiator=requester.fqdn if plan.requester_initiates else fqdn,
                requester_reach=req_reach.value,
                target_reach=tgt_reach.value,
                relay=_ep(relay.endpoint) if relay else None,
            )
        )
        return DirectionResponse(msg.txid, Status.OK, for_requester)

    def _target(self, requester: Session, fqdn: str) -> tuple[Session, str] | Status:
        """The session and VIP a DIRECTION_REQUEST names, or the status that refuses it."""
        if not self.in_zone(fqdn):
            return Status.NOT_NTM
        record = self.store.get(fqdn)
        if record is None:
            return Status.UNKNOWN
        target = self.sessions.get(record.public_key)
        if target is None or not target.online:
            return Status.OFFLINE
        if target is requester:
            return Status.BAD_REQUEST
        return target, record.vip

    def _direct_both(
        self,
        tunnel_id: int,
        plan: RoutePlan,
        relay: RelayInfo | None,
        requester: Session,
        target: Session,
        target_vip: str,
        now: float,
    ) -> Direction:
        """Sends the target its ROUTE_DIRECTION (retransmitted until acked) and returns
        the requester's half, which rides on its DIRECTION_RESPONSE."""
        requester_record = self.store.get(requester.fqdn)
        assert requester_record is not None
        role = Role.INITIATE if plan.requester_initiates else Role.RESPOND
        for_target = _direction(
            tunnel_id, plan, _other(role), requester, requester_record.vip, relay
        )
        self._direct(target, for_target, now)
        return _direction(tunnel_id, plan, role, target, target_vip, relay)

    def _relay_for(self, tunnel_id: int, a: Session, b: Session, now: float) -> RelayInfo | None:
        """Rendezvous hashing over the configured relays: each tunnel id picks the relay
        with the highest hash(tunnel id, relay key), so tunnels spread evenly and the
        choice needs no shared state; the grant binds the tunnel id and both ends."""
        if not self.relays:
            return None
        tid = tunnel_id.to_bytes(4, "big")
        endpoint, key, secret = max(self.relays, key=lambda r: sha256(tid + r[1]).digest())
        grant = Grant(
            tunnel_id, self._epoch_ms(now) + self._grant_lifetime_ms, a.public_key, b.public_key
        )
        return RelayInfo(endpoint, key, make_grant(secret, grant))

    def _direct(self, target: Session, direction: Direction, now: float) -> None:
        msg = RouteDirection(self._txid(), direction)
        datagram = self._seal(msg, target.public_key, target.endpoint)
        self._out.append(datagram)
        self._tx.start(
            msg.txid,
            "route_direction",
            [datagram],
            now,
            ROUTE_DIRECTION_TIMEOUT_S,
            context=(direction.tunnel_id, target.public_key),
        )

    # --- sessions ---------------------------------------------------------------------

    def _seen(self, session: Session, addr: Endpoint, now: float) -> None:
        session.last_seen = now
        if not session.online:
            session.online = True
            self._events.append(NodeOnline(session.fqdn))
        if session.endpoint != addr:  # NAT rebinding or the node moved
            self._events.append(NodeMoved(session.fqdn, _ep(session.endpoint), _ep(addr)))
            session.endpoint = addr
            self.store.update_observed(session.fqdn, addr, self._epoch_ms(now))

    def _mark_offline(self, now: float) -> None:
        for session in self.sessions.values():
            if session.online and now - session.last_seen > self._offline_after:
                session.online = False
                silent_s = round(now - session.last_seen, 1)
                self._events.append(NodeOffline(session.fqdn, silent_s))

    def _remember(self, sender: bytes, txid: int, sealed: bytes) -> None:
        session = self.sessions.get(sender)
        if session is None:
            return
        session.recent[txid] = sealed
        while len(session.recent) > RECENT_TXIDS_MAX:
            session.recent.popitem(last=False)

    # --- helpers ----------------------------------------------------------------------

    def _box_for(self, sender: bytes) -> SignalBox | None:
        box = self._boxes.get(sender)
        if box is None:
            box = SignalBox(self._static, sender)
            if sender in self._admitted_keys:  # cache only keys that may register
                self._boxes[sender] = box
        return box

    def _seal(self, msg: Message, peer: bytes, addr: Endpoint) -> tuple[bytes, Endpoint]:
        box = self._box_for(peer)
        assert box is not None
        nonce = self._random(SignalBox.NONCE_LEN)
        return seal_message(msg, box, self._static.public, nonce), addr

    def _txid(self) -> int:
        return int.from_bytes(self._random(4), "big")

    def _tunnel_id(self) -> int:
        return int.from_bytes(self._random(4), "big") or 1

    def _epoch_ms(self, now: float) -> int:
        return int((self._epoch_offset + now) * 1000)


def _direction(
    tunnel_id: int,
    plan: RoutePlan,
    role: Role,
    peer: Session,
    peer_vip: str,
    relay: RelayInfo | None,
) -> Direction:
    mapped = [peer.endpoint]
    private = [ep for ep in peer.local_endpoints if ep != peer.endpoint]
    endpoints = private + mapped if plan.private_endpoints else mapped + private
    return Direction(
        tunnel_id, plan.route, role, peer.fqdn, peer_vip, peer.public_key, endpoints, relay
    )


def _other(role: Role) -> Role:
    return Role.RESPOND if role == Role.INITIATE else Role.INITIATE


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


def parse_pool(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text, strict=True)
