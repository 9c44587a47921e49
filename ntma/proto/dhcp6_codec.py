"""DHCPv6 wire format (RFC 8415): the message header, options, the IAs (IA_NA, IA_TA,
IA_PD) with their addresses and prefixes, status codes and DUIDs; parsed and built
(sans-IO). The single-device server that uses it is proto/dhcp6.py.

A client/server message is msg-type (1 byte), transaction-id (3), then options, each
option-code (2), option-len (2) and its value; IA options hold options of their own, and so
do the IAADDR / IAPREFIX options inside them. parse_dhcp6 reads every level, at most
MAX_OPTIONS options at each, and raises CodecError (and nothing else) for anything cut off
or of the wrong length. Relay messages (12, 13) and types it does not know are read no
further than their type: they have no options to the server, which ignores them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .buffer import CodecError

# --- wire constants -------------------------------------------------------------------

SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
CONFIRM = 4
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9
RECONFIGURE = 10
INFORMATION_REQUEST = 11
RELAY_FORW = 12
RELAY_REPL = 13
TYPE_NAMES = {
    SOLICIT: "SOLICIT",
    ADVERTISE: "ADVERTISE",
    REQUEST: "REQUEST",
    CONFIRM: "CONFIRM",
    RENEW: "RENEW",
    REBIND: "REBIND",
    REPLY: "REPLY",
    RELEASE: "RELEASE",
    DECLINE: "DECLINE",
    RECONFIGURE: "RECONFIGURE",
    INFORMATION_REQUEST: "INFORMATION-REQUEST",
    RELAY_FORW: "RELAY-FORW",
    RELAY_REPL: "RELAY-REPL",
}
_WITH_OPTIONS = frozenset(range(SOLICIT, INFORMATION_REQUEST + 1))  # not relays, not unknown

OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IA_TA = 4
OPT_IAADDR = 5
OPT_ORO = 6
OPT_PREFERENCE = 7
OPT_ELAPSED_TIME = 8
OPT_STATUS_CODE = 13
OPT_RAPID_COMMIT = 14
OPT_DNS_SERVERS = 23  # RFC 3646
OPT_DOMAIN_LIST = 24  # RFC 3646
OPT_CLIENT_FQDN = 39  # RFC 4704
OPT_IA_PD = 25
OPT_IAPREFIX = 26
IA_CODES = (OPT_IA_NA, OPT_IA_TA, OPT_IA_PD)

STATUS_SUCCESS = 0
STATUS_UNSPEC_FAIL = 1
STATUS_NO_ADDRS_AVAIL = 2
STATUS_NO_BINDING = 3
STATUS_NOT_ON_LINK = 4
STATUS_USE_MULTICAST = 5
STATUS_NO_PREFIX_AVAIL = 6

DUID_LLT = 1
DUID_LL = 3
HW_ETHERNET = 1
DUID_MAX = 130  # RFC 8415 11.1: type code included
HEADER_LEN = 4
MAX_OPTIONS = 64  # at each level: in the message, in an IA, in an IAADDR/IAPREFIX
INFINITY = 0xFFFF_FFFF

# Fixed lengths checked, and the fixed part of the options that nest others.
_FIXED_LEN = {OPT_PREFERENCE: 1, OPT_ELAPSED_TIME: 2, OPT_RAPID_COMMIT: 0}
_LIST_OF = {OPT_ORO: 2, OPT_DNS_SERVERS: 16}  # lists of whole entries of this size
_IA_HEAD = {OPT_IA_NA: 12, OPT_IA_TA: 4, OPT_IA_PD: 12}  # IAID (4), then T1, T2 (4 + 4)
_IAADDR = struct.Struct("!16sII")  # address, preferred lifetime, valid lifetime
_IAPREFIX = struct.Struct("!IIB16s")  # preferred, valid, prefix length, prefix


# --- parsed messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IaAddress:
    """An IAADDR option (RFC 8415 21.6), or an IAPREFIX (21.22) when prefix_len is set."""

    address: bytes
    """16 bytes: the address, or the prefix."""
    preferred: int
    """Preferred lifetime in seconds (0xFFFFFFFF: infinity)."""
    valid: int
    """Valid lifetime in seconds."""
    prefix_len: int | None = None
    """An IAPREFIX's prefix length; None for an IAADDR."""
    status: int | None = None
    """The Status Code option inside it, if any."""


