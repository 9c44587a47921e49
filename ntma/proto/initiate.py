"""The initiator's side of v2 handshakes, shared by every party that starts one (a node to
its DC, to a peer, to an RS; later a DC to another DC). Pure: time, randomness and key
generation come in (docs/protocol.md 4.2 to 4.4).

    inits = Initiations(static, random_bytes, generate_key, clock_epoch)
    pending = inits.start(responder_public, body, min_size, now)   -> pending.datagram to send
    inits.due(now)                  datagrams to resend (same bytes at 0.5, 1.5, 3.5 s)
    inits.expired(now)              PendingInits past REKEY_TIMEOUT (start a fresh one or give up)
    inits.on_cookie(datagram, now)  a COOKIE_REPLY: the init is rebuilt with mac2, to resend
    inits.on_response(datagram)     a HANDSHAKE_RESP: (pending, body, SessionKeys) or None

Indexes are allocated here (`Indexes`): random, never 0, unique among this end's live ones,
so a receiver finds a session by the index in a packet without looking at its source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .buffer import CodecError
from .crypto import StaticKey
from .handshake import (
    T_COOKIE,
    T_RESP,
    build_init,
    mac1_ok,
    open_resp,
    parse_cookie_reply,
    parse_resp,
    resp_mac1_key,
)
from .noise import Initiator, SessionKeys, tai64n
from .session import REKEY_TIMEOUT

RESEND_AFTER_S = (0.5, 1.5, 3.5)  # the same init again, within one REKEY_TIMEOUT
REKEY_JITTER_S = 0.333  # up to this much on top of REKEY_TIMEOUT, so retries spread out


def rekey_timeout(sender_index: int) -> float:
    """REKEY_TIMEOUT plus jitter taken from the (random) sender index: deterministic for a
    machine whose randomness is injected, spread across handshakes."""
    return REKEY_TIMEOUT + (sender_index % 1000) / 1000 * REKEY_JITTER_S


PENDING_MAX = 4096  # handshakes in flight at once; more are refused (CodecError)
INDEX_TRIES = 64


class Indexes:
    """Session indexes this end chose: random u32, never 0, unique while in use."""

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._random = random_bytes
        self.in_use: set[int] = set()

    def new(self) -> int:
        for _ in range(INDEX_TRIES):
            index = int.from_bytes(self._random(4), "big")
            if index and index not in self.in_use:
                self.in_use.add(index)
                return index
        raise CodecError("no free session index")  # only with a broken random source

    def release(self, index: int) -> None:
        self.in_use.discard(index)


def next_timestamp(clock_epoch: float, last: bytes | None) -> bytes:
    """max(clock, last + 1 ns): a node whose clock once ran ahead is not locked out by the
    greatest timestamp its responders remember (4.3)."""
    stamp = tai64n(clock_epoch)
    if last is not None and stamp <= last:
        seconds, nanos = int.from_bytes(last[:8], "big"), int.from_bytes(last[8:], "big") + 1
        if nanos >= 1_000_000_000:
            seconds, nanos = seconds + 1, 0
        stamp = seconds.to_bytes(8, "big") + nanos.to_bytes(4, "big")
    return stamp


@dataclass(eq=False)
class PendingInit:
    """One handshake we started and have no response to yet."""

    responder_public: bytes
    body: bytes
    min_size: int
    sender_index: int
    started_at: float
    initiator: Initiator | None = field(default=None, repr=False)
    datagram: bytes = field(default=b"", repr=False)
    resends: int = 0
    cookie: bytes | None = field(default=None, repr=False)
    context: object = None  # the caller's: which session or tunnel this is for

    @property
    def mac1(self) -> bytes:
        return self.datagram[-32:-16]


class Initiations:
    def __init__(
        self,
        static: StaticKey,
        indexes: Indexes,
        generate_key: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
    ) -> None:
        self._static = static
        self._indexes = indexes
        self._generate = generate_key
        self.pending: dict[int, PendingInit] = {}  # by our sender index
        self.last_timestamp: bytes | None = None  # the runner persists it

    def start(
        self,
        responder_public: bytes,
        body: bytes,
        min_size: int,
        now: float,
        clock_epoch: float,
        context: object = None,
    ) -> PendingInit:
        if len(self.pending) >= PENDING_MAX:
            raise CodecError("too many handshakes in flight")
        index = self._indexes.new()
        pending = PendingInit(responder_public, body, min_size, index, now, context=context)
        self._build(pending, clock_epoch)
        self.pending[index] = pending
        return pending

    def _build(self, pending: PendingInit, clock_epoch: float) -> None:
        """A fresh Noise initiator (new ephemeral, new timestamp) for `pending`."""
        self.last_timestamp = next_timestamp(clock_epoch, self.last_timestamp)
        pending.initiator = Initiator(self._static, pending.responder_public, self._generate())
        pending.datagram = build_init(
            pending.initiator,
            responder_public=pending.responder_public,
            sender_index=pending.sender_index,
            timestamp=self.last_timestamp,
            body=pending.body,
            min_size=pending.min_size,
            cookie=pending.cookie,
        )

    def due(self, now: float) -> list[PendingInit]:
        """Pendings whose init should go out again now (the same datagram). It counts the
        resend, so it has ONE caller per Initiations (the node: NodeSignalling.handle_timer,
        which hands each pending to its owner); a second caller would steal resends."""
        out = []
        for pending in self.pending.values():
            if pending.resends < len(RESEND_AFTER_S) and (
                now - pending.started_at >= RESEND_AFTER_S[pending.resends]
            ):
                pending.resends += 1
                out.append(pending)
        return out

    def expired(self, now: float) -> list[PendingInit]:
        """Pendings past REKEY_TIMEOUT, removed: the caller starts a fresh one or gives up."""
        gone = [
            p for p in self.pending.values() if now - p.started_at >= rekey_timeout(p.sender_index)
        ]
        for pending in gone:
            self.forget(pending)
        return gone

    def next_deadline(self) -> float | None:
        times = []
        for p in self.pending.values():
            times.append(p.started_at + rekey_timeout(p.sender_index))
            if p.resends < len(RESEND_AFTER_S):
                times.append(p.started_at + RESEND_AFTER_S[p.resends])
        return min(times, default=None)

    def forget(self, pending: PendingInit) -> None:
        if self.pending.get(pending.sender_index) is pending:
            del self.pending[pending.sender_index]
            self._indexes.release(pending.sender_index)

    def on_cookie(self, datagram: bytes, clock_epoch: float) -> PendingInit | None:
        """A COOKIE_REPLY to one of our inits: rebuild that init with mac2 (to send now)."""
        if len(datagram) < 8 or datagram[1] != T_COOKIE:
            raise CodecError("not a cookie reply")
        index = int.from_bytes(datagram[4:8], "big")
        pending = self.pending.get(index)
        if pending is None:
            return None
        _, cookie = parse_cookie_reply(
            datagram, responder_public=pending.responder_public, init_mac1=pending.mac1
        )
        pending.cookie = cookie
        self._build(pending, clock_epoch)
        return pending

    def on_response(self, datagram: bytes) -> tuple[PendingInit, int, bytes, SessionKeys] | None:
        """(pending, the responder's index, response body, keys) for a HANDSHAKE_RESP to a
        pending init of ours, once; None if it answers nothing we wait for. CodecError
        (NoiseError) if it fails authentication: the pending init stays (a forgery must
        not cancel a real handshake)."""
        if len(datagram) < 12 or datagram[1] != T_RESP:
            raise CodecError("not a handshake response")
        frame = parse_resp(datagram)
        pending = self.pending.get(frame.receiver_index)
        if pending is None:
            return None
        assert pending.initiator is not None
        if not mac1_ok(frame, resp_mac1_key(pending.initiator)):
            raise CodecError("response mac1 does not match our init")
        body, keys = open_resp(frame, pending.initiator)
        del self.pending[frame.receiver_index]  # the index stays in use: the session's now
        return pending, frame.sender_index, body, keys
