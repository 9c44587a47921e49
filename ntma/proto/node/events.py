"""What the node's signalling machine reports to its driver (stages/signalling.py).

Each event logs under `log_name` at `log_level` with `log_fields()`, the same lines the
node has always written. Dropped inputs are not events: they are counted in `drops`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..buffer import Endpoint
from ..fields_v2 import VIP6_NONE, Status
from ..machine import Event
from ..tunnel import Tunnel


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


@dataclass(frozen=True)
class NodeEvent(Event):
    """Base of the node's events."""


@dataclass(frozen=True)
class Registered(NodeEvent):
    vip: str
    prefix_len: int
    observed: Endpoint  # our endpoint as the DC sees it
    behind_nat: bool
    keepalive_s: int
    vip6: str = VIP6_NONE  # our IPv6 VIP, when the DC has an IPv6 pool
    prefix6: int = 0

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "vip": self.vip,
            "prefix_len": self.prefix_len,
            "observed": _ep(self.observed),
            "behind_nat": self.behind_nat,
            "keepalive_s": self.keepalive_s,
        }
        if self.vip6 != VIP6_NONE:
            fields |= {"vip6": self.vip6, "prefix6": self.prefix6}
        return fields


@dataclass(frozen=True)
class NameRegistered(NodeEvent):
    """The DC gave one more of our names (NAME_ADD: a device behind an adapter) its VIP."""

    fqdn: str
    vip: str
    prefix_len: int
    vip6: str = VIP6_NONE


@dataclass(frozen=True)
class NameFailed(NodeEvent):
    log_level: ClassVar[str] = "warning"
    fqdn: str
    status: Status


@dataclass(frozen=True)
class RegistrationFailed(NodeEvent):
    log_name: ClassVar[str] = "registration_refused"
    log_level: ClassVar[str] = "error"
    status: Status
    reason: str  # readable, for the log

    def log_fields(self) -> dict[str, Any]:
        return {"status": self.status.name, "reason": self.reason}


@dataclass(frozen=True)
class DcUnreachable(NodeEvent):
    """The DC did not answer a registration or keep-alive in time."""

    log_level: ClassVar[str] = "warning"
    kind: str  # the request that went unanswered: "register" or "keepalive"

    def log_fields(self) -> dict[str, Any]:
        return {"during": self.kind}


@dataclass(frozen=True)
class TunnelUp(NodeEvent):
    """A tunnel is installed in the TunnelTable (replacing one to the same peer, or not)."""

    tunnel: Tunnel
    replaced: bool

    def log_fields(self) -> dict[str, Any]:
        tunnel = self.tunnel
        return {
            "tunnel": tunnel.tunnel_id,
            "peer": tunnel.peer_fqdn,
            "peer_vip": tunnel.peer_vip,
            "peer_endpoint": _ep(tunnel.peer_endpoint),
            "route": tunnel.route,
            "replaced": self.replaced,
        }


@dataclass(frozen=True)
class PeerGone(NodeEvent):
    """The DC said a tunnel's other end is gone (offline, deregistered, no route): dropped."""

    log_name: ClassVar[str] = "tunnel_gone"
    tunnel_id: int
    peer: str
    reason: str

    def log_fields(self) -> dict[str, Any]:
        return {"tunnel": self.tunnel_id, "peer": self.peer, "reason": self.reason}


@dataclass(frozen=True)
class DirectionResolved(NodeEvent):
    """Outcome for a name asked with request_direction(): OK with the peer VIP once
    the tunnel is up, or the DC's (or a time-out's) status. Only failures are logged."""

    log_name: ClassVar[str] = "direction_failed"
    fqdn: str
    status: Status
    vip: str | None = None
    from_name: str = ""  # which of our names asked (an adapter's device); "": the session's
    vip6: str | None = None  # the peer's IPv6 VIP, when it has one

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"peer": self.fqdn, "status": self.status.name}
        return fields | ({"from_name": self.from_name} if self.from_name else {})


@dataclass(frozen=True)
class RouteFallback(NodeEvent):
    """Hole punching got no answer in time: the tunnel is being built through the relay."""

    tunnel_id: int
    peer: str
    from_route: str
    to_route: str

    def log_fields(self) -> dict[str, Any]:
        return {
            "tunnel": self.tunnel_id,
            "peer": self.peer,
            "from": self.from_route,
            "to": self.to_route,
        }
