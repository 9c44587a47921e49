"""NTMobile signalling messages: dataclasses and their body codecs (sans-IO).

The wire layout is specified in docs/protocol.md; this module is its only
implementation. Bodies are plaintext here; packet.py seals them. A message
type's number, class and codec live together in MESSAGE_TYPES, so adding a
message is one entry.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass, field

from .buffer import CodecError, Endpoint, Reader, Writer

PUBLIC_KEY_LEN = 32

# Limits on fields a remote sets, checked where they enter (both ways, so whatever
# decodes re-encodes). Generous for real traffic, small enough that nothing built
# from them (a Direction, a refusal's reason, a DNS answer) can overflow its own field.
MAX_NAME_BYTES = 253  # a domain name in text form (RFC 1035: 255 octets on the wire)
MAX_LOCAL_ENDPOINTS = 16  # a node's own addresses in a Register (one per interface); a
#                           Direction adds the mapped one and stays far below 255


class MsgType(enum.IntEnum):
    REGISTER = 0x01
    REGISTER_ACK = 0x02
    KEEPALIVE = 0x03
    KEEPALIVE_ACK = 0x04
    DIRECTION_REQUEST = 0x05
    DIRECTION_RESPONSE = 0x06
    ROUTE_DIRECTION = 0x07
    ROUTE_DIRECTION_ACK = 0x08
    DEREGISTER = 0x09
    DEREGISTER_ACK = 0x0A
    PROBE = 0x0B
    PROBE_ACK = 0x0C
    TUNNEL_REQUEST = 0x20
    TUNNEL_RESPONSE = 0x21
    PUNCH = 0x22
    DATA = 0x30
    RELAY_BIND = 0x40
    RELAY_BOUND = 0x41
    RELAY_ENVELOPE = 0x42  # not sealed: carries a sealed packet through the relay


class Status(enum.IntEnum):
    OK = 0
    NOT_NTM = 1  # name is outside the DC's zone: use ordinary DNS
    UNKNOWN = 2  # name in the zone, no such node
    OFFLINE = 3  # node known but not keeping alive
    NO_ROUTE = 4  # both ends known, no route this DC can direct yet
    REFUSED = 5  # key not admitted for this name
    REREGISTER = 6  # DC does not know this session: register again
    BAD_REQUEST = 7
    POOL_EXHAUSTED = 8


class Route(enum.IntEnum):
    DIRECT = 1  # one end opens a tunnel straight to the other's endpoint
    PUNCH = 2  # both behind endpoint-independent NATs: the responder punches, the
    #            initiator sends Tunnel Requests; falls back to the relay
    RELAY = 3  # through the Relay Server named in the Direction


class Role(enum.IntEnum):
    INITIATE = 1  # send Tunnel Request to the peer
    RESPOND = 2  # expect the peer's Tunnel Request


GRANT_LEN = 4 + 8 + 32 + 32 + 16


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """The Relay Server a tunnel may use, and the DC's grant for it (opaque to nodes)."""

    endpoint: Endpoint
    public_key: bytes  # the RS's static key, so nodes can seal RELAY_BIND to it
    grant: bytes  # GRANT_LEN bytes, verified by the RS (see proto/grant.py)

    def write(self, w: Writer) -> None:
        if len(self.grant) != GRANT_LEN:
            raise CodecError(f"grant must be {GRANT_LEN} bytes")
        w.endpoint(self.endpoint).raw(_check_key(self.public_key)).raw(self.grant)

    @classmethod
    def read(cls, r: Reader) -> RelayInfo:
        return cls(r.endpoint(), r.raw(PUBLIC_KEY_LEN), r.raw(GRANT_LEN))


