"""The names a DC session holds beside its REGISTER name (docs/protocol.md 5.1, sans-IO):
NAME_ADD for one party's devices (an adapter), NAME_REMOVE.

- A name is added when the admission list admits it for the session's key (an exact
  name, or a sub-zone within its max_names), no other online node holds it, and a VIP is
  free; the name keeps its VIP in the store across restarts of either end. Adding a name
  the session holds is answered OK again (the node re-adds after each registration).
- NAME_ADD may carry the IPv6 address the device chose for itself (SLAAC on the adapter's
  link); checked and kept by the store (vip6.py), also for the session's REGISTER name (the
  default device). A refused address is logged; the name keeps its IPv6 VIP.
- At most NAMES_PER_SESSION_MAX names per session (section 10).
"""

from __future__ import annotations

from collections.abc import Callable

from ..proto.bodies_v2 import NameAdd, NameAddAck
from ..proto.fields_v2 import VIP6_NONE, Status
from .admission import Admission
from .events import DcEvent, NameAdded, NameRefused, NameRemoved, Vip6Chosen
from .sessions import NodeSession, SessionTable
from .store import NodeStore, PoolExhausted

NAMES_PER_SESSION_MAX = 256


class Names:
    def __init__(
        self,
        store: NodeStore,
        admission: Admission,
        table: SessionTable,
        events: list[DcEvent],
        epoch_ms: Callable[[float], int],
    ) -> None:
        self._store = store
        self._admission = admission
        self._table = table
        self._events = events
        self._epoch_ms = epoch_ms

    def add(self, session: NodeSession, msg: NameAdd, now: float) -> NameAddAck:
        """One more name for this session (a device behind an adapter): admitted for the
        session's key, not held by another online node; its VIP kept across restarts."""
        fqdn = msg.fqdn
        if session.holds(fqdn):
            return self._ok(session, msg, session.vip_of(fqdn))
        if len(session.added) + 1 >= NAMES_PER_SESSION_MAX:
            return self._refused(session, msg, Status.TOO_MANY_NAMES, "names per session")
        record = self._store.get(fqdn)
        refusal = self._admission.refusal(
            fqdn, session.public_key, self._store.count_under, stored=record is not None
        )
        if refusal:
            status = Status.TOO_MANY_NAMES if "max_names" in refusal else Status.REFUSED
            return self._refused(session, msg, status, refusal)
        if record is not None and record.public_key != session.public_key:
            holder = self._table.by_key.get(record.public_key)
            if holder is not None and holder.online and holder.holds(fqdn):
                return self._refused(session, msg, Status.NAME_TAKEN, "held by another node")
        try:
            vip = record.vip if record is not None else self._store.free_vip(
                self._table.reserved_vips()
            )
        except PoolExhausted:
            return self._refused(session, msg, Status.POOL_EXHAUSTED, "VIP pool exhausted")
        self._store.register(
            fqdn, session.public_key, session.endpoint, session.local_endpoints,
            self._epoch_ms(now), vip=vip,
        )
        session.added[fqdn] = vip
        self._events.append(NameAdded(session.fqdn, fqdn, vip))
        return self._ok(session, msg, vip)

    def _ok(self, session: NodeSession, msg: NameAdd, vip4: str) -> NameAddAck:
        """The acknowledgement, after keeping the device's own IPv6 address if it sent one."""
        if msg.vip6 != VIP6_NONE and msg.vip6 != self._store.vip6.of(vip4):
            refused = self._store.choose_vip6(vip4, msg.vip6)
            self._events.append(Vip6Chosen(session.fqdn, msg.fqdn, msg.vip6, refused))
        return NameAddAck(msg.txid, Status.OK, msg.fqdn, vip4, self._store.vip6.of(vip4))

    def _refused(
        self, session: NodeSession, msg: NameAdd, status: Status, reason: str
    ) -> NameAddAck:
        self._events.append(NameRefused(session.fqdn, msg.fqdn, status.name, reason))
        return NameAddAck(msg.txid, status)

    def remove(self, session: NodeSession, fqdn: str) -> bool:
        """NAME_REMOVE: True if the session held it (its tunnels then end)."""
        if fqdn not in session.added:
            return False
        del session.added[fqdn]
        self._events.append(NameRemoved(session.fqdn, fqdn))
        return True
