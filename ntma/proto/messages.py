"""NTMobile signalling messages: dataclasses and their body codecs (sans-IO).

The wire layout is specified in docs/protocol.md; this module is its only
implementation. Bodies are plaintext here; packet.py seals them. A message
type's number, class and codec live together in MESSAGE_TYPES, so adding a
message is one entry.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from .buffer import CodecError, Endpoint, Reader, Writer

PUBLIC_KEY_LEN = 32


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
    TUNNEL_REQUEST = 0x20
    TUNNEL_RESPONSE = 0x21
    DATA = 0x30


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
    # Reserved for NAT traversal and relays: PUNCH = 2, RELAY = 3.


class Role(enum.IntEnum):
    INITIATE = 1  # send Tunnel Request to the peer
    RESPOND = 2  # expect the peer's Tunnel Request


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

    def write(self, w: Writer) -> None:
        w.u32(self.tunnel_id).u8(self.route).u8(self.role).text(self.peer_fqdn)
        w.ipv4(self.peer_vip).raw(_check_key(self.peer_public_key)).endpoints(self.peer_endpoints)

    @classmethod
    def read(cls, r: Reader) -> Direction:
        return cls(
            tunnel_id=r.u32(),
            route=_enum(Route, r.u8()),
            role=_enum(Role, r.u8()),
            peer_fqdn=r.text(),
            peer_vip=r.ipv4(),
            peer_public_key=r.raw(PUBLIC_KEY_LEN),
            peer_endpoints=r.endpoints(),
        )


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
)


def _check_key(key: bytes) -> bytes:
    if len(key) != PUBLIC_KEY_LEN:
        raise CodecError(f"public key must be {PUBLIC_KEY_LEN} bytes")
    return key


def _enum(kind: type[enum.IntEnum], value: int):
    try:
        return kind(value)
    except ValueError as exc:
        raise CodecError(f"unknown {kind.__name__} {value}") from exc


# --- body writers and readers, one pair per message ---------------------------------


def _w_register(w: Writer, m: Register) -> None:
    w.u32(m.txid).u64(m.timestamp_ms).text(m.fqdn).endpoints(m.local_endpoints)


def _r_register(r: Reader) -> Register:
    return Register(r.u32(), r.u64(), r.text(), r.endpoints())


def _w_register_ack(w: Writer, m: RegisterAck) -> None:
    w.u32(m.txid).u8(m.status).ipv4(m.vip).u8(m.prefix_len).endpoint(m.observed)
    w.u16(m.keepalive_s).text(m.reason)


def _r_register_ack(r: Reader) -> RegisterAck:
    return RegisterAck(
        r.u32(), _enum(Status, r.u8()), r.ipv4(), r.u8(), r.endpoint(), r.u16(), r.text()
    )


def _w_keepalive(w: Writer, m: Keepalive | Deregister) -> None:
    w.u32(m.txid).u64(m.timestamp_ms)


def _w_keepalive_ack(w: Writer, m: KeepaliveAck) -> None:
    w.u32(m.txid).u8(m.status).endpoint(m.observed)


def _r_keepalive_ack(r: Reader) -> KeepaliveAck:
    return KeepaliveAck(r.u32(), _enum(Status, r.u8()), r.endpoint())


def _w_direction_request(w: Writer, m: DirectionRequest) -> None:
    w.u32(m.txid).u64(m.timestamp_ms).text(m.fqdn)


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
        lambda r: DirectionRequest(r.u32(), r.u64(), r.text()),
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
_TYPE_OF_CLASS = {cls: msg_type for msg_type, (cls, _, _) in MESSAGE_TYPES.items()}


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
