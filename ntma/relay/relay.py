"""Relay Server state machine (sans-IO).

Rules:
- The RS relays only tunnels the DC granted. An end binds its current endpoint to
  its side of a tunnel with RELAY_BIND: sealed with the end's static key (so the RS
  knows which key sent it) and carrying the DC's grant (so the RS knows the tunnel
  and its two ends). Anything else that arrives for a tunnel with no binding, or
  from an endpoint that is not bound, is dropped and counted, never forwarded.
- Data packets and relay envelopes carry the tunnel id; the RS forwards them from
  one bound side to the other without reading them (they are end-to-end encrypted).
- An end that changes address binds again (the grant is its proof); the RS then
  follows it. A relay entry idle for idle_timeout is dropped at the next sweep
  (handle_timer, every SWEEP_INTERVAL_S).
- It follows the contract in proto/machine.py: typed events, drops by reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..proto.buffer import CodecError, Endpoint
from ..proto.crypto import SignalBox, StaticKey
from ..proto.grant import GrantError, check_grant, grant_key
from ..proto.machine import Drops, Event
from ..proto.messages import RelayBind, RelayBound
from ..proto.packet import open_message, relayed_tunnel_id, seal_message

CLOCK_SKEW_MS = 120_000
SWEEP_INTERVAL_S = 5.0  # how often idle entries are looked for


@dataclass(frozen=True)
class EndBound(Event):
    """An end bound its current endpoint to its side of a tunnel (first time, or after moving)."""

    log_name = "relay_bound"
    tunnel: int
    side: int  # 0: the grant's end_a, 1: its end_b
    endpoint: str  # "ip:port" the bind came from
    moved: bool  # this side was bound to another endpoint before


@dataclass(frozen=True)
class RelayIdleDropped(Event):
    """A relay entry carried nothing for idle_timeout and was removed."""

    tunnel: int
    forwarded: int  # datagrams it forwarded in its life


RelayEvent = EndBound | RelayIdleDropped


@dataclass
class RelayEntry:
    tunnel_id: int
    ends: tuple[bytes, bytes]
    endpoints: list[Endpoint | None] = field(default_factory=lambda: [None, None])
    last_active: float = 0.0
    forwarded: int = 0


class Relay:
    def __init__(
        self,
        *,
        static: StaticKey,
        dc_public: bytes,
        idle_timeout: float,
        random_bytes: Callable[[int], bytes] = os.urandom,
        epoch_offset: float | None = None,
    ) -> None:
        self._static = static
        self._grant_key = grant_key(static, dc_public)
        self.idle_timeout = idle_timeout
        self._random = random_bytes
        if epoch_offset is None:
            epoch_offset = time.time() - time.monotonic()
        self._epoch_offset = epoch_offset
        self.entries: dict[int, RelayEntry] = {}
        self._by_endpoint: dict[tuple[int, Endpoint], int] = {}  # (tunnel, endpoint) -> side
        self._boxes: dict[bytes, SignalBox] = {}
        self._out: list[tuple[bytes, Endpoint]] = []
        self._events: list[RelayEvent] = []
        self._sweep_at = 0.0
        self.drops = Drops()
        self.forwarded = 0

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[RelayEvent]:
        events, self._events = self._events, []
        return events

    def get_timer(self) -> float:
        return self._sweep_at

    def handle_timer(self, now: float) -> None:
        if now >= self._sweep_at:
            self._sweep_at = now + SWEEP_INTERVAL_S
            self._expire(now)

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        try:
            tunnel_id = relayed_tunnel_id(datagram)
        except CodecError:
            self._bind(datagram, addr, now)
            return
        side = self._by_endpoint.get((tunnel_id, addr))
        if side is None:
            self.drops.drop("no_binding" if tunnel_id not in self.entries else "unbound_source")
            return
        entry = self.entries[tunnel_id]
        target = entry.endpoints[1 - side]
        if target is None:
            self.drops.drop("peer_not_bound")
            return
        entry.last_active = now
        entry.forwarded += 1
        self.forwarded += 1
        self._out.append((datagram, target))

    def _expire(self, now: float) -> None:
        for entry in [e for e in self.entries.values() if now - e.last_active > self.idle_timeout]:
            del self.entries[entry.tunnel_id]
            for endpoint in entry.endpoints:
                self._by_endpoint.pop((entry.tunnel_id, endpoint), None)
            self._events.append(RelayIdleDropped(entry.tunnel_id, entry.forwarded))

    def _bind(self, datagram: bytes, addr: Endpoint, now: float) -> None:
        try:
            sender, msg = open_message(datagram, self._box_for)
            if not isinstance(msg, RelayBind):
                raise CodecError("only RELAY_BIND is signalling for a relay")
            if abs(msg.timestamp_ms - self._epoch_ms(now)) > CLOCK_SKEW_MS:
                raise GrantError("stale bind")
            grant = check_grant(self._grant_key, msg.grant, self._epoch_ms(now))
            side = grant.side_of(sender)
        except GrantError as exc:
            self.drops.drop(_reason(str(exc)))
            return
        except CodecError:
            self.drops.drop("malformed")
            return
        entry = self.entries.get(grant.tunnel_id)
        if entry is None or entry.ends != (grant.end_a, grant.end_b):
            entry = RelayEntry(grant.tunnel_id, (grant.end_a, grant.end_b), last_active=now)
            self.entries[grant.tunnel_id] = entry
        old = entry.endpoints[side]
        if old != addr:
            self._by_endpoint.pop((grant.tunnel_id, old), None)
            entry.endpoints[side] = addr
            self._by_endpoint[(grant.tunnel_id, addr)] = side
            self._events.append(
                EndBound(grant.tunnel_id, side, f"{addr[0]}:{addr[1]}", moved=old is not None)
            )
        entry.last_active = now
        reply = RelayBound(msg.txid, grant.tunnel_id, addr)
        nonce = self._random(SignalBox.NONCE_LEN)
        self._out.append(
            (seal_message(reply, self._box_for(sender), self._static.public, nonce), addr)
        )

    def _box_for(self, sender: bytes) -> SignalBox:
        box = self._boxes.get(sender)
        if box is None:
            box = SignalBox(self._static, sender)
            if len(self._boxes) < 10_000:  # bounded: a flood of keys cannot grow it forever
                self._boxes[sender] = box
        return box

    def _epoch_ms(self, now: float) -> int:
        return int((self._epoch_offset + now) * 1000)


def _reason(text: str) -> str:
    return {
        "grant expired": "expired_grant",
        "grant tag does not verify": "bad_grant",
        "grant has the wrong length": "bad_grant",
        "sender is not an end of this grant": "not_an_end",
        "stale bind": "stale_bind",
    }.get(text, "bad_grant")
