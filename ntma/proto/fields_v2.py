"""Protocol v2 field codecs and their validation (docs/protocol.md section 3), sans-IO.

Rules:

- Every field is checked where it enters, on decode *and* on encode, by the same function:
  a name that decodes can be written to DNS, an endpoint that decodes can be sent to, an
  enum that decodes has a meaning. Failures raise CodecError and nothing else.
- A field kind is a `Field`: how it is written, read, how large it can be, and its zero
  (what it holds in a refusal, 6.2). Every zero is encoded as zero bytes; endpoints, names
  and lists take one byte 0 (family 0, length 0, count 0), a missing Direction none.
- Messages (proto/messages_v2.py) are tables of (attribute, Field); records embedded in
  them (Direction, RelayInfo, ...) are Fields made by `record()`.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from .buffer import CodecError, Endpoint, IPAddress, Reader, Writer

KEY_LEN = 32
DC_ID_LEN = 8
GRANT_LEN = 104  # proto/grant.py owns its layout; here it is opaque
TIMESTAMP_LEN = 12
TAI64_BASE = 2**62 + 10
NAME_MAX = 253
LABEL_MAX = 63
ENDPOINT_MAX = 1 + 16 + 2
UPDATE_ENDPOINTS_MAX = 6  # local endpoints in UPDATE
DIRECTION_ENDPOINTS_MAX = 8  # a Direction's peer_endpoints
OBSERVED_ENDPOINTS_MAX = 2  # one per family (a requester's, in REMOTE_DIRECTION_REQUEST)
RELAY_KEEPALIVE_MAX = 64  # tunnels per RELAY_KEEPALIVE; a node with more sends several
VIP4_NONE = "0.0.0.0"
VIP6_NONE = "::"


# --- enums (section 3) -------------------------------------------------------------------


class Status(enum.IntEnum):
    OK = 0
    NOT_NTM = 1  # outside the DC's zone: use ordinary DNS
    UNKNOWN = 2  # in the zone, no such name
    OFFLINE = 3
    NO_ROUTE = 4
    REFUSED = 5
    # 6 was REREGISTER (v1): retired, does not decode
    BAD_REQUEST = 7
    POOL_EXHAUSTED = 8
    NAME_TAKEN = 9
    TOO_MANY_NAMES = 10


class Route(enum.IntEnum):
    DIRECT = 1
    PUNCH = 2
    RELAY = 3


class Role(enum.IntEnum):
    INITIATE = 1
    RESPOND = 2


class Reach(enum.IntEnum):
    PUBLIC = 1
    CONE = 2
    SYMMETRIC = 3
    NAT = 4  # behind a NAT of unknown type


class Want(enum.IntEnum):
    """Bit 0: an IPv4 VIP, bit 1: an IPv6 VIP; at least one, no other bits."""

    V4 = 1
    V6 = 2
    BOTH = 3


class GoneReason(enum.IntEnum):
    RESTARTED = 1
    OFFLINE = 2
    DEREGISTERED = 3
    NO_ROUTE = 4  # after a move or restart the two ends can no longer meet (no relay)


def check_enum(kind: type[enum.IntEnum], value: object) -> enum.IntEnum:
    try:
        return kind(value)
    except (ValueError, TypeError) as exc:
        raise CodecError(f"unknown {kind.__name__} {value!r}") from exc


# --- the Field table entry -----------------------------------------------------------------


def _equal_to(zero: Any) -> Callable[[Any], bool]:
    return lambda value: value == zero


@dataclass(frozen=True, slots=True)
class Field:
    """How one kind of field is written, read and sized."""

    name: str
    """For error messages."""
    write: Callable[[Writer, Any], object]
    """Validates, then appends; raises CodecError."""
    read: Callable[[Reader], Any]
    """Pulls and validates; raises CodecError."""
    max_size: int
    """The most bytes the field can take."""
    zero: Any = None
    """The field's value in a refusal (the fields after a non-OK status)."""
    zero_size: int = 0
    """Bytes the zero takes on the wire (all of them zero)."""
    is_zero: Callable[[Any], bool] | None = None
    """Whether a value is the zero; default: equal to `zero`."""

    def zero_ok(self, value: Any) -> bool:
        return (self.is_zero or _equal_to(self.zero))(value)


