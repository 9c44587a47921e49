"""Tunnel state and the data-packet AEAD (sans-IO).

A Tunnel is made by the signalling state machine once the Tunnel Request /
Response exchange is done; the data stages only call seal() and open(). The
receiver finds a tunnel by the id in the data header, never by source address,
so a peer may change address; the endpoint is updated only after a packet
authenticates and passes the replay window.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .buffer import CodecError, Endpoint
from .crypto import AuthError, TunnelKeys
from .packet import DATA_HEADER, pack_data_header
from .replay import ReplayWindow

_NONCE_PAD = bytes(4)
MAX_COUNTER = (1 << 64) - 1


class ReplayError(CodecError):
    """Counter already seen or older than the replay window."""


@dataclass(eq=False)
class Tunnel:
    tunnel_id: int
    peer_fqdn: str
    peer_vip: str
    peer_endpoint: Endpoint
    keys: TunnelKeys
    created_at: float
    _send_aead: AESGCM = field(init=False, repr=False)
    _recv_aead: AESGCM = field(init=False, repr=False)
    _send_counter: int = field(default=0, init=False)
    _replay: ReplayWindow = field(default_factory=ReplayWindow, init=False, repr=False)
    packets_out: int = field(default=0, init=False)
    packets_in: int = field(default=0, init=False)
    last_receive: float = field(default=0.0, init=False)
    # responder only: our sealed Tunnel Response, resent if the initiator retransmits
    last_response: bytes | None = field(default=None, init=False, repr=False)
    route: str = field(default="direct", init=False)  # direct | punch | relay

    def __post_init__(self) -> None:
        self.peer_vip_packed = ipaddress.IPv4Address(self.peer_vip).packed
        self._send_aead = AESGCM(self.keys.send)
        self._recv_aead = AESGCM(self.keys.receive)

    def seal(self, packet: bytes) -> bytes:
        """One data datagram carrying packet."""
        counter = self._send_counter
        if counter >= MAX_COUNTER:
            raise CodecError("tunnel counter exhausted; a new tunnel is needed")
        self._send_counter = counter + 1
        header = pack_data_header(self.tunnel_id, counter)
        self.packets_out += 1
        return header + self._send_aead.encrypt(_NONCE_PAD + header[8:16], packet, header)

    def open(self, datagram: bytes, counter: int) -> bytes:
        """Inner packet of an authenticated, fresh datagram; AuthError/ReplayError otherwise."""
        if not self._replay.check(counter):
            raise ReplayError(f"counter {counter} replayed or too old")
        header = datagram[: DATA_HEADER.size]
        try:
            packet = self._recv_aead.decrypt(
                _NONCE_PAD + header[8:16], datagram[DATA_HEADER.size :], header
            )
        except InvalidTag as exc:
            raise AuthError("data packet failed authentication") from exc
        if not self._replay.accept(counter):  # pragma: no cover - check() just passed
            raise ReplayError(f"counter {counter} replayed")
        self.packets_in += 1
        return packet


class TunnelTable:
    """Tunnels by id (receive path) and by packed peer VIP (send path)."""

    def __init__(self) -> None:
        self.by_id: dict[int, Tunnel] = {}
        self.by_vip: dict[bytes, Tunnel] = {}

    def install(self, tunnel: Tunnel) -> Tunnel | None:
        """Add tunnel; returns the tunnel it replaced for the same peer VIP, if any."""
        old = self.by_vip.get(tunnel.peer_vip_packed)
        if old is not None:
            self.by_id.pop(old.tunnel_id, None)
        self.by_id[tunnel.tunnel_id] = tunnel
        self.by_vip[tunnel.peer_vip_packed] = tunnel
        return old

    def remove(self, tunnel: Tunnel) -> None:
        self.by_id.pop(tunnel.tunnel_id, None)
        if self.by_vip.get(tunnel.peer_vip_packed) is tunnel:
            del self.by_vip[tunnel.peer_vip_packed]

    def by_fqdn(self, fqdn: str) -> Tunnel | None:
        return next((t for t in self.by_vip.values() if t.peer_fqdn == fqdn), None)

    def __len__(self) -> int:
        return len(self.by_id)