@dataclass(frozen=True, slots=True)
class Direction:
    """What a node needs to build one tunnel, as decided by the DC."""

    tunnel_id: int  # 32-bit, chosen by the DC; names the tunnel in data headers
    route: Route
    role: Role  # this receiver's role
    peer_fqdn: str
    peer_vip: str
    peer_public_key: bytes  # the peer's static X25519 key, vouched for by the DC
    peer_endpoints: list[Endpoint] = field(default_factory=list)  # most preferred first
    relay: RelayInfo | None = None  # for RELAY, and as PUNCH's fallback

    def write(self, w: Writer) -> None:
        w.u32(self.tunnel_id).u8(self.route).u8(self.role).text(self.peer_fqdn, MAX_NAME_BYTES)
        w.ipv4(self.peer_vip).raw(_check_key(self.peer_public_key)).endpoints(self.peer_endpoints)
        if self.relay is not None:  # optional trailing field
            w.u8(1)
            self.relay.write(w)

    @classmethod
    def read(cls, r: Reader) -> Direction:
        tunnel_id, route, role = r.u32(), _enum(Route, r.u8()), _enum(Role, r.u8())
        fqdn, vip = r.text(MAX_NAME_BYTES), r.ipv4()
        key, endpoints = r.raw(PUBLIC_KEY_LEN), r.endpoints()
        relay = None
        if not r.at_end():
            if r.u8() != 1:
                raise CodecError("unknown optional field in Direction")
            relay = RelayInfo.read(r)
        return cls(tunnel_id, route, role, fqdn, vip, key, endpoints, relay)


@dataclass(frozen=True, slots=True)
class Register:
    txid: int
    timestamp_ms: int  # sender's wall clock; DC refuses stale or reordered messages
    fqdn: str
    local_endpoints: list[Endpoint]  # the node's own view of its address(es)


@dataclass(frozen=True, slots=True)
class RegisterAck:
    txid: int
    status: Status
    vip: str = "0.0.0.0"
    prefix_len: int = 0  # the VIP pool's prefix length
    observed: Endpoint = ("0.0.0.0", 0)  # the node's endpoint as the DC sees it
    keepalive_s: int = 0
    reason: str = ""
    probe: Endpoint | None = None  # where to send PROBE, to learn the NAT's mapping type


@dataclass(frozen=True, slots=True)
class Keepalive:
    txid: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class KeepaliveAck:
    txid: int
    status: Status
    observed: Endpoint = ("0.0.0.0", 0)


@dataclass(frozen=True, slots=True)
class DirectionRequest:
    txid: int
    timestamp_ms: int
    fqdn: str


@dataclass(frozen=True, slots=True)
class DirectionResponse:
    txid: int
    status: Status
    direction: Direction | None = None  # present exactly when status is OK


@dataclass(frozen=True, slots=True)
class RouteDirection:
    txid: int
    direction: Direction


@dataclass(frozen=True, slots=True)
class RouteDirectionAck:
    txid: int
    tunnel_id: int


@dataclass(frozen=True, slots=True)
class Deregister:
    txid: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class DeregisterAck:
    txid: int


@dataclass(frozen=True, slots=True)
class TunnelRequest:
    txid: int
    tunnel_id: int
    timestamp_ms: int
    ephemeral: bytes  # initiator's ephemeral X25519 public key
    vip: str  # initiator's VIP


@dataclass(frozen=True, slots=True)
class TunnelResponse:
    txid: int
    tunnel_id: int
    ephemeral: bytes
    vip: str


@dataclass(frozen=True, slots=True)
class Probe:
    """Node -> the DC's probe port: lets the DC compare the NAT mapping toward a second
    destination with the one its main port sees (same: cone, different: symmetric)."""

    txid: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class ProbeAck:
    txid: int
    observed: Endpoint  # the node's endpoint as the probe port sees it


@dataclass(frozen=True, slots=True)
class Punch:
    """Node -> peer on a PUNCH route: opens the sender's NAT toward the peer. Ignored."""

    tunnel_id: int


@dataclass(frozen=True, slots=True)
class RelayBind:
    """Node -> RS: bind my current endpoint to one side of the granted tunnel."""

    txid: int
    timestamp_ms: int
    grant: bytes


@dataclass(frozen=True, slots=True)
class RelayBound:
    txid: int
    tunnel_id: int
    observed: Endpoint


Message = (
    Register
    | RegisterAck
    | Keepalive
    | KeepaliveAck
    | DirectionRequest
    | DirectionResponse
    | RouteDirection
    | RouteDirectionAck
    | Deregister
    | DeregisterAck
    | TunnelRequest
    | TunnelResponse
    | Probe
    | ProbeAck
    | Punch
    | RelayBind
    | RelayBound
)


def _check_key(key: bytes) -> bytes:
    if len(key) != PUBLIC_KEY_LEN:
        raise CodecError(f"public key must be {PUBLIC_KEY_LEN} bytes")
    return key


def _check_grant(grant: bytes) -> bytes:
    if len(grant) != GRANT_LEN:
        raise CodecError(f"grant must be {GRANT_LEN} bytes")
    return grant


