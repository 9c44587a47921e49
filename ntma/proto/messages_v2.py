"""Protocol v2 signalling messages: dataclasses and their body codecs (sans-IO).

The layouts are docs/protocol.md section 6; field encodings and their checks are in
proto/fields_v2.py. A body is `msg u8` followed by the message's fields in the order of
its table in MESSAGES; there is no other layout code. Rules:

- `decode` raises CodecError (nothing else) on truncation, leftover bytes, unknown types,
  bad enums, counts over limits, bad names and endpoints, non-zero padding, and anything
  that would not encode again to the same bytes (it re-encodes and compares).
- `encode` applies the same checks, so nothing invalid is ever sent.
- A status field splits a body: with a non-OK status every later field is its zero and
  takes zero bytes on the wire (6.2: a refusal says no more than a status). A Direction
  after a status is present exactly when the status is OK.
- Where a body may appear is `kind_of(msg)`: init bodies ride in HANDSHAKE_INIT, response
  bodies in HANDSHAKE_RESP, session messages in SIGNAL; `decode(data, where=...)` refuses a
  body in the wrong place. `reply_max(init type)` is the largest HANDSHAKE_RESP it can get.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .bodies_v2 import (
    DIRECTION,
    REQUESTER,
    TUNNEL_REF,
    Ack,
    DcHello,
    DcWelcome,
    Deregister,
    DirectionRequest,
    DirectionResponse,
    Keepalive,
    KeepaliveAck,
    Message,
    NameAdd,
    NameAddAck,
    NameRemove,
    Probe,
    ProbeAck,
    Register,
    RegisterAck,
    RelayBind,
    RelayBound,
    RelayKeepalive,
    RemoteDirectionRequest,
    RemoteDirectionResponse,
    RouteDirection,
    RouteDirectionAck,
    RouteUpdate,
    RsHello,
    RsWelcome,
    TunnelAccept,
    TunnelClose,
    TunnelClosed,
    TunnelGone,
    TunnelInit,
    Update,
    UpdateAck,
)
from .buffer import CodecError, Reader, Writer
from .fields_v2 import (
    DC_ID,
    ENDPOINT,
    GONE_REASON,
    GRANT,
    NAME,
    OPT_ENDPOINT,
    PREFIX4,
    PREFIX6,
    RELAY_KEEPALIVE_MAX,
    STATUS,
    TUNNEL_ID,
    TXID,
    U16,
    U64,
    UPDATE_ENDPOINTS_MAX,
    VIP4,
    VIP4_NONE,
    VIP6,
    VIP6_NONE,
    WANT,
    Field,
    Fields,
    Status,
    array,
    max_size,
    padding,
    read_fields,
    write_fields,
)
from .handshake import RESP_MIN

PROBE_SIZE = 24  # PROBE's body, padded so PROBE_ACK is never larger (6.3)


class MsgType(enum.IntEnum):
    # 6.1 init bodies (HANDSHAKE_INIT)
    REGISTER = 0x01
    TUNNEL_INIT = 0x02
    RS_HELLO = 0x03
    DC_HELLO = 0x04
    # 6.2 response bodies (HANDSHAKE_RESP)
    REGISTER_ACK = 0x81
    TUNNEL_ACCEPT = 0x82
    RS_WELCOME = 0x83
    DC_WELCOME = 0x84
    # 6.3 session messages (SIGNAL)
    KEEPALIVE = 0x10
    KEEPALIVE_ACK = 0x11
    UPDATE = 0x12
    UPDATE_ACK = 0x13
    PROBE = 0x14
    PROBE_ACK = 0x15
    DIRECTION_REQUEST = 0x16
    DIRECTION_RESPONSE = 0x17
    ROUTE_DIRECTION = 0x18
    ROUTE_DIRECTION_ACK = 0x19
    ROUTE_UPDATE = 0x1A
    TUNNEL_GONE = 0x1B
    TUNNEL_CLOSED = 0x1C
    DEREGISTER = 0x1D
    ACK = 0x1E
    NAME_ADD = 0x1F
    NAME_ADD_ACK = 0x20
    NAME_REMOVE = 0x21
    RELAY_BIND = 0x28
    RELAY_BOUND = 0x29
    RELAY_KEEPALIVE = 0x2A
    TUNNEL_CLOSE = 0x30
    REMOTE_DIRECTION_REQUEST = 0x40
    REMOTE_DIRECTION_RESPONSE = 0x41


class BodyKind(enum.Enum):
    INIT = "init body"  # inside HANDSHAKE_INIT, after the timestamp
    RESPONSE = "response body"  # inside HANDSHAKE_RESP
    SESSION = "session message"  # inside SIGNAL


# --- cross-field rules ------------------------------------------------------------------------


def _check_register_ack(m: RegisterAck) -> None:
    if (m.vip4 == VIP4_NONE) != (m.prefix4 == 0) or (m.vip6 == VIP6_NONE) != (m.prefix6 == 0):
        raise CodecError("a VIP prefix length is 0 exactly when the VIP is none")


# --- the table: one entry per message type ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One message type: its class, where it may appear, and its fields in wire order."""

    cls: type
    kind: BodyKind
    fields: Fields
    """After `msg u8`; (None, field) for padding."""
    check: Callable[[Any], None] | None = None
    """Rules across fields, applied when encoding (so also to everything decoded)."""

    @property
    def status_at(self) -> int | None:
        for i, (attr, _) in enumerate(self.fields):
            if attr == "status":
                return i
        return None

    @property
    def max_body(self) -> int:
        return 1 + max_size(self.fields)


