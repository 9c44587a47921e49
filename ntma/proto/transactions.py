"""Retransmission of signalling requests with backoff and a deadline (sans-IO).

Each request in flight is one Transaction holding the sealed datagram(s) to
resend. Retransmits resend the same bytes, so receivers see the same txid and
can answer idempotently. due(now) yields what to resend and what has expired.

A table is generic in its kind K and its context C: the node uses an enum of kinds and
one typed context class per kind (proto/node/wire.py); the DC uses plain strings.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .buffer import Endpoint

FIRST_RETRANSMIT_S = 0.5
MAX_RETRANSMIT_S = 4.0

K = TypeVar("K", bound=Hashable)
C = TypeVar("C")


@dataclass
class Transaction(Generic[K, C]):
    txid: int
    kind: K
    datagrams: list[tuple[bytes, Endpoint]]
    deadline: float
    next_send: float
    interval: float = FIRST_RETRANSMIT_S
    context: C = None  # type: ignore[assignment]  # what the request was for (per kind)
    attempts: int = field(default=1)


class Transactions(Generic[K, C]):
    def __init__(self) -> None:
        self._pending: dict[int, Transaction[K, C]] = {}

    def start(
        self,
        txid: int,
        kind: K,
        datagrams: list[tuple[bytes, Endpoint]],
        now: float,
        timeout: float,
        context: C = None,  # type: ignore[assignment]
    ) -> Transaction[K, C]:
        tx = Transaction(
            txid, kind, datagrams, now + timeout, now + FIRST_RETRANSMIT_S, context=context
        )
        self._pending[txid] = tx
        return tx

    def finish(self, txid: int) -> Transaction[K, C] | None:
        return self._pending.pop(txid, None)

    def get(self, txid: int) -> Transaction[K, C] | None:
        return self._pending.get(txid)

    def find(self, kind: K) -> list[Transaction[K, C]]:
        return [tx for tx in self._pending.values() if tx.kind == kind]

    def due(self, now: float) -> tuple[list[tuple[bytes, Endpoint]], list[Transaction[K, C]]]:
        """(datagrams to resend now, transactions that passed their deadline)."""
        resend: list[tuple[bytes, Endpoint]] = []
        expired: list[Transaction[K, C]] = []
        for tx in list(self._pending.values()):
            if now >= tx.deadline:
                expired.append(self._pending.pop(tx.txid))
            elif now >= tx.next_send:
                resend.extend(tx.datagrams)
                tx.attempts += 1
                tx.interval = min(tx.interval * 2, MAX_RETRANSMIT_S)
                tx.next_send = min(now + tx.interval, tx.deadline)
        return resend, expired

    def next_deadline(self) -> float | None:
        times = [min(tx.next_send, tx.deadline) for tx in self._pending.values()]
        return min(times, default=None)

    def __len__(self) -> int:
        return len(self._pending)
