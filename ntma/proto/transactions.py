"""Requests in flight inside a v2 session, with backoff and a deadline (sans-IO).

v2 retransmits a request re-encrypted under the session's next counter (the same message,
the same txid; docs/protocol.md 4.4), so a Transaction holds the message, not sealed
bytes: `due(now)` says which to send again, and the owner seals them anew. Schedule as v1:
0.5 s doubling to 4 s, each request with its own deadline.

A table is generic in its kind K and its context C, and bounded: at most `limit` requests
(section 10: 256 per session), the oldest dropped beyond.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

FIRST_RETRANSMIT_S = 0.5
MAX_RETRANSMIT_S = 4.0
TRANSACTIONS_MAX = 256

K = TypeVar("K", bound=Hashable)
C = TypeVar("C")


@dataclass
class Transaction(Generic[K, C]):
    txid: int
    kind: K
    message: Any  # the v2 message, sealed again at every send
    deadline: float
    next_send: float
    interval: float = FIRST_RETRANSMIT_S
    context: C = None  # type: ignore[assignment]  # what the request was for (per kind)
    attempts: int = field(default=1)


class Transactions(Generic[K, C]):
    def __init__(self, limit: int = TRANSACTIONS_MAX) -> None:
        self._pending: OrderedDict[int, Transaction[K, C]] = OrderedDict()
        self._limit = limit

    def start(
        self,
        txid: int,
        kind: K,
        message: Any,
        now: float,
        timeout: float,
        context: C = None,  # type: ignore[assignment]
    ) -> Transaction[K, C]:
        tx = Transaction(
            txid, kind, message, now + timeout, now + FIRST_RETRANSMIT_S, context=context
        )
        self._pending[txid] = tx
        while len(self._pending) > self._limit:
            self._pending.popitem(last=False)
        return tx

    def finish(self, txid: int) -> Transaction[K, C] | None:
        return self._pending.pop(txid, None)

    def get(self, txid: int) -> Transaction[K, C] | None:
        return self._pending.get(txid)

    def find(self, kind: K) -> list[Transaction[K, C]]:
        return [tx for tx in self._pending.values() if tx.kind == kind]

    def all(self) -> list[Transaction[K, C]]:
        return list(self._pending.values())

    def due(self, now: float) -> tuple[list[Transaction[K, C]], list[Transaction[K, C]]]:
        """(transactions to send again now, transactions that passed their deadline)."""
        resend: list[Transaction[K, C]] = []
        expired: list[Transaction[K, C]] = []
        for tx in list(self._pending.values()):
            if now >= tx.deadline:
                expired.append(self._pending.pop(tx.txid))
            elif now >= tx.next_send:
                resend.append(tx)
                tx.attempts += 1
                tx.interval = min(tx.interval * 2, MAX_RETRANSMIT_S)
                tx.next_send = min(now + tx.interval, tx.deadline)
        return resend, expired

    def next_deadline(self) -> float | None:
        times = [min(tx.next_send, tx.deadline) for tx in self._pending.values()]
        return min(times, default=None)

    def clear(self) -> None:
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)
