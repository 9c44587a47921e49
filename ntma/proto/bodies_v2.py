"""Protocol v2 signalling messages as dataclasses (docs/protocol.md section 6).

The codecs and the table of layouts are in proto/messages_v2.py; the field encoders in
proto/fields_v2.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from .buffer import CodecError, Endpoint
from .fields_v2 import (
    DC_ID,
    DIRECTION_ENDPOINTS_MAX,
    ENDPOINT,
    GRANT,
    KEY,
    NAME,
    OBSERVED_ENDPOINTS,
    REACH,
    ROLE,
    ROUTE,
    TUNNEL_ID,
    VIP4,
    VIP4_NONE,
    VIP6,
    VIP6_NONE,
    GoneReason,
    Reach,
    Role,
    Route,
    Status,
    Want,
    array,
    optional,
    record,
)

# --- embedded records ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """The Relay Server a tunnel may use, and the DC's grant for it."""

    endpoint: Endpoint
    """The RS's endpoint."""
    public_key: bytes
    """The RS's static key (32 bytes): the node's RS_HELLO is made to it."""
    grant: bytes
    """104 bytes, opaque to nodes; proto/grant.py makes and checks it."""


@dataclass(frozen=True, slots=True)
class Direction:
    """What a node needs to build one tunnel, as the deciding DC directs it."""

    dc_id: bytes
    """8 bytes: the deciding DC."""
    tunnel_id: int
    """u64, never 0; (dc_id, tunnel_id) names the tunnel."""
    route: Route
    role: Role
    """This receiver's role."""
    self_name: str
    """Which of the receiver's names the tunnel is for."""
    peer_name: str
    peer_vip4: str = VIP4_NONE
    peer_vip6: str = VIP6_NONE
    peer_key: bytes = bytes(32)
    """The peer's static key, vouched for by the DC."""
    peer_endpoints: tuple[Endpoint, ...] = ()
    """At most 8: observed per family first, then (same NAT only) local ones."""
    relay: RelayInfo | None = None
    """Required for RELAY, PUNCH's fallback otherwise."""


@dataclass(frozen=True, slots=True)
class Requester:
    """The requesting node, as its DC describes it to another DC (issue 15)."""

    name: str
    key: bytes
    vip4: str = VIP4_NONE
    vip6: str = VIP6_NONE
    reach: Reach = Reach.PUBLIC
    observed: tuple[Endpoint, ...] = ()
    """Its observed endpoints, at most one per family."""


@dataclass(frozen=True, slots=True)
class TunnelRef:
    """(dc_id, tunnel_id): a tunnel, as RELAY_KEEPALIVE lists them."""

    dc_id: bytes
    tunnel_id: int


def _check_direction(d: Direction) -> None:
    if d.route == Route.RELAY and d.relay is None:
        raise CodecError("a RELAY Direction without a relay")


RELAY_INFO = record(RelayInfo, (("endpoint", ENDPOINT), ("public_key", KEY), ("grant", GRANT)))
DIRECTION = record(
    Direction,
    (
        ("dc_id", DC_ID),
        ("tunnel_id", TUNNEL_ID),
        ("route", ROUTE),
        ("role", ROLE),
        ("self_name", NAME),
        ("peer_name", NAME),
        ("peer_vip4", VIP4),
        ("peer_vip6", VIP6),
        ("peer_key", KEY),
        ("peer_endpoints", array(ENDPOINT, DIRECTION_ENDPOINTS_MAX)),
        ("relay", optional(RELAY_INFO)),
    ),
    _check_direction,
)


REQUESTER = record(
    Requester,
    (
        ("name", NAME),
        ("key", KEY),
        ("vip4", VIP4),
        ("vip6", VIP6),
        ("reach", REACH),
        ("observed", OBSERVED_ENDPOINTS),
    ),
)
TUNNEL_REF = record(TunnelRef, (("dc_id", DC_ID), ("tunnel_id", TUNNEL_ID)))


# --- 6.1 init bodies -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    txid: int
    boot_id: int
    """u64, random per process start: a new one tells the DC the node restarted."""
    fqdn: str


@dataclass(frozen=True, slots=True)
class TunnelInit:
    dc_id: bytes
    tunnel_id: int
    initiator_name: str
    responder_name: str


@dataclass(frozen=True, slots=True)
class RsHello:
    txid: int


@dataclass(frozen=True, slots=True)
class DcHello:
    """*(later: issue 15)*"""

    txid: int
    zone: str


# --- 6.2 response bodies (a refusal: non-OK status, the later fields zero) -----------------


@dataclass(frozen=True, slots=True)
class RegisterAck:
    txid: int
    status: Status
    vip4: str = VIP4_NONE
    prefix4: int = 0
    """The IPv4 VIP pool's prefix length: 0 exactly when vip4 is none."""
    vip6: str = VIP6_NONE
    prefix6: int = 0
    observed: Endpoint | None = None
    """The node's endpoint as the DC sees it; None only in a refusal."""
    keepalive_s: int = 0
    probe: Endpoint | None = None
    """Where to send PROBE (the DC's probe port), if it has one."""