def _enum(kind: type[enum.IntEnum], value: int):
    try:
        return kind(value)
    except ValueError as exc:
        raise CodecError(f"unknown {kind.__name__} {value}") from exc


# --- body writers and readers, one pair per message ---------------------------------


def _w_register(w: Writer, m: Register) -> None:
    w.u32(m.txid).u64(m.timestamp_ms).text(m.fqdn, MAX_NAME_BYTES)
    w.endpoints(m.local_endpoints, MAX_LOCAL_ENDPOINTS)


def _r_register(r: Reader) -> Register:
    return Register(r.u32(), r.u64(), r.text(MAX_NAME_BYTES), r.endpoints(MAX_LOCAL_ENDPOINTS))


def _w_register_ack(w: Writer, m: RegisterAck) -> None:
    w.u32(m.txid).u8(m.status).ipv4(m.vip).u8(m.prefix_len).endpoint(m.observed)
    w.u16(m.keepalive_s).text(m.reason)
    if m.probe is not None:  # optional trailing field
        w.endpoint(m.probe)


def _r_register_ack(r: Reader) -> RegisterAck:
    ack = RegisterAck(
        r.u32(), _enum(Status, r.u8()), r.ipv4(), r.u8(), r.endpoint(), r.u16(), r.text()
    )
    if r.at_end():
        return ack
    return RegisterAck(
        ack.txid,
        ack.status,
        ack.vip,
        ack.prefix_len,
        ack.observed,
        ack.keepalive_s,
        ack.reason,
        r.endpoint(),
    )


def _w_keepalive(w: Writer, m: Keepalive | Deregister | Probe) -> None:
    w.u32(m.txid).u64(m.timestamp_ms)


def _w_keepalive_ack(w: Writer, m: KeepaliveAck) -> None:
    w.u32(m.txid).u8(m.status).endpoint(m.observed)


def _r_keepalive_ack(r: Reader) -> KeepaliveAck:
    return KeepaliveAck(r.u32(), _enum(Status, r.u8()), r.endpoint())


def _w_direction_request(w: Writer, m: DirectionRequest) -> None:
    w.u32(m.txid).u64(m.timestamp_ms).text(m.fqdn, MAX_NAME_BYTES)


def _w_direction_response(w: Writer, m: DirectionResponse) -> None:
    if (m.status == Status.OK) != (m.direction is not None):
        raise CodecError("DirectionResponse carries a direction exactly when status is OK")
    w.u32(m.txid).u8(m.status)
    if m.direction is not None:
        m.direction.write(w)


def _r_direction_response(r: Reader) -> DirectionResponse:
    txid, status = r.u32(), _enum(Status, r.u8())
    direction = Direction.read(r) if status == Status.OK else None
    return DirectionResponse(txid, status, direction)


def _w_route_direction(w: Writer, m: RouteDirection) -> None:
    w.u32(m.txid)
    m.direction.write(w)


def _w_route_direction_ack(w: Writer, m: RouteDirectionAck) -> None:
    w.u32(m.txid).u32(m.tunnel_id)


def _w_tunnel_request(w: Writer, m: TunnelRequest) -> None:
    w.u32(m.txid).u32(m.tunnel_id).u64(m.timestamp_ms).raw(_check_key(m.ephemeral)).ipv4(m.vip)


def _w_tunnel_response(w: Writer, m: TunnelResponse) -> None:
    w.u32(m.txid).u32(m.tunnel_id).raw(_check_key(m.ephemeral)).ipv4(m.vip)