@dataclass(frozen=True, slots=True)
class Ia:
    """An IA_NA (RFC 8415 21.4), IA_TA (21.5) or IA_PD (21.21) option."""

    code: int
    """OPT_IA_NA, OPT_IA_TA or OPT_IA_PD."""
    iaid: int
    """The client's identifier for this IA."""
    t1: int
    """Renewal time the client suggests (0 for IA_TA, which has none)."""
    t2: int
    """Rebinding time the client suggests (0 for IA_TA)."""
    addresses: tuple[IaAddress, ...]
    """The IAADDRs (IA_NA, IA_TA) or IAPREFIXes (IA_PD) inside, in order."""
    status: int | None = None
    """The Status Code option inside it, if any."""


@dataclass(frozen=True, slots=True)
class Dhcp6Message:
    """One parsed client/server message (either direction)."""

    msg_type: int
    """SOLICIT=1 ... INFORMATION-REQUEST=11; relays and unknown types carry no options here."""
    xid: int
    """The 24-bit transaction id."""
    options: tuple[tuple[int, bytes], ...] = ()
    """Every top-level option, in order (repeats kept), values raw."""
    client_id: bytes | None = None
    """The Client Identifier's DUID."""
    server_id: bytes | None = None
    """The Server Identifier's DUID."""
    ias: tuple[Ia, ...] = ()
    """The IA_NA, IA_TA and IA_PD options, in order."""
    oro: tuple[int, ...] = ()
    """The option codes of the Option Request option, in the client's order."""
    rapid_commit: bool = False
    """The message carries a Rapid Commit option (RFC 8415 21.14)."""
    status: int | None = None
    """The top-level Status Code, if any."""

    def first(self, code: int) -> bytes | None:
        """The value of the first top-level option `code`, or None."""
        return next((value for c, value in self.options if c == code), None)


def parse_options(data: bytes, where: str) -> list[tuple[int, bytes]]:
    """The options filling `data` exactly, at most MAX_OPTIONS of them."""
    out: list[tuple[int, bytes]] = []
    pos, size = 0, len(data)
    while pos < size:
        if len(out) == MAX_OPTIONS:
            raise CodecError(f"more than {MAX_OPTIONS} options in {where}")
        if pos + 4 > size:
            raise CodecError(f"option header cut off in {where}")
        code, length = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + length
        if end > size:
            raise CodecError(f"option {code} in {where} runs past its end")
        out.append((code, data[pos + 4 : end]))
        pos = end
    return out


def _status_of(options: list[tuple[int, bytes]], where: str) -> int | None:
    codes = [value for code, value in options if code == OPT_STATUS_CODE]
    if not codes:
        return None
    if len(codes[0]) < 2:
        raise CodecError(f"status code in {where} shorter than 2 bytes")
    return int.from_bytes(codes[0][:2], "big")


def _parse_address(code: int, value: bytes, where: str) -> IaAddress:
    if code == OPT_IAADDR:
        if len(value) < _IAADDR.size:
            raise CodecError(f"IAADDR in {where} shorter than {_IAADDR.size} bytes")
        address, preferred, valid = _IAADDR.unpack_from(value)
        inner = parse_options(value[_IAADDR.size :], "an IAADDR")
        return IaAddress(address, preferred, valid, None, _status_of(inner, "an IAADDR"))
    if len(value) < _IAPREFIX.size:
        raise CodecError(f"IAPREFIX in {where} shorter than {_IAPREFIX.size} bytes")
    preferred, valid, prefix_len, prefix = _IAPREFIX.unpack_from(value)
    if prefix_len > 128:
        raise CodecError(f"IAPREFIX length {prefix_len} over 128")
    inner = parse_options(value[_IAPREFIX.size :], "an IAPREFIX")
    return IaAddress(prefix, preferred, valid, prefix_len, _status_of(inner, "an IAPREFIX"))


