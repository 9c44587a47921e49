"""The DC's node sessions (v2, sans-IO): what a registration handshake leaves pending, what
key confirmation commits, and the table that finds either by the DC's own index.

Rules (docs/protocol.md 4.3, 4.4, 7.1):
- A REGISTER init that passes the gate and is answered leaves a `Pending` (at most one per
  key, PENDING_MAX in all, the oldest evicted): its keypair, the name, boot_id and the VIP
  promised (looked up or reserved), nothing stored.
- The first SIGNAL on that keypair commits it (key confirmation): `SessionTable.commit`
  makes or updates the key's `NodeSession`; the keypair becomes current and the one before
  it stays for receiving until it expires (1,860 s).
- A session's endpoint per family moves only on an authenticated packet on the main port
  whose counter is above the highest seen on that keypair (`Sessions.fresh_counter`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..proto.bodies_v2 import Message
from ..proto.buffer import CodecError, Endpoint
from ..proto.crypto import AuthError
from ..proto.handshake import T_SIGNAL
from ..proto.machine import Drops
from ..proto.messages_v2 import BodyKind, decode
from ..proto.session import Keypair, ReplayError, parse_transport
from .route import Reach, reach_of

DC_REKEY_AFTER_S = 1800.0  # the node's job: it initiates (4.4)
DC_REJECT_AFTER_S = 1860.0
PENDING_MAX = 4096
PENDING_TIMEOUT_S = 15.0  # an answered REGISTER not confirmed by then is forgotten
ANSWERS_MAX = 256  # cached answers per session, by txid (section 10)


def family_of(endpoint: Endpoint) -> int:
    return 6 if ":" in endpoint[0] else 4


@dataclass(eq=False)
class Pending:
    """A REGISTER answered OK, waiting for its key confirmation."""

    public_key: bytes
    fqdn: str
    boot_id: int
    vip: str
    keypair: Keypair
    endpoint: Endpoint
    timestamp: bytes
    created_at: float


@dataclass(eq=False)
class NodeSession:
    public_key: bytes
    fqdn: str
    boot_id: int
    vip: str
    endpoints: dict[int, Endpoint]  # the node as this DC sees it, per family
    last_seen: float
    current: Keypair
    previous: Keypair | None = None
    local_endpoints: list[Endpoint] = field(default_factory=list)
    online: bool = True
    answers: OrderedDict[int, Message] = field(default_factory=OrderedDict)
    # Per family: the node's endpoint as the probe port saw it, and when last.
    probe_observed: dict[int, Endpoint] = field(default_factory=dict)
    probe_at: float | None = None
    # The filter port (when the DC has one): per family, the endpoint shown to pass packets
    # the node never asked for, and the txid of the unasked PROBE_ACK awaiting the echo.
    filter_probed: bool = False
    unfiltered: dict[int, Endpoint] = field(default_factory=dict)
    filter_txids: dict[int, tuple[int, Endpoint]] = field(default_factory=dict)  # (txid, to)
    nat_reported: dict[int, Reach] = field(default_factory=dict)  # last logged, per family
    highest: dict[int, int] = field(default_factory=dict)  # local index -> highest counter
    added: dict[str, str] = field(default_factory=dict)  # NAME_ADD's names -> their VIPs

    @property
    def names(self) -> list[str]:
        """The REGISTER name first, then those added (kept across rekeys, not restarts)."""
        return [self.fqdn, *self.added]

    def holds(self, fqdn: str) -> bool:
        return fqdn == self.fqdn or fqdn in self.added

    def vip_of(self, fqdn: str) -> str:
        return self.added.get(fqdn, self.vip)

    @property
    def endpoint(self) -> Endpoint:
        """The main endpoint: IPv4 if the node has one, else IPv6."""
        return self.endpoints.get(4) or self.endpoints[6]

    def reach(self, family: int = 0) -> Reach:
        """How the node is reached in `family` (0: its main endpoint's); a probe result
        counts only for the family it was made in."""
        endpoint = self.endpoints[family] if family else self.endpoint
        family = family_of(endpoint)
        unfiltered = self.unfiltered.get(family) == endpoint if self.filter_probed else None
        return reach_of(endpoint, self.local_endpoints, self.probe_observed.get(family), unfiltered)

    def learning_reach(self, family: int = 0) -> bool:
        """Its reach in `family` is still being learnt: a NAT not probed yet, or (with a
        filter port) an end with no NAT whose probe or echo is on its way."""
        reach = self.reach(family)
        if reach is Reach.NAT:
            return True
        family = family_of(self.endpoints[family] if family else self.endpoint)
        waiting = family not in self.probe_observed or family in self.filter_txids
        return reach is Reach.FILTERED and waiting

    def forget_probes(self) -> None:
        """The node moved: what the probes showed was of its old network."""
        self.probe_observed = {}
        self.unfiltered = {}
        self.filter_txids = {}
        self.nat_reported = {}

    def keypairs(self) -> list[Keypair]:
        return [k for k in (self.current, self.previous) if k is not None]

    def sending(self, now: float) -> Keypair | None:
        keypair = self.current
        return None if keypair.expired(now, DC_REJECT_AFTER_S) else keypair

    def remember(self, txid: int, answer: Message) -> None:
        self.answers[txid] = answer
        while len(self.answers) > ANSWERS_MAX:
            self.answers.popitem(last=False)


Owner = Pending | NodeSession


class SessionTable:
    """Pendings and sessions, and the index each keypair was given (the DC's own)."""

    def __init__(self) -> None:
        self.by_key: dict[bytes, NodeSession] = {}
        self.pending: OrderedDict[bytes, Pending] = OrderedDict()  # by key, oldest first
        self.by_index: dict[int, tuple[Owner, Keypair]] = {}

    def reserved_vips(self) -> set[str]:
        return {p.vip for p in self.pending.values()}

    def add_pending(self, pending: Pending) -> list[int]:
        """Returns the indexes freed (a key's older pending, the oldest beyond the bound)."""
        freed = []
        old = self.pending.pop(pending.public_key, None)
        if old is not None:
            freed.append(self._forget(old.keypair))
        self.pending[pending.public_key] = pending
        self.by_index[pending.keypair.local_index] = (pending, pending.keypair)
        while len(self.pending) > PENDING_MAX:
            _, oldest = self.pending.popitem(last=False)
            freed.append(self._forget(oldest.keypair))
        return freed

    def drop_pending(self, keep: Callable[[bytes], bool]) -> list[int]:
        """Forgets the pendings of keys `keep` refuses; returns the indexes freed."""
        gone = [key for key in self.pending if not keep(key)]
        return [self._forget(self.pending.pop(key).keypair) for key in gone]

    def commit(
        self, pending: Pending, now: float
    ) -> tuple[NodeSession, NodeSession | None, list[int]]:
        """Key confirmation: (the session, the one it replaced if the node restarted or
        took over another session of the same key, indexes freed)."""
        self.pending.pop(pending.public_key, None)
        keypair, freed = pending.keypair, []
        endpoints = {family_of(pending.endpoint): pending.endpoint}
        old = self.by_key.get(pending.public_key)
        if old is not None and old.boot_id == pending.boot_id and old.fqdn == pending.fqdn:
            if old.previous is not None:  # a rekey: same session, new keypair
                freed.append(self._forget(old.previous))
            old.previous, old.current = old.current, keypair
            old.last_seen, old.online = now, True
            self.by_index[keypair.local_index] = (old, keypair)
            return old, None, freed
        if old is not None:
            freed += [self._forget(k) for k in old.keypairs()]
        session = NodeSession(
            pending.public_key,
            pending.fqdn,
            pending.boot_id,
            pending.vip,
            endpoints,
            now,
            keypair,
        )
        if old is not None and old.endpoint == pending.endpoint:
            session.probe_observed = old.probe_observed  # same mapping: the NAT type holds
            session.probe_at = old.probe_at
            session.unfiltered = old.unfiltered
            session.local_endpoints = old.local_endpoints
        self.by_key[pending.public_key] = session
        self.by_index[keypair.local_index] = (session, keypair)
        return session, old, freed

    def remove(self, session: NodeSession) -> list[int]:
        if self.by_key.get(session.public_key) is session:
            del self.by_key[session.public_key]
        return [self._forget(k) for k in session.keypairs()]

    def expire(self, now: float) -> list[int]:
        """Drop unconfirmed pendings and keypairs past their time; sessions whose current
        keypair expired end (the node failed to rekey). Returns the indexes freed."""
        freed = []
        for key, pending in list(self.pending.items()):
            if now - pending.created_at >= PENDING_TIMEOUT_S:
                del self.pending[key]
                freed.append(self._forget(pending.keypair))
        for session in list(self.by_key.values()):
            prev = session.previous
            if prev is not None and now - prev.created_at >= DC_REJECT_AFTER_S:
                session.previous = None
                freed.append(self._forget(prev))
            if now - session.current.created_at >= DC_REJECT_AFTER_S:
                freed += self.remove(session)
        return freed

    def _forget(self, keypair: Keypair) -> int:
        self.by_index.pop(keypair.local_index, None)
        return keypair.local_index


Opened = tuple[Owner, Keypair, int, Message]


def open_signal(table: SessionTable, datagram: bytes, now: float, drops: Drops) -> Opened | None:
    """(owner, keypair, counter, message) of an authentic, fresh SIGNAL to one of the DC's
    indexes; None, counted, for anything else. No DH: a table lookup and one AEAD."""
    try:
        _, index, counter = parse_transport(datagram)
    except CodecError:
        drops.drop("malformed_transport")
        return None
    found = table.by_index.get(index)
    if found is None or datagram[1] != T_SIGNAL:
        drops.drop("unknown_index")
        return None
    owner, keypair = found
    if keypair.expired(now, DC_REJECT_AFTER_S):
        drops.drop("expired_keys")
        return None
    try:
        msg = decode(keypair.open(datagram, counter), where=BodyKind.SESSION)
    except ReplayError:
        drops.drop("replayed")
        return None
    except AuthError:
        drops.drop("bad_signal")
        return None
    except CodecError:
        drops.drop("malformed_message")
        return None
    return owner, keypair, counter, msg
