"""What the DC's probe ports show about a node, per address family (sans-IO; protocol 7.1).

- The probe port answers each PROBE with a PROBE_ACK carrying the PROBE's source as it saw
  it: the same mapping as the main port sees means an endpoint-independent ("cone") NAT, a
  different one a symmetric NAT (route.py).
- The filter port (optional, `filter_probe_listen`) tells, for an end with no NAT, a
  stateful firewall from none: after a PROBE it sends, from a port the node never sent to,
  a second PROBE_ACK with a txid of its own. A node that gets it echoes that txid in a PROBE
  to the probe port, which shows that packets nobody asked for reach it; until then its
  reach is "filtered". At most one unasked PROBE_ACK per family is outstanding until the
  echo, or a PROBE from another source (the node moved: its old network's firewall may have
  dropped the last one), each no larger than the PROBE that caused it.
- The echo is not answered (nobody waits for it) and moves nothing but the filter view.
"""

from __future__ import annotations

from collections.abc import Callable

from ..proto.bodies_v2 import Probe, ProbeAck
from ..proto.buffer import Endpoint
from ..proto.handshake import T_SIGNAL
from ..proto.machine import Drops
from ..proto.messages_v2 import encode
from .events import DcEvent, NodeNat
from .route import Reach
from .sessions import NodeSession, family_of

Datagrams = list[tuple[bytes, Endpoint]]


class Probes:
    def __init__(
        self,
        events: list[DcEvent],
        drops: Drops,
        txid: Callable[[], int],
        filter_port: bool,
    ) -> None:
        self._events = events
        self._drops = drops
        self._txid = txid
        self.filter_port = filter_port
        self.probe_out: Datagrams = []  # leave from the probe port
        self.filter_out: Datagrams = []  # leave from the filter port

    def on_probe(self, session: NodeSession, msg: Probe, addr: Endpoint, now: float) -> None:
        family = family_of(addr)
        if session.filter_txids.get(family, (None,))[0] == msg.txid:
            del session.filter_txids[family]  # the echo: the unasked PROBE_ACK got through
            session.unfiltered[family] = addr
            self.report(session, family)
            return
        session.probe_observed[family], session.probe_at = addr, now
        self.report(session, family)
        keypair = session.sending(now)
        if keypair is None:
            self._drops.drop("expired_keys")
            return
        self.probe_out.append((keypair.seal(T_SIGNAL, encode(ProbeAck(msg.txid, addr))), addr))
        if self.filter_port and session.filter_txids.get(family, (0, None))[1] != addr:
            txid = self._txid()
            session.filter_txids[family] = (txid, addr)
            self.filter_out.append((keypair.seal(T_SIGNAL, encode(ProbeAck(txid, addr))), addr))

    def report(self, session: NodeSession, family: int) -> None:
        """A NodeNat event when the node's reach in `family` changed."""
        if family not in session.endpoints:
            return  # not heard on the main port in that family: nothing to compare with
        reach = session.reach(family)
        if reach is session.nat_reported.get(family):
            return
        if reach is Reach.NAT and family not in session.probe_observed:
            return
        session.nat_reported[family] = reach
        probe = session.probe_observed.get(family)
        self._events.append(
            NodeNat(
                session.fqdn,
                reach.value,
                _ep(session.endpoints[family]),
                _ep(probe) if probe else "",
                family,
            )
        )


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"