def _uint(name: str, size: int, *, nonzero: bool = False, limit: int | None = None) -> Field:
    top = (1 << (8 * size)) - 1 if limit is None else limit

    def check(value: int) -> int:
        if not isinstance(value, int) or not (1 if nonzero else 0) <= value <= top:
            raise CodecError(f"{name} {value!r} out of range")
        return value

    return Field(
        name,
        lambda w, v: w.raw(check(v).to_bytes(size, "big")),
        lambda r: check(int.from_bytes(r.raw(size), "big")),
        size,
        0,
        size,
    )


U16 = _uint("u16", 2)
U32 = _uint("u32", 4)
U64 = _uint("u64", 8)
TXID = _uint("txid", 4)
TUNNEL_ID = _uint("tunnel_id", 8, nonzero=True)  # never 0 (6.3)
PREFIX4 = _uint("prefix4", 1, limit=32)
PREFIX6 = _uint("prefix6", 1, limit=128)


def _enum_field(kind: type[enum.IntEnum]) -> Field:
    return Field(
        kind.__name__,
        lambda w, v: w.u8(check_enum(kind, v)),
        lambda r: check_enum(kind, r.u8()),
        1,
        0,
        1,
    )


STATUS = _enum_field(Status)
ROUTE = _enum_field(Route)
ROLE = _enum_field(Role)
REACH = _enum_field(Reach)
WANT = _enum_field(Want)
GONE_REASON = _enum_field(GoneReason)


def _fixed(name: str, size: int) -> Field:
    def check(value: bytes) -> bytes:
        if not isinstance(value, bytes) or len(value) != size:
            raise CodecError(f"{name} must be {size} bytes")
        return value

    return Field(name, lambda w, v: w.raw(check(v)), lambda r: r.raw(size), size, bytes(size), size)


KEY = _fixed("key", KEY_LEN)
DC_ID = _fixed("dc_id", DC_ID_LEN)
GRANT = _fixed("grant", GRANT_LEN)


def dc_id_of(dc_public_key: bytes) -> bytes:
    """SHA-256(the DC's static public key)[0:8]."""
    return sha256(dc_public_key).digest()[:DC_ID_LEN]


def padding(size: int) -> Field:
    """Zero bytes with no attribute (PROBE's padding); non-zero padding is malformed."""

    def read(r: Reader) -> None:
        if any(r.raw(size)):
            raise CodecError("non-zero padding")

    return Field(f"padding[{size}]", lambda w, _v: w.raw(bytes(size)), read, size, None, size)


# --- timestamps -----------------------------------------------------------------------------


def check_timestamp(stamp: bytes) -> bytes:
    """A 12-byte TAI64N label: seconds at or after the Unix epoch, nanoseconds < 10^9."""
    if not isinstance(stamp, bytes) or len(stamp) != TIMESTAMP_LEN:
        raise CodecError(f"timestamp must be {TIMESTAMP_LEN} bytes")
    seconds, nanos = int.from_bytes(stamp[:8], "big"), int.from_bytes(stamp[8:], "big")
    if seconds < TAI64_BASE or seconds >= 2**63 or nanos >= 10**9:
        raise CodecError("timestamp is not a TAI64N label after 1970")
    return stamp


TIMESTAMP = Field(
    "timestamp",
    lambda w, v: w.raw(check_timestamp(v)),
    lambda r: check_timestamp(r.raw(TIMESTAMP_LEN)),
    TIMESTAMP_LEN,
)


# --- names ----------------------------------------------------------------------------------

_LABEL = re.compile(rb"[a-z0-9-]{1,63}")


def check_name(name: str | bytes) -> str:
    """An FQDN as v2 sends it: <= 253 bytes, labels 1..63 of a-z 0-9 -, no trailing dot."""
    try:
        raw = name.encode("ascii") if isinstance(name, str) else bytes(name)
    except (UnicodeEncodeError, TypeError) as exc:
        raise CodecError("name is not ASCII") from exc
    if not 1 <= len(raw) <= NAME_MAX:
        raise CodecError(f"name of {len(raw)} bytes (1 to {NAME_MAX})")
    if not all(_LABEL.fullmatch(label) for label in raw.split(b".")):
        raise CodecError("name label empty, over 63 bytes, or not a-z 0-9 -")
    return raw.decode("ascii")


