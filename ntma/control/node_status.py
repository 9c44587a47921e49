"""What `ntma status` shows of a node or an adapter: a snapshot of plain data.

Read in one go between two awaits (the control server calls it synchronously), so it sees
one consistent state and holds nothing across an await; it only reads, never changes, the
machine and the tables the data path uses. Times are ages in seconds from `now`.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from ..observe.spans import Spans
from ..proto.bodies_v2 import Direction
from ..proto.buffer import Endpoint
from ..proto.devices import Device, Devices
from ..proto.dhcp import DhcpServer
from ..proto.ether import mac_text
from ..proto.fields_v2 import VIP4_NONE, VIP6_NONE, Role, Route
from ..proto.node import NodeSignalling
from ..proto.node.handshake import PUNCH_FALLBACK_S
from ..proto.node.session import DcSession
from ..proto.tunnel import Tunnel


def endpoint_text(endpoint: Endpoint | None) -> str | None:
    if endpoint is None:
        return None
    host, port = endpoint[0], endpoint[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 1)


def _vip(text: str, none: str) -> str | None:
    return None if text in (none, "", "0.0.0.0") else text


def nat_type(session: DcSession) -> str | None:
    """public | cone | symmetric | unknown, as the DC's two ports saw us (dc/route.py)."""
    registration = session.registration
    if registration is None:
        return None
    if not registration.behind_nat:
        return "public"
    probe = session.nat_probe_observed
    if probe is None:
        return "unknown"
    return "cone" if tuple(probe) == tuple(registration.observed) else "symmetric"


def _registration(sm: NodeSignalling) -> dict[str, Any]:
    session = sm.session
    registration = session.registration
    own = sm.wire.names.get(sm.fqdn)
    return {
        "state": session.state.value,
        "vip": _vip(own.vip4, VIP4_NONE) if own else None,
        "vip6": _vip(own.vip6, VIP6_NONE) if own else None,
        "observed": endpoint_text(registration.observed) if registration else None,
        "nat": nat_type(session),
        "keepalive_s": registration.keepalive_s if registration else None,
    }


def _dc(sm: NodeSignalling, now: float) -> dict[str, Any]:
    session = sm.session
    return {
        "address": endpoint_text(sm.wire.dc_endpoint),
        "address6": endpoint_text(session.other_dc),
        "last_ack_s_ago": age(now, session.last_ack_at),
        "keepalives_lost": session.keepalives_lost,
    }


def route_why(tunnel: Tunnel, direction: Direction | None) -> str:
    """Why the tunnel takes its route, as far as this end knows: what the DC directed,
    who opens it, and whether hole punching fell back to the relay."""
    if direction is None:
        return "no Direction held for it"
    directed = direction.route.name.lower()
    if direction.route == Route.PUNCH and tunnel.route == "relay":
        return f"hole punching got no answer within {PUNCH_FALLBACK_S} s: fell back to the relay"
    if tunnel.route != directed:
        return f"the DC directed {directed}; it came up over {tunnel.route}"
    opener = "we open it" if direction.role == Role.INITIATE else "the peer opens it"
    return f"the DC directed {directed}; {opener}"


def tunnel_status(tunnel: Tunnel, direction: Direction | None, now: float) -> dict[str, Any]:
    keypairs = tunnel.ring.all()
    handshake = max((k.created_at for k in keypairs), default=None)
    return {
        "peer": tunnel.peer_fqdn,
        "self": tunnel.self_fqdn,
        "tunnel_id": tunnel.tunnel_id,
        "peer_vip": _vip(tunnel.peer_vip, VIP4_NONE),
        "peer_vip6": _vip(tunnel.peer_vip6, VIP6_NONE),
        "route": tunnel.route,
        "directed": direction.route.name.lower() if direction else None,
        "why": route_why(tunnel, direction),
        "endpoint": endpoint_text(tunnel.endpoint),
        "relay": endpoint_text(tunnel.relay.endpoint) if tunnel.relay else None,
        "handshake_s_ago": age(now, handshake),
        "receive_s_ago": age(now, tunnel.last_receive) if tunnel.last_receive else None,
        "packets_in": tunnel.packets_in,
        "bytes_in": tunnel.bytes_in,
        "packets_out": tunnel.packets_out,
        "bytes_out": tunnel.bytes_out,
        "drops": dict(tunnel.drops),
    }


def _names(sm: NodeSignalling) -> list[dict[str, Any]]:
    return [
        {"name": name, "vip": _vip(v.vip4, VIP4_NONE), "vip6": _vip(v.vip6, VIP6_NONE)}
        for name, v in sm.wire.names.items()
    ]


def stage_drops(spans: Spans) -> dict[str, dict[str, int]]:
    """Each stage's drops by reason (only stages that dropped something)."""
    return {name: dict(s.drops) for name, s in spans.stages.items() if s.drops}


def node_status(
    sm: NodeSignalling, spans: Spans, now: float, devices: Devices | None = None
) -> dict[str, Any]:
    """The node's (or, with `devices`, the adapter's) status."""
    tunnels = sorted(sm.tunnels, key=lambda t: (t.self_fqdn, t.peer_fqdn))
    status: dict[str, Any] = {
        "role": "node" if devices is None else "adapter",
        "fqdn": sm.fqdn,
        "registration": _registration(sm),
        "dc": _dc(sm, now),
        "names": _names(sm),
        "tunnels": [tunnel_status(t, sm.handshakes.direction_of(t.ref), now) for t in tunnels],
        "signalling_drops": dict(sm.drops),
        "stage_drops": stage_drops(spans),
    }
    if devices is not None:
        status["devices"] = [device_status(d, now) for d in devices.by_mac.values()]
    return status


def _lease(dhcp: DhcpServer | None, now: float) -> dict[str, Any] | None:
    end = dhcp.lease_end if dhcp is not None else None
    if end is None:
        return None
    infinite = math.isinf(end)
    return {
        "address": dhcp.address if dhcp is not None else None,
        "expires_in_s": None if infinite else round(end - now, 1),
        "valid": now <= end,
    }


def _packed(address: bytes | None) -> str | None:
    return None if not address else str(ipaddress.ip_address(address))


def device_status(device: Device, now: float) -> dict[str, Any]:
    return {
        "name": device.fqdn,
        "mac": mac_text(device.mac),
        "source": device.source,
        "vip": _packed(device.vip),
        "vip6": _packed(device.vip6),
        "lease": _lease(device.dhcp, now),
        "refused": device.refused,
        "packets_out": device.packets_out,
        "bytes_out": device.bytes_out,
        "packets_in": device.packets_in,
        "bytes_in": device.bytes_in,
        "drops": dict(device.drops),
    }
