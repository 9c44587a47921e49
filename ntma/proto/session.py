"""Protocol v2 sessions: transport keypairs, their counters and replay windows, and the
rekey timers (sans-IO; docs/protocol.md section 4.4).

A `Keypair` is what one completed handshake gives: a send and a receive key, the index
this end chose (peers put it in the packets they send us) and the peer's index (we put
it in ours). A `KeyRing` holds a peer's keypairs: `current` (we send with it), `previous`
(still accepted for receiving after a rekey, until it expires) and `next` (a responder's
new keypair, which becomes current when its first packet arrives: key confirmation).

Transport datagrams (DATA and SIGNAL) share one layout:
`version u8 = 2, type u8, reserved u16 = 0, receiver_index u32, counter u64`, then
AES-256-GCM of the payload with nonce 0x00000000 ‖ counter and the 16 header bytes as AAD.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .buffer import CodecError
from .crypto import AuthError
from .handshake import T_DATA, T_SIGNAL, VERSION
from .noise import expand_transport_key
from .replay import ReplayWindow

REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REKEY_TIMEOUT = 5.0
REKEY_ATTEMPT_TIME = 90.0
KEEPALIVE_TIMEOUT = 10.0
REPLAY_WINDOW = 8192  # counters; issue 10 asks for at least 8,000 (v1 had 2,048)

TRANSPORT_HEADER = struct.Struct("!BBHIQ")
TRANSPORT_OVERHEAD = TRANSPORT_HEADER.size + 16
_NONCE_PAD = bytes(4)
_KINDS = ((T_DATA, b"data"), (T_SIGNAL, b"signal"))


class ReplayError(CodecError):
    """Counter already seen or older than the replay window."""


class ExpiredKeys(CodecError):
    """No keypair usable now (none yet, or past REJECT_AFTER_TIME / the message limit)."""


class _Direction:
    """One direction's key for one kind of transport packet, with its counter or window."""

    __slots__ = ("aead", "counter", "replay")

    def __init__(self, key: bytes) -> None:
        self.aead = AESGCM(key)
        self.counter = 0
        self.replay = ReplayWindow(REPLAY_WINDOW)


@dataclass(eq=False)
class Keypair:
    """Made from one handshake's Split() keys: a data key and a signalling key per
    direction (docs/protocol.md 4.2), so the data stages and the signalling stage each
    keep their own counter and replay window."""

    send_key: bytes
    receive_key: bytes
    local_index: int
    remote_index: int
    created_at: float
    initiator: bool  # we sent the init: we are the one who rekeys on time
    _send: dict[int, _Direction] = field(init=False, repr=False)
    _receive: dict[int, _Direction] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._send = {t: _Direction(expand_transport_key(self.send_key, lbl)) for t, lbl in _KINDS}
        self._receive = {
            t: _Direction(expand_transport_key(self.receive_key, lbl)) for t, lbl in _KINDS
        }

    @property
    def send_counter(self) -> int:
        """The larger of the two send counters (what the message limits look at)."""
        return max(d.counter for d in self._send.values())

    def expired(self, now: float, reject_after: float = REJECT_AFTER_TIME) -> bool:
        return now - self.created_at >= reject_after or self.send_counter >= REJECT_AFTER_MESSAGES

    def seal(self, msg_type: int, payload: bytes) -> bytes:
        direction = self._send[msg_type]
        counter = direction.counter
        direction.counter = counter + 1
        header = TRANSPORT_HEADER.pack(VERSION, msg_type, 0, self.remote_index, counter)
        return header + direction.aead.encrypt(_NONCE_PAD + header[8:], payload, header)

    def open(self, datagram: bytes, counter: int) -> bytes:
        """The payload of an authentic, fresh datagram (type from its header, which
        parse_transport checked); AuthError or ReplayError otherwise."""
        direction = self._receive[datagram[1]]
        if not direction.replay.check(counter):
            raise ReplayError(f"counter {counter} replayed or too old")
        header = datagram[: TRANSPORT_HEADER.size]
        try:
            payload = direction.aead.decrypt(
                _NONCE_PAD + header[8:], datagram[TRANSPORT_HEADER.size :], header
            )
        except InvalidTag as exc:
            raise AuthError("transport packet failed authentication") from exc
        direction.replay.accept(counter)
        return payload

    def highest_received(self, kind: int) -> int:
        """The highest counter accepted so far on packets of this type (T_DATA or
        T_SIGNAL); -1 before the first. Roaming follows only the newest packet (4.4)."""
        return self._receive[kind].replay.highest


def parse_transport(datagram: bytes) -> tuple[int, int, int]:
    """(type, receiver_index, counter) of a DATA or SIGNAL datagram; CodecError if not one."""
    if len(datagram) < TRANSPORT_OVERHEAD:
        raise CodecError("transport packet too short")
    version, msg_type, reserved, index, counter = TRANSPORT_HEADER.unpack_from(datagram)
    if version != VERSION or reserved != 0 or msg_type not in (T_DATA, T_SIGNAL):
        raise CodecError(f"bad transport header {datagram[:4].hex()}")
    return msg_type, index, counter


@dataclass
class KeyRing:
    """One peer's keypairs and the rekey decisions that follow from them. `reject_after`
    is how long a keypair may send and receive: REJECT_AFTER_TIME for tunnels and RS
    sessions, 1,860 s for the node's DC session (4.4)."""

    current: Keypair | None = None
    previous: Keypair | None = None
    next: Keypair | None = None
    reject_after: float = REJECT_AFTER_TIME

    def install(self, keypair: Keypair) -> list[Keypair]:
        """Add a new keypair: an initiator's becomes current at once (it has the peer's
        response); a responder's waits in `next` for the peer's first packet. Returns the
        keypairs dropped, so the caller can forget their indexes."""
        dropped: list[Keypair] = []
        if keypair.initiator:
            dropped += [k for k in (self.previous, self.next) if k is not None]
            self.previous, self.current, self.next = self.current, keypair, None
        else:
            dropped += [k for k in (self.next,) if k is not None]
            self.next = keypair
        return dropped

    def confirm(self, keypair: Keypair) -> list[Keypair]:
        """A packet arrived on `next`: it becomes current. Returns the keypairs dropped."""
        if keypair is not self.next:
            return []
        dropped = [self.previous] if self.previous is not None else []
        self.previous, self.current, self.next = self.current, keypair, None
        return dropped

    def sending(self, now: float) -> Keypair:
        keypair = self.current
        if keypair is None or keypair.expired(now, self.reject_after):
            raise ExpiredKeys("no keypair to send with")
        return keypair

    def needs_rekey(self, now: float) -> bool:
        """WireGuard's rule: the initiator of the current keypair starts a new handshake on
        its next send after REKEY_AFTER_TIME; either end after REKEY_AFTER_MESSAGES."""
        keypair = self.current
        if keypair is None:
            return True
        if keypair.send_counter >= REKEY_AFTER_MESSAGES:
            return True
        return keypair.initiator and now - keypair.created_at >= REKEY_AFTER_TIME

    def expire(self, now: float) -> list[Keypair]:
        """Drop keypairs past reject_after; returns them."""
        dropped = []
        for name in ("previous", "current", "next"):
            keypair = getattr(self, name)
            if keypair is not None and now - keypair.created_at >= self.reject_after:
                setattr(self, name, None)
                dropped.append(keypair)
        return dropped

    def all(self) -> list[Keypair]:
        return [k for k in (self.current, self.previous, self.next) if k is not None]