_INIT, _RESP, _SESSION = BodyKind.INIT, BodyKind.RESPONSE, BodyKind.SESSION
_TX: tuple[str, Field] = ("txid", TXID)
_ST: tuple[str, Field] = ("status", STATUS)
_OBSERVED: tuple[str, Field] = ("observed", ENDPOINT)
_TUNNEL: tuple[str, Field] = ("tunnel_id", TUNNEL_ID)

MESSAGES: dict[MsgType, Spec] = {
    MsgType.REGISTER: Spec(Register, _INIT, (_TX, ("boot_id", U64), ("fqdn", NAME))),
    MsgType.TUNNEL_INIT: Spec(
        TunnelInit,
        _INIT,
        (("dc_id", DC_ID), _TUNNEL, ("initiator_name", NAME), ("responder_name", NAME)),
    ),
    MsgType.RS_HELLO: Spec(RsHello, _INIT, (_TX,)),
    MsgType.DC_HELLO: Spec(DcHello, _INIT, (_TX, ("zone", NAME))),
    MsgType.REGISTER_ACK: Spec(
        RegisterAck,
        _RESP,
        (
            _TX,
            _ST,
            ("vip4", VIP4),
            ("prefix4", PREFIX4),
            ("vip6", VIP6),
            ("prefix6", PREFIX6),
            _OBSERVED,
            ("keepalive_s", U16),
            ("probe", OPT_ENDPOINT),
        ),
        _check_register_ack,
    ),
    MsgType.TUNNEL_ACCEPT: Spec(TunnelAccept, _RESP, (("dc_id", DC_ID), _TUNNEL, _ST)),
    MsgType.RS_WELCOME: Spec(RsWelcome, _RESP, (_TX, _ST)),
    MsgType.DC_WELCOME: Spec(DcWelcome, _RESP, (_TX, _ST, ("zone", NAME))),
    MsgType.KEEPALIVE: Spec(Keepalive, _SESSION, (_TX,)),
    MsgType.KEEPALIVE_ACK: Spec(KeepaliveAck, _SESSION, (_TX, _ST, _OBSERVED)),
    MsgType.UPDATE: Spec(
        Update, _SESSION, (_TX, ("local_endpoints", array(ENDPOINT, UPDATE_ENDPOINTS_MAX)))
    ),
    MsgType.UPDATE_ACK: Spec(UpdateAck, _SESSION, (_TX, _ST, _OBSERVED)),
    MsgType.PROBE: Spec(Probe, _SESSION, (_TX, (None, padding(PROBE_SIZE - 1 - 4)))),
    MsgType.PROBE_ACK: Spec(ProbeAck, _SESSION, (_TX, _OBSERVED)),
    MsgType.DIRECTION_REQUEST: Spec(
        DirectionRequest, _SESSION, (_TX, ("from_name", NAME), ("fqdn", NAME), ("want", WANT))
    ),
    MsgType.DIRECTION_RESPONSE: Spec(
        DirectionResponse, _SESSION, (_TX, _ST, ("direction", DIRECTION))
    ),
    MsgType.ROUTE_DIRECTION: Spec(RouteDirection, _SESSION, (_TX, ("direction", DIRECTION))),
    MsgType.ROUTE_DIRECTION_ACK: Spec(RouteDirectionAck, _SESSION, (_TX, _TUNNEL)),
    MsgType.ROUTE_UPDATE: Spec(RouteUpdate, _SESSION, (_TX, ("direction", DIRECTION))),
    MsgType.TUNNEL_GONE: Spec(TunnelGone, _SESSION, (_TX, _TUNNEL, ("reason", GONE_REASON))),
    MsgType.TUNNEL_CLOSED: Spec(TunnelClosed, _SESSION, (_TX, _TUNNEL)),
    MsgType.DEREGISTER: Spec(Deregister, _SESSION, (_TX,)),
    MsgType.ACK: Spec(Ack, _SESSION, (_TX,)),
    MsgType.NAME_ADD: Spec(NameAdd, _SESSION, (_TX, ("fqdn", NAME), ("vip6", VIP6))),
    MsgType.NAME_ADD_ACK: Spec(
        NameAddAck, _SESSION, (_TX, _ST, ("fqdn", NAME), ("vip4", VIP4), ("vip6", VIP6))
    ),
    MsgType.NAME_REMOVE: Spec(NameRemove, _SESSION, (_TX, ("fqdn", NAME))),
    MsgType.RELAY_BIND: Spec(RelayBind, _SESSION, (_TX, ("grant", GRANT))),
    MsgType.RELAY_BOUND: Spec(
        RelayBound, _SESSION, (_TX, _ST, ("dc_id", DC_ID), _TUNNEL, _OBSERVED)
    ),
    MsgType.RELAY_KEEPALIVE: Spec(
        RelayKeepalive, _SESSION, (("tunnels", array(TUNNEL_REF, RELAY_KEEPALIVE_MAX)),)
    ),
    MsgType.TUNNEL_CLOSE: Spec(TunnelClose, _SESSION, (_TUNNEL,)),
    MsgType.REMOTE_DIRECTION_REQUEST: Spec(
        RemoteDirectionRequest,
        _SESSION,
        (_TX, ("requester", REQUESTER), ("fqdn", NAME), ("want", WANT)),
    ),
    MsgType.REMOTE_DIRECTION_RESPONSE: Spec(
        RemoteDirectionResponse, _SESSION, (_TX, _ST, ("direction", DIRECTION))
    ),
}
_TYPE_OF_CLASS = {spec.cls: msg_type for msg_type, spec in MESSAGES.items()}

