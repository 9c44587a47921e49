"""What `ntma status` shows of the DC and of a Relay Server: snapshots of plain data.

As node_status.py: read synchronously, nothing changed, ages in seconds from `now`; the
grant expiries (wall-clock milliseconds) are turned into seconds from `wall_now`.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from ..dc.coordinator import Coordinator
from ..dc.sessions import NodeSession
from ..proto.fields_v2 import VIP6_NONE
from ..relay.relay import Relay, RelayEntry
from .node_status import age, endpoint_text


def _key_text(key: bytes) -> str:
    return base64.b64encode(key).decode()


def dc_node(dc: Coordinator, session: NodeSession, now: float) -> dict[str, Any]:
    vip6 = dc.store.vip6.of(session.vip)
    families = sorted(session.endpoints)
    return {
        "name": session.fqdn,
        "vip": session.vip,
        "vip6": None if vip6 == VIP6_NONE else vip6,
        "added": [
            {"name": name, "vip": vip, "vip6": _or_none(dc.store.vip6.of(vip))}
            for name, vip in session.added.items()
        ],
        "endpoints": {f"ipv{f}": endpoint_text(session.endpoints[f]) for f in families},
        "nat": {f"ipv{f}": session.reach(f).value for f in families},
        "online": session.online,
        "last_seen_s_ago": age(now, session.last_seen),
        "key": _key_text(session.public_key),
    }


def _or_none(vip6: str) -> str | None:
    return None if vip6 == VIP6_NONE else vip6


def dc_status(dc: Coordinator, now: float, wall_now: float | None = None) -> dict[str, Any]:
    wall = time.time() if wall_now is None else wall_now
    sessions = sorted(dc.sessions.values(), key=lambda s: s.fqdn)
    online = {s.public_key for s in sessions if s.online}
    routes = []
    for tunnel in sorted(dc.tunnels.by_id.values(), key=lambda t: (t.requester, t.target)):
        ends = (tunnel.requester_key, tunnel.target_key)
        expires = tunnel.grant_expires_ms
        routes.append(
            {
                "tunnel_id": tunnel.tunnel_id,
                "requester": tunnel.requester,
                "target": tunnel.target,
                "route": tunnel.route,
                "why": tunnel.why,
                "initiator": tunnel.initiator,
                "dormant": not all(key in online for key in ends),
                "grant_expires_in_s": None if expires is None else round(expires / 1000 - wall),
            }
        )
    return {
        "role": "dc",
        "zone": dc.zone,
        "nodes": [dc_node(dc, s, now) for s in sessions],
        "routes": routes,
        "relays": [endpoint_text(e) for r in dc.relays for e in r.endpoints.values()],
        "drops": dict(dc.drops),
    }


def _entry(relay: Relay, entry: RelayEntry, now: float, wall: float) -> dict[str, Any]:
    return {
        "tunnel_id": entry.tunnel_id,
        "dc_id": entry.dc_id.hex(),
        "ends": [
            {"key": _key_text(key), "endpoint": endpoint_text(bound)}
            for key, bound in zip(entry.ends, entry.bound, strict=True)
        ],
        "packets": entry.forwarded,
        "bytes": entry.forwarded_bytes,
        "idle_s": age(now, entry.last_active),
        "idle_expires_in_s": round(entry.last_active + relay.idle_timeout - now, 1),
        "grant_expires_in_s": round(entry.expires_ms / 1000 - wall),
    }


def relay_status(relay: Relay, now: float, wall_now: float | None = None) -> dict[str, Any]:
    wall = time.time() if wall_now is None else wall_now
    entries = sorted(relay.entries.values(), key=lambda e: e.tunnel_id)
    return {
        "role": "relay",
        "entries": [_entry(relay, e, now, wall) for e in entries],
        "forwarded": relay.forwarded,
        "drops": dict(relay.drops),
    }
