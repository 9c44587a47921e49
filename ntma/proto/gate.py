"""The checks every v2 responder (DC, node, RS) makes on a HANDSHAKE_INIT, cheapest first
(docs/protocol.md 4.3 and 4.5), as one pure object: a `HandshakeGate`.

    gate.admit(datagram, source, now)    steps 1-2: size, mac1, load -> cookie, per-source
                                         budget. No X25519 spent yet.
    open_init(frame, static)             step 3 (proto/handshake.py): two X25519
    (step 4, "is this key acceptable", is the caller's: only it knows who may register)
    gate.fresh(key, timestamp, ...)      steps 5-6: replay, lost-response resend, flood limit
    gate.answered(key, ...)              remember the response for step 5's resends

Every table here has a bound and a stated eviction (section 10); randomness (cookie
secrets) and time come in from the caller.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .buffer import CodecError, Endpoint
from .crypto import StaticKey
from .handshake import InitFrame, build_cookie_reply, mac1_ok, mac2_ok, parse_init
from .noise import COOKIE_NONCE_LEN, mac1_key, make_cookie

COOKIE_SECRET_S = 120.0
HANDSHAKE_BUDGET_PER_S = 500.0
SOURCE_BUDGET_PER_S = 20.0
SOURCES_MAX = 4096
FRESHNESS_UNPINNED_MAX = 4096
FLOOD_INTERVAL_S = 0.05
RESEND_WINDOW_S = 5.0  # REKEY_TIMEOUT: a lost response is resent only this long after
RESENDS_MAX = 3


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def empty(self, now: float) -> bool:
        """Would take() fail now? (Does not take.)"""
        return min(self.burst, self.tokens + (now - self.at) * self.rate) < 1.0


def source_prefix(address: str) -> str:
    """The unit per-source limits count in: an IPv4 address, or an IPv6 /64."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def source_bytes(source: Endpoint) -> bytes:
    """A cookie's input: the address (4 or 16 bytes, IPv4-mapped made IPv4) and the port."""
    ip = ipaddress.ip_address(source[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed + source[1].to_bytes(2, "big")


@dataclass(frozen=True)
class Admitted:
    frame: InitFrame


@dataclass(frozen=True)
class SendCookie:
    datagram: bytes  # the COOKIE_REPLY, 64 bytes, to the init's source


@dataclass(frozen=True)
class Refused:
    reason: str  # a drop reason, counted by the caller


class _Stored:
    __slots__ = ("timestamp", "init", "response", "source", "answered_at", "resends")

    def __init__(self, timestamp: bytes) -> None:
        self.timestamp = timestamp
        self.init: bytes | None = None
        self.response: bytes | None = None
        self.source: Endpoint | None = None
        self.answered_at = 0.0
        self.resends = 0


class HandshakeGate:
    def __init__(
        self,
        static: StaticKey,
        now: float,
        random_bytes: Callable[[int], bytes],
        *,
        budget_per_s: float = HANDSHAKE_BUDGET_PER_S,
        source_budget_per_s: float = SOURCE_BUDGET_PER_S,
    ) -> None:
        self._public = static.public
        self._mac1_key = mac1_key(static.public)
        self._random = random_bytes
        self._budget = TokenBucket(budget_per_s, budget_per_s, now)
        self._source_rate = source_budget_per_s
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._secret, self._old_secret = random_bytes(32), None
        self._secret_at = now
        self._fresh: dict[bytes, _Stored] = {}  # pinned keys
        self._fresh_lru: OrderedDict[bytes, _Stored] = OrderedDict()
        self._pinned: set[bytes] = set()
        self._last_processed: OrderedDict[bytes, float] = OrderedDict()
        # Totals for metrics (observe/metrics.py); refusals are the caller's drops.
        self.cookies_sent = 0
        self.responses = 0  # answered(): a response to a fresh init was sent

    # --- steps 1 and 2 ----------------------------------------------------------------

    def admit(
        self, datagram: bytes, source: Endpoint, now: float
    ) -> Admitted | SendCookie | Refused:
        try:
            frame = parse_init(datagram)
        except CodecError:
            return Refused("malformed_init")
        if not mac1_ok(frame, self._mac1_key):
            return Refused("bad_mac1")
        self._rotate_secret(now)
        under_load = self._budget.empty(now)
        if under_load and not self._mac2_valid(frame, source):
            nonce = self._random(COOKIE_NONCE_LEN)
            cookie = make_cookie(self._secret, source_bytes(source))
            reply = build_cookie_reply(
                frame, responder_public=self._public, nonce=nonce, cookie=cookie
            )
            self.cookies_sent += 1
            return SendCookie(reply)
        if not self._source_budget(source, now):
            return Refused("rate_limited")
        if not self._budget.take(now):
            return Refused("over_budget")
        return Admitted(frame)

    def _mac2_valid(self, frame: InitFrame, source: Endpoint) -> bool:
        data = source_bytes(source)
        secrets = (self._secret, self._old_secret)
        return any(s is not None and mac2_ok(frame, make_cookie(s, data)) for s in secrets)

    def _rotate_secret(self, now: float) -> None:
        if now - self._secret_at >= COOKIE_SECRET_S:
            self._old_secret, self._secret = self._secret, self._random(32)
            self._secret_at = now

    def _source_budget(self, source: Endpoint, now: float) -> bool:
        """Per-prefix token bucket. Under load only mac2-valid sources get here, so spoofed
        sources cannot churn the table (4.5)."""
        prefix = source_prefix(source[0])
        bucket = self._sources.get(prefix)
        if bucket is None:
            bucket = self._sources[prefix] = TokenBucket(self._source_rate, self._source_rate, now)
            while len(self._sources) > SOURCES_MAX:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(prefix)
        return bucket.take(now)

    # --- steps 5 and 6 ----------------------------------------------------------------

    def fresh(
        self, key: bytes, timestamp: bytes, datagram: bytes, source: Endpoint, now: float
    ) -> bool | bytes:
        """True: process this init. False: drop it (replayed or flooding). bytes: the
        stored response to resend to `source` (a copy of the init last answered)."""
        stored = self._fresh.get(key) or self._fresh_lru.get(key)
        if stored is not None and timestamp <= stored.timestamp:
            if (
                datagram == stored.init
                and source == stored.source
                and stored.response is not None
                and now - stored.answered_at < RESEND_WINDOW_S
                and stored.resends < RESENDS_MAX
            ):
                stored.resends += 1
                return stored.response
            return False
        last = self._last_processed.get(key)
        if last is not None and now - last < FLOOD_INTERVAL_S:
            return False
        self._last_processed[key] = now
        self._last_processed.move_to_end(key)
        while len(self._last_processed) > FRESHNESS_UNPINNED_MAX + len(self._pinned):
            self._last_processed.popitem(last=False)
        self._remember(key, _Stored(timestamp))
        return True

    def answered(
        self, key: bytes, datagram: bytes, response: bytes, source: Endpoint, now: float
    ) -> None:
        self.responses += 1
        stored = self._fresh.get(key) or self._fresh_lru.get(key)
        if stored is not None:
            stored.init, stored.response, stored.source = datagram, response, source
            stored.answered_at, stored.resends = now, 0

    def pin(self, key: bytes) -> None:
        """Live state names this freshness key: keep its timestamp out of the LRU."""
        self._pinned.add(key)
        stored = self._fresh_lru.pop(key, None)
        if stored is not None:
            self._fresh[key] = stored

    def unpin(self, key: bytes) -> None:
        self._pinned.discard(key)
        stored = self._fresh.pop(key, None)
        if stored is not None:
            self._remember(key, stored)

    def _remember(self, key: bytes, stored: _Stored) -> None:
        if key in self._pinned:
            self._fresh[key] = stored
            return
        self._fresh_lru[key] = stored
        self._fresh_lru.move_to_end(key)
        while len(self._fresh_lru) > FRESHNESS_UNPINNED_MAX:
            self._fresh_lru.popitem(last=False)

    def table_sizes(self) -> dict[str, int]:
        return {
            "sources": len(self._sources),
            "fresh_pinned": len(self._fresh),
            "fresh_lru": len(self._fresh_lru),
        }