RESPONSE_OF: dict[MsgType, MsgType] = {
    MsgType.REGISTER: MsgType.REGISTER_ACK,
    MsgType.TUNNEL_INIT: MsgType.TUNNEL_ACCEPT,
    MsgType.RS_HELLO: MsgType.RS_WELCOME,
    MsgType.DC_HELLO: MsgType.DC_WELCOME,
}
"""Each init body and the response body that answers it (OK or refusal)."""


# --- body writers and readers, made from the table --------------------------------------------


def _make_writer(spec: Spec) -> Callable[[Writer, Any], None]:
    split = spec.status_at
    head = spec.fields if split is None else spec.fields[: split + 1]
    tail = () if split is None else spec.fields[split + 1 :]
    tail_zero = bytes(sum(kind.zero_size for _, kind in tail))

    def write(w: Writer, msg: Any) -> None:
        if spec.check is not None:
            spec.check(msg)
        write_fields(w, msg, head)
        if split is None or msg.status == Status.OK:
            write_fields(w, msg, tail)
            return
        for attr, kind in tail:
            if not kind.zero_ok(getattr(msg, attr)):
                raise CodecError(f"a refusal ({msg.status!r}) with a non-zero {attr}")
        w.raw(tail_zero)

    return write


def _make_reader(spec: Spec) -> Callable[[Reader], Any]:
    split = spec.status_at
    head = spec.fields if split is None else spec.fields[: split + 1]
    tail = () if split is None else spec.fields[split + 1 :]
    tail_zero_size = sum(kind.zero_size for _, kind in tail)

    def read(r: Reader) -> Any:
        values = read_fields(r, head)
        if split is None or values["status"] == Status.OK:
            values.update(read_fields(r, tail))
        else:
            if any(r.raw(tail_zero_size)):
                raise CodecError("a refusal with non-zero fields")
            values.update({attr: kind.zero for attr, kind in tail})
        return spec.cls(**values)

    return read


