"""The names a node holds beside its REGISTER name (docs/protocol.md 5.1, sans-IO): an
adapter's devices, each with its own VIP from the DC.

- `add(fqdn)`: wanted from now on; asked for at once when registered (NAME_ADD), and
  again after every new registration (the DC may have restarted and forgotten them; it
  answers a name the session holds already with OK). NAME_ADD_ACK OK puts the name and its
  VIPs in wire.names (Directions for it are then accepted) and reports NameRegistered;
  a refusal reports NameFailed and the name stays wanted (asked again at the next
  registration: an operator may admit it meanwhile).
- `add(fqdn, vip6=...)`: the IPv6 address the device chose for itself (SLAAC on the
  adapter's link), also for the REGISTER name (the default device): NAME_ADD again with it,
  and at every registration; the DC keeps it as the name's IPv6 VIP (or keeps its own, if
  it refuses it: NameRegistered then carries the DC's).
- `remove(fqdn)`: NAME_REMOVE; the name leaves wire.names at once.
- At most NAMES_MAX names (the DC's own bound per session).
"""

from __future__ import annotations

from ..bodies_v2 import NameAdd, NameAddAck, NameRemove
from ..fields_v2 import VIP6_NONE, Status
from .events import NameFailed, NameRegistered
from .session import DcSession, DcTx, SessionState
from .wire import NameVips, Wire

NAMES_MAX = 255
NAME_ADD_TIMEOUT_S = 8.0


class DeviceNames:
    def __init__(self, wire: Wire, session: DcSession) -> None:
        self._wire = wire
        self._session = session
        self.wanted: dict[str, None] = {}  # in the order they were added
        self.vip6s: dict[str, str] = {}  # name -> its device's own IPv6 address (wanted or ours)

    def add(self, fqdn: str, now: float, vip6: str = VIP6_NONE) -> bool:
        """False when the bound refuses it (counted)."""
        own = fqdn == self._session.fqdn
        if vip6 != VIP6_NONE and self.vip6s.get(fqdn) != vip6 and (own or fqdn in self.wanted):
            self.vip6s[fqdn] = vip6
            if self._session.state == SessionState.REGISTERED:
                self._ask(fqdn, now)
            return True
        if own or fqdn in self.wanted:
            return True
        if len(self.wanted) >= NAMES_MAX:
            self._wire.drops.drop("too_many_names")
            return False
        self.wanted[fqdn] = None
        if vip6 != VIP6_NONE:
            self.vip6s[fqdn] = vip6
        if self._session.state == SessionState.REGISTERED:
            self._ask(fqdn, now)
        return True

    def remove(self, fqdn: str, now: float) -> None:
        self.vip6s.pop(fqdn, None)
        if self.wanted.pop(fqdn, 0) is None:
            self._wire.names.pop(fqdn, None)
            if self._session.state == SessionState.REGISTERED:
                msg = NameRemove(self._wire.txid(), fqdn)
                self._session.request(msg, DcTx.NAME_REMOVE, now, NAME_ADD_TIMEOUT_S)

    def on_registered(self, now: float) -> None:
        if self._session.fqdn in self.vip6s:  # the default device's own address
            self._ask(self._session.fqdn, now)
        for fqdn in self.wanted:
            self._ask(fqdn, now)

    def on_ack(self, msg: NameAddAck, asked: object) -> None:
        if asked not in self.wanted and asked != self._session.fqdn:
            return  # removed meanwhile
        if msg.status != Status.OK or msg.fqdn != asked:
            self._wire.events.append(NameFailed(str(asked), msg.status))
            return
        self._wire.names[msg.fqdn] = NameVips(msg.vip4, msg.vip6)
        registration = self._session.registration
        prefix = registration.prefix_len if registration else 0
        self._wire.events.append(NameRegistered(msg.fqdn, msg.vip4, prefix, msg.vip6))

    def on_unanswered(self, asked: object) -> None:
        if asked in self.wanted:
            self._wire.events.append(NameFailed(str(asked), Status.NO_ROUTE))

    def _ask(self, fqdn: str, now: float) -> None:
        msg = NameAdd(self._wire.txid(), fqdn, self.vip6s.get(fqdn, VIP6_NONE))
        self._session.request(msg, DcTx.NAME_ADD, now, NAME_ADD_TIMEOUT_S, context=fqdn)
