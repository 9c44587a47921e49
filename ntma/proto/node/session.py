"""The node's session with the DC: registration, keep-alive, re-registration (sans-IO).

    start()                                  UNREGISTERED -> REGISTERING
    RegisterAck OK                           REGISTERING  -> REGISTERED (keep-alives run)
    RegisterAck refused                      REGISTERING  -> REFUSED (retry at retry_at)
    retry_at passes                          REFUSED      -> REGISTERING
    REREGISTER from the DC, or a Register
      or Keepalive unanswered                any          -> REGISTERING
    deregister() while holding a VIP         any          -> UNREGISTERED

`registration` is what the last accepted Register gave us (the VIP). It is kept while
registering again after REREGISTER, so tunnels keep their VIP, and dropped when the DC
stops answering or we deregister; names asked while there is none wait for it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from ..buffer import Endpoint
from ..messages import (
    Deregister,
    Keepalive,
    KeepaliveAck,
    Probe,
    ProbeAck,
    Register,
    RegisterAck,
    Status,
)
from .events import DcUnreachable, Registered, RegistrationFailed
from .wire import NodeTx, Wire

REGISTER_TIMEOUT_S = 8.0
REFUSED_RETRY_S = 30.0
PROBE_TIMEOUT_S = 4.0
DEREGISTER_TIMEOUT_S = 2.0
NO_VIP = "0.0.0.0"  # what Tunnel Requests carry before we have a VIP


class SessionState(enum.Enum):
    UNREGISTERED = "unregistered"  # not started, or deregistered
    REGISTERING = "registering"  # a Register is in flight
    REGISTERED = "registered"  # keep-alives run
    REFUSED = "refused"  # the DC said no; we ask again at retry_at


class DcSession:
    def __init__(
        self, wire: Wire, fqdn: str, local_endpoints: Callable[[], list[Endpoint]]
    ) -> None:
        self._wire = wire
        self.fqdn = fqdn
        self._local_endpoints = local_endpoints
        self.state = SessionState.UNREGISTERED
        self.registration: Registered | None = None
        self.keepalive_at: float | None = None  # when the next Keepalive goes out
        # After a refusal: when to ask again. Independent of the state on purpose: a
        # registration started meanwhile (the DC said REREGISTER) does not cancel it.
        self.retry_at: float | None = None
        self.nat_probe_observed: Endpoint | None = None  # our endpoint as the probe port saw it

    @property
    def vip(self) -> str:
        return self.registration.vip if self.registration else NO_VIP

    def timers(self) -> list[float | None]:
        return [self.keepalive_at, self.retry_at]

    # --- inputs -----------------------------------------------------------------------

    def register(self, now: float) -> None:
        """(Re)start registration, abandoning any Register or Keepalive in flight."""
        tx = self._wire.tx
        for pending in tx.find(NodeTx.REGISTER) + tx.find(NodeTx.KEEPALIVE):
            tx.finish(pending.txid)
        self.keepalive_at = None
        wire = self._wire
        msg = Register(wire.txid(), wire.epoch_ms(now), self.fqdn, self._local_endpoints())
        wire.request_dc(msg, NodeTx.REGISTER, now, REGISTER_TIMEOUT_S)
        self.state = SessionState.REGISTERING

    def deregister(self, now: float) -> None:
        if self.registration is None:
            return
        msg = Deregister(self._wire.txid(), self._wire.epoch_ms(now))
        self._wire.request_dc(msg, NodeTx.DEREGISTER, now, DEREGISTER_TIMEOUT_S)
        self.registration = None
        self.keepalive_at = None
        self.state = SessionState.UNREGISTERED

    def handle_timer(self, now: float) -> None:
        if self.keepalive_at is not None and now >= self.keepalive_at:
            self.keepalive_at = None
            keepalive = Keepalive(self._wire.txid(), self._wire.epoch_ms(now))
            told_s = self.registration.keepalive_s if self.registration else 6
            timeout = max(2.0, min(6.0, told_s))
            self._wire.request_dc(keepalive, NodeTx.KEEPALIVE, now, timeout)
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self.register(now)

    def on_register_ack(self, msg: RegisterAck, now: float) -> bool:
        """Handle the DC's answer; True when it made us registered."""
        wire = self._wire
        if msg.status != Status.OK:
            reason = msg.reason or msg.status.name
            wire.events.append(RegistrationFailed(msg.status, reason))
            self.retry_at = now + REFUSED_RETRY_S
            self.state = SessionState.REFUSED
            return False
        behind_nat = msg.observed not in self._local_endpoints()
        self.registration = Registered(
            msg.vip, msg.prefix_len, msg.observed, behind_nat, msg.keepalive_s
        )
        self.state = SessionState.REGISTERED
        wire.events.append(self.registration)
        self.keepalive_at = now + max(1, msg.keepalive_s)
        if msg.probe is not None and behind_nat:  # let the DC see our NAT's mapping type
            probe = Probe(wire.txid(), wire.epoch_ms(now))
            datagram = wire.seal(probe, wire.dc_public, msg.probe)
            wire.out.append(datagram)
            wire.tx.start(probe.txid, NodeTx.PROBE, [datagram], now, PROBE_TIMEOUT_S)
        return True

    def on_keepalive_ack(self, msg: KeepaliveAck, now: float) -> None:
        if msg.status == Status.REREGISTER or self.registration is None:
            self.register(now)
            return
        self.keepalive_at = now + max(1, self.registration.keepalive_s)

    def on_probe_ack(self, msg: ProbeAck) -> None:
        self.nat_probe_observed = msg.observed

    def on_unanswered(self, kind: NodeTx, now: float) -> None:
        """A Register or Keepalive went unanswered: the DC may have lost us; start again."""
        self._wire.events.append(DcUnreachable(kind.value))
        self.registration = None
        self.register(now)
