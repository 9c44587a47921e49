"""The node's session with its DC, protocol v2 (sans-IO; docs/protocol.md 7.1).

    start() / register()                       UNREGISTERED -> REGISTERING: HANDSHAKE_INIT
                                               (REGISTER, padded to its reply_max)
    REGISTER_ACK OK                            REGISTERING  -> REGISTERED: KEEPALIVE at once
                                               (key confirmation), UPDATE(local endpoints),
                                               PROBE through the probe port, per family
    REGISTER_ACK refused                       REGISTERING  -> REFUSED (retry at retry_at)
    retry_at passes                            REFUSED      -> REGISTERING
    KEEPALIVE_ACK missing (after resends),
      or no REGISTER_ACK by REGISTER_TIMEOUT_S any         -> REGISTERING (DcUnreachable)
    DC_REKEY_AFTER_S since the keypair         REGISTERED: a new REGISTER, same boot_id
    deregister() while registered              any          -> UNREGISTERED

Session messages travel in SIGNAL under the session's keypair; requests (KEEPALIVE, UPDATE,
PROBE, DIRECTION_REQUEST, DEREGISTER, TUNNEL_CLOSED) are resent re-encrypted under the
next counter until answered or their deadline passes (proto/transactions.py). The node
never roams its DC session: the DC's endpoint is configured.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import replace

from ..bodies_v2 import (
    Deregister,
    Keepalive,
    KeepaliveAck,
    Message,
    Probe,
    ProbeAck,
    Register,
    RegisterAck,
    Update,
)
from ..buffer import CodecError, Endpoint
from ..crypto import AuthError
from ..fields_v2 import UPDATE_ENDPOINTS_MAX, Status, check_endpoint
from ..handshake import T_SIGNAL
from ..initiate import PendingInit
from ..messages_v2 import REPLY_MAX, BodyKind, MsgType, decode, encode
from ..noise import SessionKeys
from ..session import ExpiredKeys, Keypair, KeyRing, ReplayError
from ..transactions import Transaction, Transactions
from .events import DcUnreachable, Registered, RegistrationFailed
from .wire import DcContext, NameVips, Wire

REGISTER_TIMEOUT_S = 8.0
REFUSED_RETRY_S = 30.0
PROBE_TIMEOUT_S = 4.0
ECHO_MIN_INTERVAL_S = 1.0  # echoes of the filter port's unasked PROBE_ACKs, at most
UPDATE_TIMEOUT_S = 8.0
DEREGISTER_TIMEOUT_S = 2.0
DC_REKEY_AFTER_S = 1800.0  # node<->DC sessions (4.4)
DC_REJECT_AFTER_S = 1860.0
NO_VIP = "0.0.0.0"


class SessionState(enum.Enum):
    UNREGISTERED = "unregistered"  # not started, or deregistered
    REGISTERING = "registering"  # a REGISTER handshake is in flight
    REGISTERED = "registered"  # keep-alives run
    REFUSED = "refused"  # the DC said no; we ask again at retry_at


class DcTx(enum.Enum):
    """The node's requests to its DC; DIRECTION's context is the name asked for."""

    KEEPALIVE = "keepalive"
    KEEPALIVE_OTHER = "keepalive_other"  # to the DC's other-family address: its loss is no alarm
    UPDATE = "update"
    PROBE = "probe"
    PROBE_OTHER = "probe_other"  # the probe port in our other family (dual-stack)
    DIRECTION = "direction"
    DEREGISTER = "deregister"
    TUNNEL_CLOSED = "tunnel_closed"
    NAME_ADD = "name_add"  # context: the name
    NAME_REMOVE = "name_remove"


DcTransaction = Transaction[DcTx, object]


class DcSession:
    def __init__(
        self,
        wire: Wire,
        fqdn: str,
        local_endpoints: Callable[[], list[Endpoint]],
        boot_id: int,
    ) -> None:
        self._wire = wire
        self.fqdn = fqdn
        self._local_endpoints = local_endpoints
        self.boot_id = boot_id
        self.state = SessionState.UNREGISTERED
        self.registration: Registered | None = None
        self.ring = KeyRing(reject_after=DC_REJECT_AFTER_S)
        self.tx: Transactions[DcTx, object] = Transactions()
        self.pending: PendingInit | None = None
        self._register_txid = 0
        self.register_deadline: float | None = None  # no REGISTER_ACK by then: unreachable
        self.keepalive_at: float | None = None  # when the next KEEPALIVE goes out
        self.rekey_at: float | None = None
        # After a refusal: when to ask again.
        self.retry_at: float | None = None
        self.probe_endpoint: Endpoint | None = None
        self.other_dc: Endpoint | None = None  # the DC's address in our other family
        self.nat_probe_observed: Endpoint | None = None  # our endpoint as the probe port saw it
        self.mapping_changed = False  # set by on_observed; NodeSignalling clears it
        self._echo_after: dict[int, float] = {}  # per family: no echo before then
        self.last_ack_at: float | None = None  # the DC's last REGISTER_ACK or KEEPALIVE_ACK
        self.keepalives_lost = 0  # KEEPALIVEs the DC never answered (each a re-register)

    @property
    def vip(self) -> str:
        return self.registration.vip if self.registration else NO_VIP

    def timers(self) -> list[float | None]:
        return [
            self.tx.next_deadline(),
            self.register_deadline,
            self.keepalive_at,
            self.rekey_at,
            self.retry_at,
        ]

    # --- registration -----------------------------------------------------------------

    def register(self, now: float) -> None:
        """(Re)start the REGISTER handshake; a registered session stays usable meanwhile
        (a rekey), any other state becomes REGISTERING."""
        wire = self._wire
        if self.pending is not None:
            wire.initiations.forget(self.pending)
            self.pending = None
        self._register_txid = wire.txid()
        body = encode(Register(self._register_txid, self.boot_id, self.fqdn))
        try:
            self.pending = wire.initiations.start(
                wire.dc_public,
                body,
                REPLY_MAX[MsgType.REGISTER],
                now,
                wire.clock_epoch(now),
                context=DcContext(),
            )
        except CodecError:
            wire.drops.drop("too_many_handshakes")
            return
        wire.out.append((self.pending.datagram, wire.dc_endpoint))
        if self.state != SessionState.REGISTERED:
            self.state = SessionState.REGISTERING
            if self.register_deadline is None:
                self.register_deadline = now + REGISTER_TIMEOUT_S

    def on_expired(self, pending: PendingInit, now: float) -> None:
        """Our REGISTER got no answer within REKEY_TIMEOUT: a fresh one (new timestamp)."""
        if pending is self.pending:
            self.pending = None
            self.register(now)

    def on_established(
        self, pending: PendingInit, remote_index: int, body: bytes, keys: SessionKeys, now: float
    ) -> bool:
        """The DC's REGISTER_ACK; True when it made us registered anew (not a rekey)."""
        wire = self._wire
        if pending is not self.pending:
            wire.release(pending.sender_index)
            return False
        self.pending = None
        try:
            msg = decode(body, where=BodyKind.RESPONSE)
        except CodecError:
            msg = None
        if not isinstance(msg, RegisterAck) or msg.txid != self._register_txid:
            wire.drops.drop("bad_register_ack")
            wire.release(pending.sender_index)
            return False
        if msg.status != Status.OK:
            wire.release(pending.sender_index)
            self._refused(msg, now)
            return False
        keypair = Keypair(keys.send, keys.receive, pending.sender_index, remote_index, now, True)
        for dropped in self.ring.install(keypair):
            wire.release(dropped.local_index)
        wire.by_index[keypair.local_index] = self
        return self._registered(msg, now)

    def _refused(self, msg: RegisterAck, now: float) -> None:
        self._wire.events.append(RegistrationFailed(msg.status, msg.status.name))
        self.retry_at = now + REFUSED_RETRY_S
        self.register_deadline = None
        self.state = SessionState.REFUSED

    def _registered(self, msg: RegisterAck, now: float) -> bool:
        wire = self._wire
        assert msg.observed is not None  # an OK REGISTER_ACK has one
        behind_nat = msg.observed not in self._local_endpoints()
        registration = Registered(
            msg.vip4, msg.prefix4, msg.observed, behind_nat, msg.keepalive_s, msg.vip6, msg.prefix6
        )
        anew = self.registration != registration
        self.registration = registration
        self.state = SessionState.REGISTERED
        self.register_deadline = self.retry_at = None
        self.last_ack_at = now
        self.rekey_at = now + DC_REKEY_AFTER_S
        wire.names[self.fqdn] = NameVips(msg.vip4, msg.vip6)  # added names stay (names.py)
        self.keepalive_at = None
        self._keepalive(now)  # key confirmation at once
        if anew:
            wire.events.append(registration)
            self.update(now)
            self.probe_endpoint = msg.probe
            self.probe(now)  # behind a NAT or not: a firewall shows only there
        return anew

    def deregister(self, now: float) -> None:
        if self.registration is None:
            return
        self.request(Deregister(self._wire.txid()), DcTx.DEREGISTER, now, DEREGISTER_TIMEOUT_S)
        self.registration = None
        self.keepalive_at = self.rekey_at = self.register_deadline = None
        self.state = SessionState.UNREGISTERED

    # --- requests ---------------------------------------------------------------------

    def send(self, msg: Message, now: float, to: Endpoint | None = None) -> bool:
        """One session message to the DC (or to `to`, the probe port)."""
        try:
            keypair = self.ring.sending(now)
        except ExpiredKeys:
            self._wire.drops.drop("no_dc_session")
            return False
        try:
            payload = encode(msg)
        except CodecError:
            self._wire.drops.drop("unencodable_message")
            return False
        self._wire.out.append((keypair.seal(T_SIGNAL, payload), to or self._wire.dc_endpoint))
        return True

    def request(
        self, msg: Message, kind: DcTx, now: float, timeout: float, context: object = None
    ) -> None:
        self.tx.start(msg.txid, kind, msg, now, timeout, context=context)  # type: ignore[union-attr]
        self._send_request(kind, msg, now)

    def _send_request(self, kind: DcTx, msg: Message, now: float) -> None:
        to = {**self.probe_targets(), DcTx.KEEPALIVE_OTHER: self.other_dc}.get(kind)
        self.send(msg, now, to)

    def _keepalive(self, now: float) -> None:
        """KEEPALIVE to the DC; a dual-stack node sends one to the DC's other-family address
        too, so the DC hears it in both families (each end's route is decided per family)."""
        told_s = self.registration.keepalive_s if self.registration else 6
        timeout = max(2.0, min(6.0, told_s))
        for old in [*self.tx.find(DcTx.KEEPALIVE), *self.tx.find(DcTx.KEEPALIVE_OTHER)]:
            self.tx.finish(old.txid)
        self.request(Keepalive(self._wire.txid()), DcTx.KEEPALIVE, now, timeout)
        if self.other_dc is not None:
            self.request(Keepalive(self._wire.txid()), DcTx.KEEPALIVE_OTHER, now, timeout)

    def update(self, now: float) -> None:
        """Our local endpoints (valid ones, at most 6) to the DC."""
        valid = []
        for endpoint in self._local_endpoints():
            try:
                check_endpoint(endpoint)
            except CodecError:
                continue
            valid.append(endpoint)
        msg = Update(self._wire.txid(), tuple(dict.fromkeys(valid))[:UPDATE_ENDPOINTS_MAX])
        self.request(msg, DcTx.UPDATE, now, UPDATE_TIMEOUT_S)

    def probe_targets(self) -> dict[DcTx, Endpoint]:
        """Where PROBE goes in each family we keep the DC session in: the probe port as the
        DC told it, in its family; in the other one, that port at the DC's address there."""
        probe = self.probe_endpoint
        if probe is None:
            return {}
        targets = {}
        for kind, dc in ((DcTx.PROBE, self._wire.dc_endpoint), (DcTx.PROBE_OTHER, self.other_dc)):
            if dc is not None:
                targets[kind] = probe if _family(probe) == _family(dc) else (dc[0], probe[1])
        return targets

    def probe(self, now: float) -> None:
        for kind in self.probe_targets():
            self.request(Probe(self._wire.txid()), kind, now, PROBE_TIMEOUT_S)

    def echo(self, unasked: ProbeAck, source: Endpoint, now: float) -> None:
        """The DC's filter port reached us unasked (dc/probes.py): say so with its txid in a
        PROBE to the probe port of that family. Not a request: nobody answers it, and a lost
        echo only leaves us taken as filtered."""
        targets, family = self.probe_targets().values(), _family(source)
        to = next((t for t in targets if _family(t) == family), None)
        if to is None or source in targets or now < self._echo_after.get(family, 0.0):
            self._wire.drops.drop("unasked_probe_ack")  # not the filter port, or too often
            return
        self._echo_after[family] = now + ECHO_MIN_INTERVAL_S
        self.send(Probe(unasked.txid), now, to)

    # --- the DC's messages ------------------------------------------------------------

    def open(self, index: int, datagram: bytes, counter: int, now: float) -> Message | None:
        """A SIGNAL from the DC on one of our keypairs, opened and decoded."""
        drops = self._wire.drops
        keypair = next((k for k in self.ring.all() if k.local_index == index), None)
        if keypair is None or keypair.expired(now, self.ring.reject_after):
            drops.drop("stale_dc_index")
            return None
        try:
            payload = keypair.open(datagram, counter)
            return decode(payload, where=BodyKind.SESSION)
        except ReplayError:
            drops.drop("replayed")
        except AuthError:
            drops.drop("bad_signal")
        except CodecError:
            drops.drop("malformed_message")
        return None

    def on_keepalive_ack(self, msg: KeepaliveAck, now: float) -> None:
        if self.registration is None:
            return
        self.keepalive_at = now + max(1, self.registration.keepalive_s)
        self.last_ack_at = now
        self.on_observed(msg.observed, now)

    def on_observed(self, observed: Endpoint | None, now: float) -> bool:
        """The DC's view of our endpoint (KEEPALIVE_ACK, UPDATE_ACK). A change means our NAT
        mapping changed or we moved (7.3): tell the DC, look at the NAT again. True then."""
        registration = self.registration
        if registration is None or observed is None or observed == registration.observed:
            return False
        behind_nat = observed not in self._local_endpoints()
        # replace(): the IPv6 VIP stays (it was lost here, so status showed none after a move)
        self.registration = replace(registration, observed=observed, behind_nat=behind_nat)
        self.moved(now)
        self.mapping_changed = True
        return True

    def moved(self, now: float) -> None:
        """We may be somewhere else: our endpoints and our NAT type to the DC again."""
        self.nat_probe_observed = None
        for kind in (DcTx.UPDATE, DcTx.PROBE, DcTx.PROBE_OTHER):
            for old in self.tx.find(kind):
                self.tx.finish(old.txid)  # the newer ones say it better
        self.update(now)
        self.probe(now)

    def on_probe_ack(self, msg: ProbeAck, kind: DcTx) -> None:
        if kind == DcTx.PROBE:  # our main family's view
            self.nat_probe_observed = msg.observed

    # --- timers -----------------------------------------------------------------------

    def handle_timer(self, now: float) -> list[DcTransaction]:
        """Resends, keep-alives, rekeys, retries; returns the requests that expired other
        than KEEPALIVE (which this part handles itself), for the caller."""
        resend, expired = self.tx.due(now)
        for tx in resend:
            self._send_request(tx.kind, tx.message, now)
        others = []
        for tx in expired:
            if tx.kind == DcTx.KEEPALIVE:
                self.keepalives_lost += 1
                self.on_unanswered("keepalive", now)
            elif tx.kind != DcTx.KEEPALIVE_OTHER:  # that path may be down: the main one counts
                others.append(tx)
        if self.register_deadline is not None and now >= self.register_deadline:
            self.register_deadline = now + REGISTER_TIMEOUT_S
            self._wire.events.append(DcUnreachable("register"))
        if self.keepalive_at is not None and now >= self.keepalive_at:
            self.keepalive_at = None
            self._keepalive(now)
        if self.rekey_at is not None and now >= self.rekey_at:
            self.rekey_at = now + DC_REKEY_AFTER_S
            self.register(now)
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self.register(now)
        for expired_keypair in self.ring.expire(now):
            self._wire.release(expired_keypair.local_index)
        return others

    def on_unanswered(self, kind: str, now: float) -> None:
        """The DC did not answer a KEEPALIVE: it may have lost us; register anew."""
        self._wire.events.append(DcUnreachable(kind))
        self.registration = None
        self.keepalive_at = self.rekey_at = None
        for keypair in self.ring.all():
            self._wire.release(keypair.local_index)
        self.ring = KeyRing(reject_after=DC_REJECT_AFTER_S)
        self.state = SessionState.REGISTERING
        self.register_deadline = now + REGISTER_TIMEOUT_S
        self.register(now)


def _family(endpoint: Endpoint) -> int:
    return 6 if ":" in endpoint[0] else 4
