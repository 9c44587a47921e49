"""The DC's node table in SQLite, so a name keeps its VIP across DC restarts.

Only durable facts live here (name, key, VIP, last endpoints, and the greatest handshake
timestamp seen per admitted key, written when a registration commits: docs/protocol.md
4.3). Liveness is the signalling state machine's business and lives in memory.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..proto.buffer import Endpoint
from .vip6 import Vip6Plan

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    fqdn TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    vip TEXT NOT NULL UNIQUE,
    observed TEXT NOT NULL DEFAULT '[]',
    local_endpoints TEXT NOT NULL DEFAULT '[]',
    updated_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS freshness (
    public_key BLOB PRIMARY KEY,
    timestamp BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS vip6_chosen (
    vip TEXT PRIMARY KEY,
    vip6 TEXT NOT NULL UNIQUE
)
"""


@dataclass
class NodeRecord:
    fqdn: str
    public_key: bytes
    vip: str
    observed: Endpoint
    local_endpoints: list[Endpoint]


class PoolExhausted(Exception):
    pass


class NodeStore:
    """SQLite-backed; pass ':memory:' for tests."""

    def __init__(
        self,
        path: Path | str,
        pool: ipaddress.IPv4Network,
        pool6: ipaddress.IPv6Network | None = None,
    ) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self.pool = pool
        self.vip6 = Vip6Plan(pool, pool6)  # each name's IPv6 VIP, from its IPv4 one
        for vip, vip6 in self._db.execute("SELECT vip, vip6 FROM vip6_chosen"):
            if not self.vip6.refusal(vip, vip6):  # a pool changed since: derived again
                self.vip6.choose(vip, vip6)

    def close(self) -> None:
        self._db.close()

    def get(self, fqdn: str) -> NodeRecord | None:
        row = self._db.execute(
            "SELECT fqdn, public_key, vip, observed, local_endpoints FROM nodes WHERE fqdn = ?",
            (fqdn,),
        ).fetchone()
        if row is None:
            return None
        observed = tuple(json.loads(row[3]) or ("0.0.0.0", 0))
        locals_ = [tuple(ep) for ep in json.loads(row[4])]
        return NodeRecord(row[0], bytes(row[1]), row[2], observed, locals_)  # type: ignore[arg-type]

    def by_vip(self, vip: str) -> NodeRecord | None:
        row = self._db.execute("SELECT fqdn FROM nodes WHERE vip = ?", (vip,)).fetchone()
        return self.get(row[0]) if row else None

    def register(
        self,
        fqdn: str,
        public_key: bytes,
        observed: Endpoint,
        local_endpoints: list[Endpoint],
        now_ms: int,
        vip: str | None = None,
    ) -> NodeRecord:
        """Upsert; an existing name keeps its VIP, a new one gets `vip` (reserved by the
        caller) or the lowest free VIP."""
        existing = self.get(fqdn)
        vip = existing.vip if existing else (vip or self.free_vip())
        self._db.execute(
            "INSERT INTO nodes (fqdn, public_key, vip, observed, local_endpoints, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(fqdn) DO UPDATE SET "
            "public_key = excluded.public_key, observed = excluded.observed, "
            "local_endpoints = excluded.local_endpoints, updated_ms = excluded.updated_ms",
            (
                fqdn,
                public_key,
                vip,
                json.dumps(list(observed)),
                json.dumps([list(ep) for ep in local_endpoints]),
                now_ms,
            ),
        )
        return NodeRecord(fqdn, public_key, vip, observed, list(local_endpoints))

    def count_under(self, suffix: str) -> int:
        """Stored names below `suffix` (names hold only a-z 0-9 - and dots: no LIKE escapes)."""
        row = self._db.execute(
            "SELECT count(*) FROM nodes WHERE fqdn LIKE ?", ("%." + suffix,)
        ).fetchone()
        return int(row[0])

    def update_observed(self, fqdn: str, observed: Endpoint, now_ms: int) -> None:
        self._db.execute(
            "UPDATE nodes SET observed = ?, updated_ms = ? WHERE fqdn = ?",
            (json.dumps(list(observed)), now_ms, fqdn),
        )

    def free_vip(self, reserved: set[str] | frozenset[str] = frozenset()) -> str:
        """The lowest VIP neither stored nor in `reserved` (VIPs promised to registrations
        not yet committed); PoolExhausted when there is none."""
        used = {row[0] for row in self._db.execute("SELECT vip FROM nodes")} | set(reserved)
        for host in self.pool.hosts():
            if host == next(self.pool.hosts()):
                continue  # the first host address is the pool's router address
            if str(host) not in used:
                return str(host)
        raise PoolExhausted(str(self.pool))

    def choose_vip6(self, vip: str, vip6: str) -> str:
        """A device's own IPv6 address for the name holding `vip`: "" when kept (and
        stored), else why it was refused (the name keeps its IPv6 VIP)."""
        refusal = self.vip6.refusal(vip, vip6)
        if not refusal and self.vip6.choose(vip, vip6):
            self._db.execute(
                "INSERT INTO vip6_chosen (vip, vip6) VALUES (?, ?) "
                "ON CONFLICT(vip) DO UPDATE SET vip6 = excluded.vip6",
                (vip, self.vip6.chosen[vip]),
            )
        return refusal

    # --- the greatest handshake timestamp per admitted key (4.3) -------------------------

    def last_timestamp(self, public_key: bytes) -> bytes | None:
        row = self._db.execute(
            "SELECT timestamp FROM freshness WHERE public_key = ?", (public_key,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def record_timestamp(self, public_key: bytes, timestamp: bytes) -> None:
        """Keep the greatest (TAI64N compares bytewise)."""
        old = self.last_timestamp(public_key)
        if old is not None and old >= timestamp:
            return
        self._db.execute(
            "INSERT INTO freshness (public_key, timestamp) VALUES (?, ?) "
            "ON CONFLICT(public_key) DO UPDATE SET timestamp = excluded.timestamp",
            (public_key, timestamp),
        )

    def reset_timestamp(self, public_key: bytes) -> None:
        """For an operator: a node whose clock ran far ahead can register again."""
        self._db.execute("DELETE FROM freshness WHERE public_key = ?", (public_key,))
