"""What the Coordinator reports, one dataclass per event (the contract in proto/machine.py).

Each is logged under its `log_name` (from the class name: NodeRegistered -> node_registered)
with its fields as they are; the lab, the demo and the tests read these names and fields
from the DC's JSON log, so a field is held in its logged form (endpoints as "ip:port",
reaches as Reach.value, routes as route names in lower case).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..proto.machine import Event


@dataclass(frozen=True)
class DcEvent(Event):
    """Base of the DC's events."""


@dataclass(frozen=True)
class NodeRegistered(DcEvent):
    fqdn: str
    vip: str
    endpoint: str  # as the DC saw it (the NAT's mapping, if any)
    reach: str  # what the DC knows so far of the node's NAT


@dataclass(frozen=True)
class RegistrationRefused(DcEvent):
    fqdn: str
    endpoint: str
    reason: str  # readable: which admission rule refused it


@dataclass(frozen=True)
class NameAdded(DcEvent):
    """A session took one more name (NAME_ADD: a device behind an adapter)."""

    fqdn: str  # the session's REGISTER name
    name: str
    vip: str


@dataclass(frozen=True)
class Vip6Chosen(DcEvent):
    """A device's own IPv6 address became its name's IPv6 VIP (NAME_ADD `vip6`), or was
    refused (`refused` says why; the name keeps the IPv6 VIP it had)."""

    fqdn: str  # the session's REGISTER name
    name: str
    vip6: str
    refused: str = ""


@dataclass(frozen=True)
class NameRefused(DcEvent):
    fqdn: str
    name: str
    status: str
    reason: str


@dataclass(frozen=True)
class NameRemoved(DcEvent):
    fqdn: str
    name: str


@dataclass(frozen=True)
class NodeDeregistered(DcEvent):
    fqdn: str


@dataclass(frozen=True)
class NodeRevoked(DcEvent):
    """A reload took the node's name off the admission list: its session ended."""

    fqdn: str
    log_level = "warning"


@dataclass(frozen=True)
class NodeNat(DcEvent):
    """A probe showed the node's NAT type (logged when it changes)."""

    fqdn: str
    reach: str
    main: str  # the node's endpoint as the signalling port sees it
    probe: str  # ... and as the probe port sees it
    family: int = 4  # the address family this is about (4 or 6)


@dataclass(frozen=True)
class NodeOnline(DcEvent):
    """A node marked offline was heard from again."""

    fqdn: str


@dataclass(frozen=True)
class NodeOffline(DcEvent):
    fqdn: str
    silent_s: float  # since it was last heard from, rounded to 0.1 s


@dataclass(frozen=True)
class NodeMoved(DcEvent):
    """A node's requests come from a new endpoint (NAT rebinding, or it moved)."""

    fqdn: str
    old: str
    new: str


@dataclass(frozen=True)
class RouteDecided(DcEvent):
    tunnel_id: int
    requester: str
    target: str
    route: str  # "direct", "punch" or "relay"
    why: str  # the decision table's reason
    initiator: str  # the fqdn of the end that sends the first handshake
    requester_reach: str
    target_reach: str
    relay: str | None  # the Relay Server chosen for punch or relay routes
    family: int = 0  # the address family the route was decided in (0: the relay's, none)


@dataclass(frozen=True)
class RouteUpdated(DcEvent):
    """A live tunnel re-directed because an end moved, restarted or came back (7.3)."""

    cause: str  # "moved", "restarted", "back_online"
    tunnel_id: int
    requester: str
    target: str
    route: str
    why: str
    initiator: str
    requester_reach: str
    target_reach: str
    relay: str | None
    family: int = 0  # as in RouteDecided


@dataclass(frozen=True)
class TunnelsDormant(DcEvent):
    """A node went offline: its tunnels wait for it, their other ends were told TUNNEL_GONE."""

    fqdn: str
    tunnels: int
    told: int  # other ends sent TUNNEL_GONE(OFFLINE)


@dataclass(frozen=True)
class NoRoute(DcEvent):
    """The two ends' NATs leave no way to meet and no relay is configured."""

    requester: str
    target: str
    requester_reach: str
    target_reach: str


@dataclass(frozen=True)
class RouteDirectionUnacked(DcEvent):
    """A node never acknowledged the DC's ROUTE_DIRECTION, ROUTE_UPDATE or TUNNEL_GONE."""

    tunnel_id: int
    kind: str = "RouteDirection"


@dataclass(frozen=True)
class NodeRestarted(DcEvent):
    """A node registered with a new boot_id: it restarted and lost its tunnels, which the
    DC re-directs (7.3)."""

    fqdn: str
    tunnels: int  # live tunnels this DC had directed to or from it
