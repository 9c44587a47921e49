"""When the DC re-directs a node's tunnels (v2, sans-IO; docs/protocol.md 7.3).

- `moved`: a node's session endpoint moved (it changed networks, or its NAT rebound) or
  its local endpoints changed (UPDATE). Its NAT type is learnt again: a probe result older
  than PROBE_FRESH_S is forgotten (a PROBE sent with the UPDATE may arrive first). Its
  tunnels are re-directed once its reach is known again: at once for a public node (with a
  filter port, once the echo of its unasked PROBE_ACK is in), after its PROBE behind a NAT,
  at the latest PROBE_WAIT_S after the change.
- `restarted`: a new boot_id. The node lost its tunnels (`lost`), so it gets
  ROUTE_DIRECTION for each, its peers ROUTE_UPDATE.
- `went_offline`: keep-alives stopped. Its tunnels go dormant for DORMANT_KEEP_S, and each
  online peer is told TUNNEL_GONE(OFFLINE) at once, so it stops answering the name from a
  dead tunnel. Heard from again in time (`back_online`, a break-before-make move): the
  dormant tunnels are re-directed, so sessions survive a long gap.
- `ended`: deregistered: TUNNEL_GONE(DEREGISTERED) to each peer, the tunnels end.
- `name_added`: a session added a name (NAME_ADD). A tunnel of a name its end does not hold
  (yet) is not re-directed but waits, dormant: a restarted adapter adds its devices' names
  after its REGISTER, and their tunnels go on once it has.
A tunnel whose other end is offline waits (dormant) for it; one whose other end has no
session any more ends, its online end told. A node's tunnels are re-directed at most once
per REDIRECT_MIN_INTERVAL_S: an authenticated node that flaps its source address cannot
make the DC flood its peers with ROUTE_UPDATEs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..proto.fields_v2 import GoneReason
from .directing import Director
from .directions import DirectedTunnel
from .events import DcEvent, TunnelsDormant
from .sessions import NodeSession

PROBE_WAIT_S = 1.0  # longest wait for a moved node's probe before re-deciding anyway
PROBE_FRESH_S = 0.5  # a probe this recent describes the new network
DORMANT_KEEP_S = 600.0  # an offline node's tunnels wait this long for it
REDIRECT_MIN_INTERVAL_S = 0.5


@dataclass
class Due:
    since: float
    cause: str


class Redirects:
    def __init__(self, director: Director, events: list[DcEvent]) -> None:
        self._director = director
        self._events = events
        self.due: dict[bytes, Due] = {}  # node key -> its pending re-direction
        self.dormant: OrderedDict[int, float] = OrderedDict()  # tunnel id -> since
        self._last: dict[bytes, float] = {}  # node key -> its last re-direction

    @property
    def _sessions(self) -> dict[bytes, NodeSession]:
        return self._director.sessions

    def next_deadline(self) -> float | None:
        times = [
            max(due.since + PROBE_WAIT_S, self._last.get(key, -1e9) + REDIRECT_MIN_INTERVAL_S)
            for key, due in self.due.items()
        ]
        if self.dormant:
            times.append(next(iter(self.dormant.values())) + DORMANT_KEEP_S)
        return min(times, default=None)

    # --- what happened to a node --------------------------------------------------------

    def moved(self, session: NodeSession, now: float) -> None:
        if session.probe_at is None or now - session.probe_at > PROBE_FRESH_S:
            session.forget_probes()  # the old network's: learn the NAT type again
        self._schedule(session, "moved", now)

    def restarted(self, session: NodeSession, now: float) -> None:
        for tunnel in self._director.tunnels.of_key(session.public_key):
            tunnel.lost.add(session.public_key)
        self._schedule(session, "restarted", now)

    def back_online(self, session: NodeSession, now: float) -> None:
        self._schedule(session, "back_online", now)

    def name_added(self, session: NodeSession, now: float) -> None:
        """NAME_ADD gave the session a name (again): tunnels that waited for it go on."""
        self._schedule(session, "name_added", now)

    def went_offline(self, session: NodeSession, now: float) -> None:
        tunnels = self._director.tunnels.of_key(session.public_key)
        told = 0
        for tunnel in tunnels:
            self.dormant.setdefault(tunnel.tunnel_id, now)
            peer = self._sessions.get(tunnel.other_key(session.public_key))
            if peer is not None and peer.public_key not in tunnel.lost and peer.online:
                self._director.tell_gone(peer, tunnel, GoneReason.OFFLINE, now)
                told += 1
        self.due.pop(session.public_key, None)
        if tunnels:
            self._events.append(TunnelsDormant(session.fqdn, len(tunnels), told))

    def ended(self, session: NodeSession, reason: GoneReason, now: float) -> None:
        self.due.pop(session.public_key, None)
        for tunnel in self._director.tunnels.of_key(session.public_key):
            peer = self._sessions.get(tunnel.other_key(session.public_key))
            if peer is not None:
                self._director.tell_gone(peer, tunnel, reason, now)
            self._remove(tunnel)

    def name_removed(self, session: NodeSession, fqdn: str, now: float) -> None:
        """NAME_REMOVE: the tunnels of that one name end, their peers told."""
        for tunnel in self._director.tunnels.of_key(session.public_key):
            if tunnel.name_of(session.public_key) != fqdn:
                continue
            peer = self._sessions.get(tunnel.other_key(session.public_key))
            if peer is not None:
                self._director.tell_gone(peer, tunnel, GoneReason.DEREGISTERED, now)
            self._remove(tunnel)

    def _schedule(self, session: NodeSession, cause: str, now: float) -> None:
        if self._director.tunnels.of_key(session.public_key):
            due = self.due.setdefault(session.public_key, Due(now, cause))
            if cause == "restarted":
                due.cause = cause  # the strongest reason is the one logged

    # --- acting -------------------------------------------------------------------------

    def run(self, now: float) -> None:
        """Re-direct what is ready (after each authentic datagram, and on the timer)."""
        if not self.due:
            return
        for key, due in list(self.due.items()):
            session = self._sessions.get(key)
            if session is None:
                del self.due[key]
                continue
            if session.learning_reach() and now - due.since < PROBE_WAIT_S:
                continue  # its PROBE (or the echo of the filter port's) is on the way
            if now - self._last.get(key, -1e9) < REDIRECT_MIN_INTERVAL_S:
                continue  # flapping: once per interval
            del self.due[key]
            self._remember(key, now)
            for tunnel in self._director.tunnels.of_key(key):
                self._redirect(tunnel, due.cause, now)

    def expire(self, now: float) -> None:
        """End dormant tunnels past their time (on the timer)."""
        while self.dormant:
            tunnel_id, since = next(iter(self.dormant.items()))
            if now - since < DORMANT_KEEP_S:
                break
            del self.dormant[tunnel_id]
            tunnel = self._director.tunnels.by_id.get(tunnel_id)
            if tunnel is not None:
                self._remove(tunnel)

    def _remember(self, key: bytes, now: float) -> None:
        self._last[key] = now
        if len(self._last) > 2 * len(self._sessions) + 64:  # bounded by the sessions
            self._last = {k: t for k, t in self._last.items() if k in self._sessions}

    def _redirect(self, tunnel: DirectedTunnel, cause: str, now: float) -> None:
        ends = [self._sessions.get(k) for k in (tunnel.requester_key, tunnel.target_key)]
        requester, target = ends
        if requester is None or target is None:  # an end has no session: the tunnel ends
            for end in ends:
                if end is not None:
                    self._director.tell_gone(end, tunnel, GoneReason.OFFLINE, now)
            self._remove(tunnel)
            return
        if not (requester.online and target.online):
            return  # dormant: it waits for the offline end
        if not (requester.holds(tunnel.requester) and target.holds(tunnel.target)):
            # A restarted adapter has not added this device's name again yet: its Direction
            # would carry the adapter's own VIP. It waits; NAME_ADD re-directs it.
            self.dormant.setdefault(tunnel.tunnel_id, now)
            return
        self.dormant.pop(tunnel.tunnel_id, None)
        self._director.redirect(tunnel, requester, target, cause, now)

    def _remove(self, tunnel: DirectedTunnel) -> None:
        self.dormant.pop(tunnel.tunnel_id, None)
        self._director.tunnels.remove(tunnel.tunnel_id)  # a TUNNEL_GONE sent is still resent