MESSAGE_TYPES: dict[MsgType, tuple[type, Callable, Callable]] = {
    msg_type: (spec.cls, _make_writer(spec), _make_reader(spec))
    for msg_type, spec in MESSAGES.items()
}
"""msg type -> (class, writer, reader), as in proto/messages.py."""


# --- the API ------------------------------------------------------------------------------


def message_type(msg: Message) -> MsgType:
    try:
        return _TYPE_OF_CLASS[type(msg)]
    except KeyError as exc:
        raise CodecError(f"not a v2 message: {type(msg).__name__}") from exc


def _spec(msg_type: int) -> Spec:
    try:
        return MESSAGES[MsgType(msg_type)]
    except ValueError as exc:
        raise CodecError(f"unknown v2 message type {msg_type:#x}") from exc


def kind_of(msg_type: int) -> BodyKind:
    """Where a body of this type may appear; CodecError for an unknown type."""
    return _spec(msg_type).kind


def max_body_size(msg_type: int) -> int:
    """The largest body of this type, `msg` byte included."""
    return _spec(msg_type).max_body


def reply_max(init_type: int) -> int:
    """The largest HANDSHAKE_RESP an init body can get: 94 + its largest response body."""
    if kind_of(init_type) is not BodyKind.INIT:
        raise CodecError(f"{init_type:#x} is not an init body")
    return RESP_MIN + max_body_size(RESPONSE_OF[MsgType(init_type)])


INIT_BODIES = frozenset(t for t, s in MESSAGES.items() if s.kind is BodyKind.INIT)
RESPONSE_BODIES = frozenset(t for t, s in MESSAGES.items() if s.kind is BodyKind.RESPONSE)
SESSION_MESSAGES = frozenset(t for t, s in MESSAGES.items() if s.kind is BodyKind.SESSION)
REPLY_MAX = {t: reply_max(t) for t in INIT_BODIES}


def encode(msg: Message) -> bytes:
    """The body: `msg u8`, then the fields; CodecError for anything invalid."""
    msg_type = message_type(msg)
    w = Writer().u8(msg_type)
    try:
        MESSAGE_TYPES[msg_type][1](w, msg)
    except (struct.error, ValueError, OverflowError, TypeError, AttributeError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"cannot encode {type(msg).__name__}: {exc}") from exc
    return w.getvalue()


def decode(data: bytes | memoryview, where: BodyKind | None = None) -> Message:
    """Parse one body (optionally only of one kind); CodecError on anything malformed."""
    data = bytes(data)
    r = Reader(data)
    spec = _spec(r.u8())
    if where is not None and spec.kind is not where:
        raise CodecError(f"a {spec.kind.value} where a {where.value} belongs")
    msg = MESSAGE_TYPES[_TYPE_OF_CLASS[spec.cls]][2](r)
    r.expect_end()
    if encode(msg) != data:  # belt and braces: whatever decodes encodes to the same bytes
        raise CodecError("body does not re-encode to the same bytes")
    return msg