MESSAGE_TYPES: dict[MsgType, tuple[type, object, object]] = {
    MsgType.REGISTER: (Register, _w_register, _r_register),
    MsgType.REGISTER_ACK: (RegisterAck, _w_register_ack, _r_register_ack),
    MsgType.KEEPALIVE: (Keepalive, _w_keepalive, lambda r: Keepalive(r.u32(), r.u64())),
    MsgType.KEEPALIVE_ACK: (KeepaliveAck, _w_keepalive_ack, _r_keepalive_ack),
    MsgType.DIRECTION_REQUEST: (
        DirectionRequest,
        _w_direction_request,
        lambda r: DirectionRequest(r.u32(), r.u64(), r.text(MAX_NAME_BYTES)),
    ),
    MsgType.DIRECTION_RESPONSE: (DirectionResponse, _w_direction_response, _r_direction_response),
    MsgType.ROUTE_DIRECTION: (
        RouteDirection,
        _w_route_direction,
        lambda r: RouteDirection(r.u32(), Direction.read(r)),
    ),
    MsgType.ROUTE_DIRECTION_ACK: (
        RouteDirectionAck,
        _w_route_direction_ack,
        lambda r: RouteDirectionAck(r.u32(), r.u32()),
    ),
    MsgType.DEREGISTER: (Deregister, _w_keepalive, lambda r: Deregister(r.u32(), r.u64())),
    MsgType.DEREGISTER_ACK: (
        DeregisterAck,
        lambda w, m: w.u32(m.txid),
        lambda r: DeregisterAck(r.u32()),
    ),
    MsgType.TUNNEL_REQUEST: (
        TunnelRequest,
        _w_tunnel_request,
        lambda r: TunnelRequest(r.u32(), r.u32(), r.u64(), r.raw(PUBLIC_KEY_LEN), r.ipv4()),
    ),
    MsgType.TUNNEL_RESPONSE: (
        TunnelResponse,
        _w_tunnel_response,
        lambda r: TunnelResponse(r.u32(), r.u32(), r.raw(PUBLIC_KEY_LEN), r.ipv4()),
    ),
}
MESSAGE_TYPES.update(
    {
        MsgType.PROBE: (Probe, _w_keepalive, lambda r: Probe(r.u32(), r.u64())),
        MsgType.PROBE_ACK: (
            ProbeAck,
            lambda w, m: w.u32(m.txid).endpoint(m.observed),
            lambda r: ProbeAck(r.u32(), r.endpoint()),
        ),
        MsgType.PUNCH: (Punch, lambda w, m: w.u32(m.tunnel_id), lambda r: Punch(r.u32())),
        MsgType.RELAY_BIND: (
            RelayBind,
            lambda w, m: w.u32(m.txid).u64(m.timestamp_ms).raw(_check_grant(m.grant)),
            lambda r: RelayBind(r.u32(), r.u64(), r.raw(GRANT_LEN)),
        ),
        MsgType.RELAY_BOUND: (
            RelayBound,
            lambda w, m: w.u32(m.txid).u32(m.tunnel_id).endpoint(m.observed),
            lambda r: RelayBound(r.u32(), r.u32(), r.endpoint()),
        ),
    }
)
_TYPE_OF_CLASS = {cls: msg_type for msg_type, (cls, _, _) in MESSAGE_TYPES.items()}


# --- semantic checks, for the machines where these fields enter ------------------------

VIP_PREFIX_RANGE = range(1, 33)  # an IPv4 pool's prefix; 0 would make every address a VIP


def sendable_endpoint(endpoint: Endpoint) -> bool:
    """An endpoint a node may be told to send to: IPv4 (the family our sockets use), a
    port, and a unicast address (not unspecified, multicast, or in 240/4, which holds the
    limited broadcast). Loopback stays allowed: a lab or a test may run every role on one host."""
    try:
        ip = ipaddress.ip_address(endpoint[0])
    except ValueError:
        return False
    return (
        ip.version == 4
        and 0 < endpoint[1] <= 0xFFFF
        and not (ip.is_unspecified or ip.is_multicast or ip.is_reserved)
    )


def sendable_endpoints(endpoints: list[Endpoint]) -> list[Endpoint]:
    """The endpoints of a Register or a Direction that are worth a datagram, in order,
    without duplicates."""
    return list(dict.fromkeys(ep for ep in endpoints if sendable_endpoint(ep)))


def message_type(msg: Message) -> MsgType:
    return _TYPE_OF_CLASS[type(msg)]


def encode_body(msg: Message) -> bytes:
    """Plaintext body of msg (without the packet header)."""
    _, write, _ = MESSAGE_TYPES[message_type(msg)]
    w = Writer()
    try:
        write(w, msg)  # type: ignore[operator]
    except (struct.error, ValueError, OverflowError, TypeError) as exc:
        raise CodecError(f"cannot encode {type(msg).__name__}: {exc}") from exc
    return w.getvalue()


def decode_body(msg_type: int, body: bytes) -> Message:
    """Parse a plaintext body; raises CodecError on anything malformed."""
    try:
        entry = MESSAGE_TYPES[MsgType(msg_type)]
    except (ValueError, KeyError) as exc:
        raise CodecError(f"unknown signalling type {msg_type:#x}") from exc
    r = Reader(body)
    msg = entry[2](r)  # type: ignore[operator]
    r.expect_end()
    return msg