def _write_name(w: Writer, name: str) -> None:
    raw = check_name(name).encode("ascii")
    w.u8(len(raw)).raw(raw)


NAME = Field(
    "name",
    _write_name,
    lambda r: check_name(r.raw(r.u8())),
    1 + NAME_MAX,
    "",
    1,
)


# --- addresses and endpoints -----------------------------------------------------------------

# Not unicast (section 3), as integer tests: IPv4 0/8, 127/8, 224/4 (multicast) and 240/4
# (with 255.255.255.255); IPv6 ::, ::1, ff00::/8, fe80::/10 and ::ffff:0:0/96 (IPv4-mapped).
_BAD4_FIRST_OCTET = frozenset([0, 127, *range(224, 256)])


def _parse_ip(address: str | IPAddress) -> IPAddress:
    if not isinstance(address, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise CodecError(f"not an IP address: {address!r}")
    return _parse_ip_cached(address)


@functools.lru_cache(maxsize=4096)  # bounded; string parsing is most of an endpoint's cost
def _parse_ip_cached(address: str | IPAddress) -> IPAddress:
    try:
        ip = ipaddress.ip_address(address)
    except (ValueError, TypeError) as exc:
        raise CodecError(f"not an IP address: {address!r}") from exc
    if ip.version == 6 and ip.scope_id is not None:
        raise CodecError("IPv6 address with a scope")
    return ip


def is_unicast(ip: IPAddress) -> bool:
    """Not unspecified, loopback, multicast, broadcast, 0/8, 240/4, fe80::/10, IPv4-mapped."""
    x = int(ip)
    if ip.version == 4:
        return x >> 24 not in _BAD4_FIRST_OCTET
    return x > 1 and x >> 120 != 0xFF and x >> 118 != 0x3FA and x >> 32 != 0xFFFF


def normalize_address(address: str | IPAddress) -> str:
    """An address as a socket reports it, IPv4-mapped IPv6 turned into IPv4 (section 3)."""
    ip = _parse_ip(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def normalize_endpoint(sockaddr: tuple) -> Endpoint:
    """(host, port[, flowinfo, scope]) from a socket -> a normalised (address, port)."""
    return (normalize_address(sockaddr[0]), sockaddr[1])


def check_endpoint(endpoint: Endpoint) -> tuple[IPAddress, int]:
    """Family 4 or 6, port not 0, a unicast address; returns the parsed pair."""
    try:
        address, port = endpoint
    except (TypeError, ValueError) as exc:
        raise CodecError(f"not an endpoint: {endpoint!r}") from exc
    return _check_ip_port(_parse_ip(address), port)


def _check_ip_port(ip: IPAddress, port: int) -> tuple[IPAddress, int]:
    if not isinstance(port, int) or not 1 <= port <= 0xFFFF:
        raise CodecError(f"endpoint port {port!r} (1 to 65535)")
    if not is_unicast(ip):
        raise CodecError(f"endpoint address {ip} is not unicast")
    return ip, port


def _write_endpoint(w: Writer, endpoint: Endpoint) -> None:
    ip, port = check_endpoint(endpoint)
    w.u8(ip.version).raw(ip.packed).u16(port)


def _read_address(r: Reader, family: int) -> IPAddress:
    if family == 4:
        return ipaddress.IPv4Address(r.raw(4))
    if family == 6:
        return ipaddress.IPv6Address(r.raw(16))
    raise CodecError(f"unknown address family {family}")


def _read_endpoint_of(r: Reader, family: int) -> Endpoint:
    ip, port = _check_ip_port(_read_address(r, family), r.u16())
    return (str(ip), port)


def _write_opt_endpoint(w: Writer, endpoint: Endpoint | None) -> None:
    if endpoint is None:
        w.u8(0)
    else:
        _write_endpoint(w, endpoint)


def _read_opt_endpoint(r: Reader) -> Endpoint | None:
    family = r.u8()
    return None if family == 0 else _read_endpoint_of(r, family)


ENDPOINT = Field(
    "endpoint",
    _write_endpoint,
    lambda r: _read_endpoint_of(r, r.u8()),
    ENDPOINT_MAX,
    None,  # a refusal's endpoint is family 0, as opt_endpoint's none
    1,
)
OPT_ENDPOINT = Field("opt_endpoint", _write_opt_endpoint, _read_opt_endpoint, ENDPOINT_MAX, None, 1)


def _vip(version: int, none: str) -> Field:
    size = 4 if version == 4 else 16

    def check(address: str) -> str:
        ip = _parse_ip(address)
        if ip.version != version:
            raise CodecError(f"vip{version} {address!r} of the wrong family")
        if not ip.is_unspecified and not is_unicast(ip):
            raise CodecError(f"vip{version} {ip} is not unicast")
        return str(ip)

    def write(w: Writer, address: str) -> None:
        w.raw(_parse_ip(check(address)).packed)

    def read(r: Reader) -> str:
        return check(str(_read_address(r, version)))

    return Field(f"vip{version}", write, read, size, none, size)


VIP4 = _vip(4, VIP4_NONE)  # 0.0.0.0: none
VIP6 = _vip(6, VIP6_NONE)  # ::: none


def array(item: Field, limit: int) -> Field:
    """u8 count, then that many items; more than `limit` is malformed. Values are tuples."""

    def write(w: Writer, items: Sequence[Any]) -> None:
        if len(items) > limit:
            raise CodecError(f"{len(items)} {item.name}s (at most {limit})")
        w.u8(len(items))
        for value in items:
            item.write(w, value)

    def read(r: Reader) -> tuple:
        count = r.u8()
        if count > limit:
            raise CodecError(f"{count} {item.name}s (at most {limit})")
        return tuple(item.read(r) for _ in range(count))

    return Field(
        f"{item.name}s", write, read, 1 + limit * item.max_size, (), 1, lambda v: len(v) == 0
    )


def _one_per_family(endpoints: Sequence[Endpoint]) -> None:
    families = [check_endpoint(endpoint)[0].version for endpoint in endpoints]
    if len(set(families)) != len(families):
        raise CodecError("two observed endpoints of one family")


def _observed(inner: Field) -> Field:
    def write(w: Writer, endpoints: Sequence[Endpoint]) -> None:
        _one_per_family(endpoints)
        inner.write(w, endpoints)

    def read(r: Reader) -> tuple:
        endpoints = inner.read(r)
        _one_per_family(endpoints)
        return endpoints

    largest = 1 + (1 + 4 + 2) + (1 + 16 + 2)  # one IPv4 and one IPv6 endpoint
    return Field("observed endpoints", write, read, largest, (), 1, lambda v: len(v) == 0)


def optional(item: Field) -> Field:
    """u8 present (0 or 1), then the item iff 1; None when absent."""

    def write(w: Writer, value: Any) -> None:
        if value is None:
            w.u8(0)
        else:
            w.u8(1)
            item.write(w, value)

    def read(r: Reader) -> Any:
        present = r.u8()
        if present > 1:
            raise CodecError(f"{item.name} present flag {present}")
        return item.read(r) if present else None

    return Field(f"optional {item.name}", write, read, 1 + item.max_size, None, 1)


OBSERVED_ENDPOINTS = _observed(array(ENDPOINT, OBSERVED_ENDPOINTS_MAX))
"""At most one endpoint per family (a session has one endpoint per family)."""


# --- records: a dataclass as a table of fields ---------------------------------------------

Fields = tuple[tuple[str | None, Field], ...]


def write_fields(w: Writer, obj: object, fields: Fields) -> None:
    for attr, kind in fields:
        kind.write(w, None if attr is None else getattr(obj, attr))


def read_fields(r: Reader, fields: Fields) -> dict[str, Any]:
    values = {}
    for attr, kind in fields:
        value = kind.read(r)
        if attr is not None:
            values[attr] = value
    return values


def max_size(fields: Fields) -> int:
    return sum(kind.max_size for _, kind in fields)


def record(cls: type, fields: Fields, check: Callable[[Any], None] | None = None) -> Field:
    """A Field for an embedded dataclass; `check` adds rules across its fields."""

    def write(w: Writer, obj: Any) -> None:
        if not isinstance(obj, cls):
            raise CodecError(f"expected a {cls.__name__}, got {type(obj).__name__}")
        if check is not None:
            check(obj)
        write_fields(w, obj, fields)

    def read(r: Reader) -> Any:
        obj = cls(**read_fields(r, fields))
        if check is not None:
            check(obj)
        return obj

    return Field(cls.__name__, write, read, max_size(fields), None, 0)