@dataclass(frozen=True, slots=True)
class TunnelAccept:
    dc_id: bytes
    """dc_id and tunnel_id echo the TUNNEL_INIT, also in a refusal."""
    tunnel_id: int
    status: Status


@dataclass(frozen=True, slots=True)
class RsWelcome:
    txid: int
    status: Status


@dataclass(frozen=True, slots=True)
class DcWelcome:
    """*(later)*"""

    txid: int
    status: Status
    zone: str = ""
    """Empty only in a refusal."""


# --- 6.3 session messages --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keepalive:
    txid: int


@dataclass(frozen=True, slots=True)
class KeepaliveAck:
    txid: int
    status: Status
    observed: Endpoint | None = None
    """None only with a non-OK status."""


@dataclass(frozen=True, slots=True)
class Update:
    txid: int
    local_endpoints: tuple[Endpoint, ...] = ()
    """At most 6."""


@dataclass(frozen=True, slots=True)
class UpdateAck:
    txid: int
    status: Status
    observed: Endpoint | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """To the DC's probe port; zero-padded to PROBE_SIZE bytes so PROBE_ACK is no larger."""

    txid: int


@dataclass(frozen=True, slots=True)
class ProbeAck:
    txid: int
    observed: Endpoint
    """The node's endpoint as the probe port sees it."""


@dataclass(frozen=True, slots=True)
class DirectionRequest:
    txid: int
    from_name: str
    """One of the session's names: the requesting end."""
    fqdn: str
    want: Want = Want.V4


@dataclass(frozen=True, slots=True)
class DirectionResponse:
    txid: int
    status: Status
    direction: Direction | None = None
    """Present exactly when status is OK."""


@dataclass(frozen=True, slots=True)
class RouteDirection:
    txid: int
    direction: Direction


@dataclass(frozen=True, slots=True)
class RouteDirectionAck:
    txid: int
    tunnel_id: int


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    """Same tunnel_id, new route: handshake again on it."""

    txid: int
    direction: Direction


@dataclass(frozen=True, slots=True)
class TunnelGone:
    txid: int
    tunnel_id: int
    reason: GoneReason


@dataclass(frozen=True, slots=True)
class TunnelClosed:
    """The node dropped the tunnel."""

    txid: int
    tunnel_id: int


@dataclass(frozen=True, slots=True)
class Deregister:
    txid: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Answers ROUTE_UPDATE, TUNNEL_GONE, TUNNEL_CLOSED and DEREGISTER."""

    txid: int


@dataclass(frozen=True, slots=True)
class NameAdd:
    txid: int
    fqdn: str
    vip6: str = VIP6_NONE
    """The IPv6 address a device chose for itself in the adapter's link prefix (SLAAC), for
    the DC to keep as the name's IPv6 VIP; `::` keeps the one the DC has."""


@dataclass(frozen=True, slots=True)
class NameAddAck:
    """*(later)*"""

    txid: int
    status: Status
    fqdn: str = ""
    vip4: str = VIP4_NONE
    vip6: str = VIP6_NONE


@dataclass(frozen=True, slots=True)
class NameRemove:
    """*(later)*"""

    txid: int
    fqdn: str


@dataclass(frozen=True, slots=True)
class RelayBind:
    txid: int
    grant: bytes
    """104 bytes, from the Direction's RelayInfo."""


@dataclass(frozen=True, slots=True)
class RelayBound:
    txid: int
    status: Status
    dc_id: bytes = bytes(8)
    tunnel_id: int = 0
    """Never 0 when OK."""
    observed: Endpoint | None = None


@dataclass(frozen=True, slots=True)
class RelayKeepalive:
    """Every 10 s, the node's relayed tunnels at this RS (at most 64 per message)."""

    tunnels: tuple[TunnelRef, ...] = ()


@dataclass(frozen=True, slots=True)
class TunnelClose:
    """In the tunnel's own session."""

    tunnel_id: int


@dataclass(frozen=True, slots=True)
class RemoteDirectionRequest:
    """*(later: issue 15)*"""

    txid: int
    requester: Requester
    fqdn: str
    want: Want = Want.V4


@dataclass(frozen=True, slots=True)
class RemoteDirectionResponse:
    """*(later)*"""

    txid: int
    status: Status
    direction: Direction | None = None
    """For the requester; present exactly when status is OK."""


Message = (
    Register
    | TunnelInit
    | RsHello
    | DcHello
    | RegisterAck
    | TunnelAccept
    | RsWelcome
    | DcWelcome
    | Keepalive
    | KeepaliveAck
    | Update
    | UpdateAck
    | Probe
    | ProbeAck
    | DirectionRequest
    | DirectionResponse
    | RouteDirection
    | RouteDirectionAck
    | RouteUpdate
    | TunnelGone
    | TunnelClosed
    | Deregister
    | Ack
    | NameAdd
    | NameAddAck
    | NameRemove
    | RelayBind
    | RelayBound
    | RelayKeepalive
    | TunnelClose
    | RemoteDirectionRequest
    | RemoteDirectionResponse
)
