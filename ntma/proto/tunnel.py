"""Tunnels (protocol v2) and the TunnelTable, their one owner (sans-IO).

A Tunnel is one node-to-node session (docs/protocol.md 4.4, 5): the Direction's
names and VIPs, a KeyRing of up to three keypairs, and where to send (the peer's
endpoint per family, or the RS's when relayed). The node's handshake part
(proto/node/handshake.py) makes tunnels and their keypairs; the data stages only call
`Tunnel.seal` and `open_data`.

Receive path (open_data): the receiver index -> (tunnel, keypair) in `by_index`, the
keypair's replay window and AEAD, then the inner checks (source = the peer's VIP,
destination = this tunnel's own VIP), then roaming (the endpoint follows the source,
only when the counter is above the highest seen on that keypair) and key confirmation
(the first packet on `ring.next` makes it current).

Send path (Tunnel.seal): the ring's current keypair, checked against its time and
message limits at most once a second (SEND_RECHECK_S) so the per-packet cost stays one
comparison; ExpiredKeys marks the tunnel for a rekey, which the handshake part starts.

Bounds: tunnels come only from Directions the DC sent (authenticated); the table holds
at most TUNNELS_MAX, more are refused by the caller (`full`).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass, field

from .bodies_v2 import RelayInfo
from .buffer import CodecError, Endpoint
from .crypto import AuthError
from .fields_v2 import VIP4_NONE, VIP6_NONE
from .handshake import T_DATA, T_SIGNAL, VERSION
from .session import (
    TRANSPORT_OVERHEAD,
    ExpiredKeys,
    Keypair,
    KeyRing,
    ReplayError,
)

__all__ = [
    "AuthError",
    "ExpiredKeys",
    "InnerDrop",
    "ReplayError",
    "Tunnel",
    "TunnelRef",
    "TunnelTable",
    "drop_reason",
    "open_data",
    "punch_datagram",
]

SEND_RECHECK_S = 1.0  # how often the send path re-reads the ring's limits
TUNNELS_MAX = 4096
PUNCH_LEN = 32
TunnelRef = tuple[bytes, int]  # (dc_id, tunnel_id)
_DATA_HEADER = bytes((VERSION, T_DATA, 0, 0))
_INDEX_COUNTER = struct.Struct("!IQ")


def punch_datagram() -> bytes:
    """A PUNCH (7.2): DATA with receiver_index 0, counter 0 and a zero tag, 32 bytes."""
    return _DATA_HEADER + bytes(PUNCH_LEN - 4)


def _packed(address: str, none: str) -> bytes:
    return b"" if address == none else ipaddress.ip_address(address).packed


def family_of(endpoint: Endpoint) -> int:
    return 6 if ":" in endpoint[0] else 4


@dataclass(eq=False)
class Tunnel:
    dc_id: bytes
    tunnel_id: int  # the DC's u64 id; (dc_id, tunnel_id) names the tunnel
    peer_fqdn: str
    peer_vip: str
    self_vip: str
    endpoint: Endpoint  # where DATA goes: the peer (roams), or the RS when relayed
    created_at: float
    peer_key: bytes = b""
    self_fqdn: str = ""
    peer_vip6: str = VIP6_NONE
    self_vip6: str = VIP6_NONE
    relay: RelayInfo | None = None
    route: str = "direct"  # direct | punch | relay: the route it actually took
    ring: KeyRing = field(default_factory=KeyRing, repr=False)
    endpoints: dict[int, Endpoint] = field(default_factory=dict)  # per family
    packets_in: int = field(default=0, init=False)
    packets_out: int = field(default=0, init=False)
    bytes_in: int = field(default=0, init=False)  # inner bytes, as `ntma status` shows them
    bytes_out: int = field(default=0, init=False)
    drops: Counter[str] = field(default_factory=Counter, init=False)  # counted on drops only
    last_receive: float = field(default=0.0, init=False)
    rekey_wanted: bool = field(default=False, init=False)  # set by the send path
    _sending: Keypair | None = field(default=None, init=False, repr=False)
    _recheck_at: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.peer_vip_packed = _packed(self.peer_vip, VIP4_NONE)
        self.self_vip_packed = _packed(self.self_vip, VIP4_NONE)
        self.peer_vip6_packed = _packed(self.peer_vip6, VIP6_NONE)
        self.self_vip6_packed = _packed(self.self_vip6, VIP6_NONE)
        self.endpoints.setdefault(family_of(self.endpoint), self.endpoint)

    @property
    def ref(self) -> TunnelRef:
        return (self.dc_id, self.tunnel_id)

    def pair_keys(self) -> list[bytes]:
        """Its keys in TunnelTable.by_pair: (our VIP + the peer's) per family both have."""
        keys = []
        if self.peer_vip_packed and self.self_vip_packed:
            keys.append(self.self_vip_packed + self.peer_vip_packed)
        if self.peer_vip6_packed and self.self_vip6_packed:
            keys.append(self.self_vip6_packed + self.peer_vip6_packed)
        return keys

    @property
    def peer_endpoint(self) -> Endpoint:
        """Where DATA goes now (the log field keeps its v1 name)."""
        return self.endpoint

    # --- sending --------------------------------------------------------------------

    def seal(self, payload: bytes, now: float) -> bytes:
        """One DATA datagram carrying payload (b"" is a keep-alive); ExpiredKeys if no
        keypair may send now (the tunnel is then marked for a rekey)."""
        keypair = self._sending
        if keypair is None or now >= self._recheck_at:
            keypair = self._refresh_sending(now)
        self.packets_out += 1
        self.bytes_out += len(payload)
        return keypair.seal(T_DATA, payload)

    def _refresh_sending(self, now: float) -> Keypair:
        ring = self.ring
        try:
            keypair = ring.sending(now)
        except ExpiredKeys:
            self._sending = None
            if ring.next is None:  # a responder waiting for confirmation is no reason
                self.rekey_wanted = True
            raise
        if ring.needs_rekey(now):  # REKEY_AFTER_TIME (initiator) or the message limit
            self.rekey_wanted = True
        self._sending = keypair
        self._recheck_at = min(now + SEND_RECHECK_S, keypair.created_at + ring.reject_after)
        return keypair

    def seal_signal(self, payload: bytes, now: float) -> bytes:
        """A SIGNAL in this tunnel's session (TUNNEL_CLOSE); ExpiredKeys if none."""
        return self.ring.sending(now).seal(T_SIGNAL, payload)

    # --- keys -----------------------------------------------------------------------

    def install(self, keypair: Keypair) -> list[Keypair]:
        """A new keypair from a handshake (KeyRing.install); returns those dropped."""
        dropped = self.ring.install(keypair)
        self._sending = None
        if keypair.initiator:
            self.rekey_wanted = False
        return dropped

    def confirm(self, keypair: Keypair) -> list[Keypair]:
        """The first packet on ring.next arrived: it becomes current."""
        dropped = self.ring.confirm(keypair)
        self._sending = None
        self.rekey_wanted = False
        return dropped

    def expire(self, now: float) -> list[Keypair]:
        dropped = self.ring.expire(now)
        if dropped:
            self._sending = None
        return dropped

    def keypair_for(self, index: int) -> Keypair | None:
        return next((k for k in self.ring.all() if k.local_index == index), None)

    def open_signal(self, datagram: bytes, index: int, counter: int) -> bytes:
        """The payload of a SIGNAL on this tunnel's session; CodecError otherwise."""
        keypair = self.keypair_for(index)
        if keypair is None:
            raise CodecError("no keypair for that index")
        return keypair.open(datagram, counter)


class InnerDrop(CodecError):
    """An authentic DATA packet whose inner packet this tunnel may not carry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_inner_other(tunnel: Tunnel, packet: bytes) -> None:
    """The inner checks for what is not a well-formed IPv4 packet (IPv6, or junk)."""
    if packet[0] >> 4 == 6 and len(packet) >= 40 and tunnel.peer_vip6_packed:
        if packet[8:24] != tunnel.peer_vip6_packed:
            raise InnerDrop("inner_source_not_peer")
        if packet[24:40] != tunnel.self_vip6_packed:
            raise InnerDrop("inner_dest_not_self")
        return
    raise InnerDrop("inner_source_not_peer")  # a peer may only send as its own VIP


def open_data(
    table: TunnelTable, datagram: bytes, addr: Endpoint, now: float
) -> tuple[Tunnel, bytes]:
    """(tunnel, inner packet or b"") of an authentic, fresh DATA datagram. Raises
    CodecError (malformed), InnerDrop (with its reason), ReplayError, AuthError, or
    LookupError subclasses: PunchDrop, UnknownIndex."""
    if datagram[:4] != _DATA_HEADER or len(datagram) < TRANSPORT_OVERHEAD:
        raise CodecError("not a v2 DATA datagram")
    index, counter = _INDEX_COUNTER.unpack_from(datagram, 4)
    entry = table.by_index.get(index)
    if entry is None:
        raise PunchDrop() if index == 0 else UnknownIndex()
    tunnel, keypair = entry
    try:  # free when nothing is raised (3.11): the drop path alone pays for the count
        packet = keypair.open(datagram, counter)
        if packet:  # inner source: the peer's VIP; destination: this tunnel's own (5.1)
            if packet[0] >> 4 == 4 and len(packet) >= 20:
                if packet[12:16] != tunnel.peer_vip_packed:
                    raise InnerDrop("inner_source_not_peer")
                if packet[16:20] != tunnel.self_vip_packed:
                    raise InnerDrop("inner_dest_not_self")
            else:
                _check_inner_other(tunnel, packet)
    except CodecError as exc:
        tunnel.drops[drop_reason(exc)] += 1
        raise
    tunnel.last_receive = now
    tunnel.packets_in += 1
    tunnel.bytes_in += len(packet)
    if addr != tunnel.endpoint and _newest(keypair, counter):
        tunnel.endpoint = addr  # roaming: follow the authenticated, newest source (4.4)
        tunnel.endpoints[family_of(addr)] = addr
    if keypair is not tunnel.ring.current and keypair is tunnel.ring.next:
        dropped = tunnel.confirm(keypair)  # key confirmation (4.4)
        table.drop_keypairs(dropped)
        table.dropped += dropped
    return tunnel, packet


def drop_reason(exc: CodecError) -> str:
    """The name decapsulate counts a drop of an authentic tunnel's packet under."""
    if isinstance(exc, InnerDrop):
        return exc.reason
    if isinstance(exc, ReplayError):
        return "replay"
    return "auth" if isinstance(exc, AuthError) else "malformed"


def _newest(keypair: Keypair, counter: int) -> bool:
    """Was counter above every DATA counter seen before on this keypair? (Asked after
    open() recorded it, so: is it the highest now.)"""
    return keypair.highest_received(T_DATA) == counter


class PunchDrop(LookupError):
    """A PUNCH (index 0): its only job was to open the sender's NAT."""


class UnknownIndex(LookupError):
    """No session of ours has that receiver index."""


class TunnelTable:
    """Live tunnels: by (dc_id, tunnel_id), by VIP pair (the send path: an IPv4 packet's
    bytes 12:20, source then destination, are our VIP and the peer's; IPv6's 8:40) and by
    local session index (the receive path, one entry per keypair). Keyed by the pair, not
    the peer alone: an adapter's devices each have their own tunnel to the same peer."""

    def __init__(self) -> None:
        self.by_ref: dict[TunnelRef, Tunnel] = {}
        self.by_pair: dict[bytes, Tunnel] = {}
        self.by_index: dict[int, tuple[Tunnel, Keypair]] = {}
        # Keypairs the data path dropped (confirm) and tunnels the keep-alive stage
        # removed: the handshake part drains both to free indexes and pins.
        self.dropped: list[Keypair] = []
        self.removed: list[Tunnel] = []
        # Tunnels that came into the table and went out of it, however (metrics: a
        # replacement is one of each); counted here, the one place both happen.
        self.ups = 0
        self.downs = 0

    @property
    def full(self) -> bool:
        return len(self.by_ref) >= TUNNELS_MAX

    def install(self, tunnel: Tunnel) -> Tunnel | None:
        """Add tunnel (and its keypairs' indexes); returns the tunnel it replaced for the
        same pair of VIPs, removed here (the caller frees what else it held)."""
        keys = tunnel.pair_keys()
        old = self.by_pair.get(keys[0]) if keys else None
        if old is tunnel:
            old = None
        if old is not None:
            self._unlink(old)
        if self.by_ref.get(tunnel.ref) is not tunnel:
            self.ups += 1
        self.by_ref[tunnel.ref] = tunnel
        for key in keys:
            self.by_pair[key] = tunnel
        for keypair in tunnel.ring.all():
            self.by_index[keypair.local_index] = (tunnel, keypair)
        return old

    def add_keypair(self, tunnel: Tunnel, keypair: Keypair) -> None:
        self.by_index[keypair.local_index] = (tunnel, keypair)

    def drop_keypairs(self, keypairs: list[Keypair]) -> None:
        for keypair in keypairs:
            self.by_index.pop(keypair.local_index, None)

    def remove(self, tunnel: Tunnel) -> None:
        """Take tunnel out from a data stage (keep-alive expiry): queued in `removed`
        for the handshake part to free its indexes and Direction."""
        if self.by_ref.get(tunnel.ref) is tunnel:
            self._unlink(tunnel)
            self.removed.append(tunnel)

    def discard(self, tunnel: Tunnel) -> None:
        """Take tunnel out from the handshake part itself (which frees the rest)."""
        self._unlink(tunnel)

    def _unlink(self, tunnel: Tunnel) -> None:
        if self.by_ref.get(tunnel.ref) is tunnel:
            del self.by_ref[tunnel.ref]
            self.downs += 1
        for key in tunnel.pair_keys():
            if self.by_pair.get(key) is tunnel:
                del self.by_pair[key]
        for keypair in tunnel.ring.all():
            entry = self.by_index.get(keypair.local_index)
            if entry is not None and entry[0] is tunnel:
                del self.by_index[keypair.local_index]

    def by_fqdn(self, fqdn: str, self_fqdn: str | None = None) -> Tunnel | None:
        """The tunnel to fqdn (from our name self_fqdn, when given)."""
        return next(
            (
                t
                for t in self.by_ref.values()
                if t.peer_fqdn == fqdn and (self_fqdn is None or t.self_fqdn == self_fqdn)
            ),
            None,
        )

    def __iter__(self):
        return iter(list(self.by_ref.values()))

    def __len__(self) -> int:
        return len(self.by_ref)
