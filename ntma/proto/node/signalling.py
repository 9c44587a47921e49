"""NodeSignalling: the node's sans-IO signalling machine, composed of its parts.

Rules:
- Everything that changes the node's signalling state lives in this package. Inputs are
  receive(), request_direction(), start(), deregister() and handle_timer(), each given
  `now` (monotonic seconds). Outputs are drained by the caller: datagrams_to_send(),
  events(), and the `drops` counter (proto/machine.py states the contract).
- The parts: the DC session (session.py: registration and keep-alive, explicit states),
  one Handshake per tunnel being built (handshake.py), relay bindings (relay.py). They
  share one Wire (wire.py): keys, requests in flight, outputs.
- Registration first; names asked for before it are queued. A Direction (from our
  Direction Request or the DC's Route Direction) makes us either the tunnel's initiator
  or its responder (handshake.py).
- Tunnels have one owner, the TunnelTable given here (or made here): handshakes install
  into it, the data stages read it, tunnel keep-alive removes from it; this machine
  reads it to answer names that already have a tunnel.
- Randomness (txids, nonces) and ephemeral key generation are injected.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..buffer import CodecError, Endpoint
from ..crypto import StaticKey
from ..messages import (
    DeregisterAck,
    Direction,
    DirectionRequest,
    DirectionResponse,
    KeepaliveAck,
    Message,
    ProbeAck,
    Punch,
    RegisterAck,
    RelayBound,
    RouteDirection,
    RouteDirectionAck,
    Status,
    TunnelRequest,
    TunnelResponse,
    sendable_endpoints,
)
from ..names import normalize_fqdn
from ..packet import UnknownPeer, is_envelope, open_message, peek_sender, unwrap_envelope
from ..tunnel import TunnelTable
from .events import DirectionResolved, NodeEvent, Registered
from .handshake import Handshakes
from .relay import RelayBindings
from .session import DcSession
from .wire import AskedName, NodeTransaction, NodeTx, TunnelBeingBuilt, Wire

DIRECTION_TIMEOUT_S = 5.0
_FROM_DC = (RouteDirection, RegisterAck, KeepaliveAck, DirectionResponse, ProbeAck, DeregisterAck)
EARLY_REQUESTS_MAX = 16
TUNNEL_STALE_S = 30.0


class NodeSignalling:
    def __init__(
        self,
        *,
        fqdn: str,
        static: StaticKey,
        dc_public: bytes,
        dc_endpoint: Endpoint,
        local_endpoints: Callable[[], list[Endpoint]],
        random_bytes: Callable[[int], bytes] = os.urandom,
        generate_key: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
        epoch_offset: float | None = None,
        tunnels: TunnelTable | None = None,
    ) -> None:
        if epoch_offset is None:  # wall clock minus the clock `now` comes from
            epoch_offset = time.time() - time.monotonic()
        self._wire = Wire(
            static=static,
            dc_public=dc_public,
            dc_endpoint=dc_endpoint,
            random_bytes=random_bytes,
            epoch_offset=epoch_offset,
        )
        self.drops = self._wire.drops
        self.tunnels = tunnels if tunnels is not None else TunnelTable()
        self.session = DcSession(self._wire, fqdn, local_endpoints)
        self.relays = RelayBindings(self._wire)
        self.handshakes = Handshakes(
            self._wire, self.tunnels, self.relays, lambda: self.session.vip, generate_key
        )
        self._waiting_names: set[str] = set()  # asked before registration finished
        self._asking: dict[str, int] = {}  # fqdn -> direction txid in flight
        # Peers' requests that beat the DC's Route Direction to us, by sender key.
        self._early: OrderedDict[bytes, tuple[bytes, Endpoint]] = OrderedDict()

    @property
    def fqdn(self) -> str:
        return self.session.fqdn

    @fqdn.setter
    def fqdn(self, fqdn: str) -> None:
        self.session.fqdn = fqdn

    @property
    def registered(self) -> Registered | None:
        return self.session.registration

    @property
    def nat_probe_observed(self) -> Endpoint | None:
        return self.session.nat_probe_observed

    # --- outputs ----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._wire.out = self._wire.out, []
        return out

    def events(self) -> list[NodeEvent]:
        events, self._wire.events = self._wire.events, []
        return events

    def get_timer(self) -> float | None:
        times = [self._wire.tx.next_deadline(), *self.session.timers()]
        times += self.handshakes.timers() + self.relays.timers()
        return min((t for t in times if t is not None), default=None)

    # --- inputs -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.session.register(now)

    def deregister(self, now: float) -> None:
        self.session.deregister(now)

    def request_direction(self, fqdn: str, now: float) -> None:
        """Resolve fqdn through the DC and build a tunnel; a DirectionResolved follows."""
        fqdn = normalize_fqdn(fqdn)
        tunnel = self.tunnels.by_fqdn(fqdn)
        registered = self.session.registration is not None
        if tunnel is not None:
            # VIPs are stable, so answer now; ask the DC again in the background when
            # the tunnel has gone quiet (the peer may have restarted).
            self._wire.events.append(DirectionResolved(fqdn, Status.OK, tunnel.peer_vip))
            quiet_since = max(tunnel.created_at, tunnel.last_receive)
            if now - quiet_since < TUNNEL_STALE_S or not registered:
                return
        if not registered:
            self._waiting_names.add(fqdn)
            return
        if fqdn not in self._asking and not self.handshakes.toward(fqdn):
            wire = self._wire
            msg = DirectionRequest(wire.txid(), wire.epoch_ms(now), fqdn)
            wire.request_dc(msg, NodeTx.DIRECTION, now, DIRECTION_TIMEOUT_S, AskedName(fqdn))
            self._asking[fqdn] = msg.txid

    def handle_timer(self, now: float) -> None:
        resend, expired = self._wire.tx.due(now)
        self._wire.out.extend(resend)
        for tx in expired:
            self._on_unanswered(tx, now)
        self.session.handle_timer(now)
        self.handshakes.fall_back(now)
        self.relays.rebind_due(now, self._needs_relay)

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        sealed = datagram
        try:
            via_relay = is_envelope(datagram)
            if via_relay:
                _, sealed = unwrap_envelope(datagram)
            sender, msg = open_message(sealed, self._wire.boxes.get)
            if sender == self._wire.dc_public:
                self._from_dc(msg, addr, now)
            else:
                self._from_peer(sender, msg, addr, now, via_relay)
        except UnknownPeer:
            self._stash_early(datagram, sealed, addr)
        except CodecError as exc:  # includes invalid (low-order) keys from a peer
            self.drops.drop(type(exc).__name__)

    # --- dispatch ---------------------------------------------------------------------

    def _from_dc(self, msg: Message, addr: Endpoint, now: float) -> None:
        wire = self._wire
        if not isinstance(msg, _FROM_DC):  # e.g. a PUNCH sealed by the DC: not its to send
            self.drops.drop(f"unexpected {type(msg).__name__} from DC")
            return
        if isinstance(msg, RouteDirection):
            ack = RouteDirectionAck(msg.txid, msg.direction.tunnel_id)
            wire.send(ack, wire.dc_public, wire.dc_endpoint)
            self._on_direction(msg.direction, now)
            return
        tx = wire.tx.finish(msg.txid)
        if tx is None:
            return  # a late duplicate answer
        if isinstance(msg, RegisterAck):
            if self.session.on_register_ack(msg, now):
                self._ask_waiting_names(now)
        elif isinstance(msg, KeepaliveAck):
            self.session.on_keepalive_ack(msg, now)
        elif isinstance(msg, DirectionResponse):
            if isinstance(tx.context, AskedName):
                self._on_direction_response(tx.context.fqdn, msg, now)
        elif isinstance(msg, ProbeAck):
            self.session.on_probe_ack(msg)
        elif isinstance(msg, DeregisterAck):
            pass
        else:
            self.drops.drop(f"unexpected {type(msg).__name__} from DC")

    def _from_peer(
        self, sender: bytes, msg: Message, addr: Endpoint, now: float, via_relay: bool
    ) -> None:
        if isinstance(msg, TunnelRequest):
            self.handshakes.on_request(sender, msg, addr, now, via_relay)
        elif isinstance(msg, TunnelResponse):
            self.handshakes.on_response(sender, msg, addr, now, via_relay)
        elif isinstance(msg, RelayBound):
            if self.relays.on_bound(msg):
                self.handshakes.on_relay_bound(msg.tunnel_id, now)
        elif isinstance(msg, Punch):
            pass  # its only job was to open the sender's NAT toward us
        else:
            self.drops.drop(f"unexpected {type(msg).__name__} from a peer")

    def _on_unanswered(self, tx: NodeTransaction, now: float) -> None:
        if tx.kind in (NodeTx.REGISTER, NodeTx.KEEPALIVE):
            self.session.on_unanswered(tx.kind, now)
        elif tx.kind == NodeTx.DIRECTION and isinstance(tx.context, AskedName):
            self._asking.pop(tx.context.fqdn, None)
            self._wire.events.append(DirectionResolved(tx.context.fqdn, Status.NO_ROUTE))
        elif tx.kind == NodeTx.TUNNEL and isinstance(tx.context, TunnelBeingBuilt):
            self.handshakes.give_up(tx.context.tunnel_id)

    # --- directions -------------------------------------------------------------------

    def _ask_waiting_names(self, now: float) -> None:
        for fqdn in sorted(self._waiting_names):
            self.request_direction(fqdn, now)
        self._waiting_names.clear()

    def _on_direction_response(self, fqdn: str, msg: DirectionResponse, now: float) -> None:
        self._asking.pop(fqdn, None)
        if msg.status == Status.REREGISTER:
            self._waiting_names.add(fqdn)
            self.session.register(now)
        elif msg.direction is None:
            self._wire.events.append(DirectionResolved(fqdn, msg.status))
        else:
            self._on_direction(msg.direction, now)

    def _on_direction(self, direction: Direction, now: float) -> None:
        endpoints = sendable_endpoints(direction.peer_endpoints)
        if len(endpoints) != len(direction.peer_endpoints):  # IPv6, broadcast, ... (issue 10)
            self.drops.drop(
                "unsendable endpoint in a direction", len(direction.peer_endpoints) - len(endpoints)
            )
            direction = dataclasses.replace(direction, peer_endpoints=endpoints)
        tunnel_id = direction.tunnel_id
        if tunnel_id in self.handshakes or tunnel_id in self.tunnels.by_id:
            return  # retransmitted Route Direction, or our own request's answer twice
        self.handshakes.start(direction, now)
        early = self._early.pop(direction.peer_public_key, None)
        if early is not None:
            self.receive(early[0], early[1], now)

    def _needs_relay(self, tunnel_id: int) -> bool:
        """A relay binding is kept while its tunnel is being built or goes through the relay."""
        tunnel = self.tunnels.by_id.get(tunnel_id)
        return tunnel_id in self.handshakes or (tunnel is not None and tunnel.route == "relay")

    def _stash_early(self, datagram: bytes, sealed: bytes, addr: Endpoint) -> None:
        """Keep a peer's Tunnel Request that beat the DC's Route Direction to us."""
        try:
            sender = peek_sender(sealed)
        except CodecError as exc:
            self.drops.drop(type(exc).__name__)
            return
        self._early[sender] = (datagram, addr)
        while len(self._early) > EARLY_REQUESTS_MAX:
            self._early.popitem(last=False)
        self.drops.drop("signalling from a key not yet directed (kept)")
