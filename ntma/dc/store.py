"""The DC's node table in SQLite, so a name keeps its VIP across DC restarts.

Only durable facts live here (name, key, VIP, last endpoints). Liveness is the
signalling state machine's business and lives in memory.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..proto.buffer import Endpoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    fqdn TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    vip TEXT NOT NULL UNIQUE,
    observed TEXT NOT NULL DEFAULT '[]',
    local_endpoints TEXT NOT NULL DEFAULT '[]',
    updated_ms INTEGER NOT NULL DEFAULT 0
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

    def __init__(self, path: Path | str, pool: ipaddress.IPv4Network) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self.pool = pool

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
    ) -> NodeRecord:
        """Upsert; an existing name keeps its VIP, a new one gets the lowest free VIP."""
        existing = self.get(fqdn)
        vip = existing.vip if existing else self._free_vip()
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

    def update_observed(self, fqdn: str, observed: Endpoint, now_ms: int) -> None:
        self._db.execute(
            "UPDATE nodes SET observed = ?, updated_ms = ? WHERE fqdn = ?",
            (json.dumps(list(observed)), now_ms, fqdn),
        )

    def _free_vip(self) -> str:
        used = {row[0] for row in self._db.execute("SELECT vip FROM nodes")}
        for host in self.pool.hosts():
            if host == next(self.pool.hosts()):
                continue  # the first host address is the pool's router address
            if str(host) not in used:
                return str(host)
        raise PoolExhausted(str(self.pool))