def parse_ia(code: int, value: bytes) -> Ia:
    """An IA option's value: its fixed part and the options inside, each checked."""
    head = _IA_HEAD[code]
    if len(value) < head:
        raise CodecError(f"IA option {code} shorter than {head} bytes")
    iaid = int.from_bytes(value[:4], "big")
    t1, t2 = struct.unpack_from("!II", value, 4) if head == 12 else (0, 0)
    where = f"IA option {code}"
    inner = parse_options(value[head:], where)
    wanted = OPT_IAPREFIX if code == OPT_IA_PD else OPT_IAADDR
    addresses = tuple(_parse_address(c, v, where) for c, v in inner if c == wanted)
    return Ia(code, iaid, t1, t2, addresses, _status_of(inner, where))


def _one_duid(options: list[tuple[int, bytes]], code: int) -> bytes | None:
    values = [value for c, value in options if c == code]
    if not values:
        return None
    if len(values) > 1:
        raise CodecError(f"option {code} (a DUID) appears {len(values)} times")
    if not 3 <= len(values[0]) <= DUID_MAX:
        raise CodecError(f"DUID of {len(values[0])} bytes is not 3..{DUID_MAX}")
    return values[0]


def parse_dhcp6(payload: bytes) -> Dhcp6Message:
    """Decode a client/server DHCPv6 message; CodecError for anything malformed."""
    if len(payload) < HEADER_LEN:
        raise CodecError(f"DHCPv6 message of {len(payload)} bytes is shorter than 4")
    msg_type, xid = payload[0], int.from_bytes(payload[1:4], "big")
    if msg_type not in _WITH_OPTIONS:
        return Dhcp6Message(msg_type, xid)
    options = parse_options(payload[HEADER_LEN:], "the message")
    for code, value in options:
        want = _FIXED_LEN.get(code)
        if want is not None and len(value) != want:
            raise CodecError(f"option {code} has length {len(value)}, expected {want}")
        if len(value) % _LIST_OF.get(code, 1):
            raise CodecError(f"option {code} is not a list of whole entries")
    oro = next((value for code, value in options if code == OPT_ORO), b"")
    return Dhcp6Message(
        msg_type=msg_type,
        xid=xid,
        options=tuple(options),
        client_id=_one_duid(options, OPT_CLIENTID),
        server_id=_one_duid(options, OPT_SERVERID),
        ias=tuple(parse_ia(code, value) for code, value in options if code in IA_CODES),
        oro=struct.unpack(f"!{len(oro) // 2}H", oro),
        rapid_commit=any(code == OPT_RAPID_COMMIT for code, _ in options),
        status=_status_of(options, "the message"),
    )


# --- building ---------------------------------------------------------------------------


def encode_option(code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise CodecError(f"option {code} of {len(value)} bytes is over 65535")
    return struct.pack("!HH", code, len(value)) + value


def encode_options(options: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(encode_option(code, value) for code, value in options)


def build_dhcp6(msg_type: int, xid: int, options: Iterable[tuple[int, bytes]] = ()) -> bytes:
    """A client/server message: header, then `options` in the given order."""
    if not 0 <= msg_type <= 0xFF or not 0 <= xid <= 0xFF_FFFF:
        raise CodecError("message type or transaction id out of range")
    return bytes((msg_type,)) + xid.to_bytes(3, "big") + encode_options(options)


def ia_value(
    code: int, iaid: int, t1: int = 0, t2: int = 0, inner: Iterable[tuple[int, bytes]] = ()
) -> bytes:
    """An IA_NA / IA_PD (IAID, T1, T2) or IA_TA (IAID only) value holding `inner`."""
    head = struct.pack("!III", iaid, t1, t2) if code != OPT_IA_TA else iaid.to_bytes(4, "big")
    return head + encode_options(inner)


def iaaddr_value(address: bytes, preferred: int, valid: int) -> bytes:
    if len(address) != 16:
        raise CodecError("an IAADDR holds a 16-byte address")
    return _IAADDR.pack(address, preferred, valid)


def iaprefix_value(prefix: bytes, prefix_len: int, preferred: int, valid: int) -> bytes:
    return _IAPREFIX.pack(preferred, valid, prefix_len, prefix)


def status_value(code: int, message: str = "") -> bytes:
    """A Status Code value: the code, then a UTF-8 message for the user."""
    return code.to_bytes(2, "big") + message.encode("utf-8")


def duid_ll(mac: bytes) -> bytes:
    """DUID-LL (RFC 8415 11.4) of an Ethernet MAC: type 3, hardware type 1, the MAC."""
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 bytes")
    return struct.pack("!HH", DUID_LL, HW_ETHERNET) + mac
