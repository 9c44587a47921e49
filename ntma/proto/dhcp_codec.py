"""DHCP wire format (RFC 2131 / RFC 2132): BOOTP fields and options, parsed and built
(sans-IO). The single-client server that uses it is proto/dhcp.py."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .buffer import CodecError, Reader, Writer

# --- wire constants -------------------------------------------------------------------

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
MAGIC_COOKIE = bytes((99, 130, 83, 99))
FLAG_BROADCAST = 0x8000
HEADER_LEN = 236  # fixed BOOTP fields, up to and excluding the magic cookie
MIN_LEN = HEADER_LEN + len(MAGIC_COOKIE)
BOOTP_MIN_LEN = 300  # some clients drop shorter replies
SNAME_LEN = 64
FILE_LEN = 128
INFINITE_LEASE = 0xFFFFFFFF

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {
    DISCOVER: "DISCOVER",
    OFFER: "OFFER",
    REQUEST: "REQUEST",
    DECLINE: "DECLINE",
    ACK: "ACK",
    NAK: "NAK",
    RELEASE: "RELEASE",
    INFORM: "INFORM",
}

OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN = 15
OPT_MTU = 26
OPT_BROADCAST = 28
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_REQUEST = 55
OPT_MAX_SIZE = 57
OPT_T1 = 58
OPT_T2 = 59
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_CLIENT_FQDN = 81  # RFC 4702
OPT_END = 255

# Options whose length the parser checks (exact length, or a multiple for address lists).
_FIXED_LEN = {
    OPT_SUBNET_MASK: 4,
    OPT_MTU: 2,
    OPT_BROADCAST: 4,
    OPT_REQUESTED_IP: 4,
    OPT_LEASE_TIME: 4,
    OPT_OVERLOAD: 1,
    OPT_MESSAGE_TYPE: 1,
    OPT_SERVER_ID: 4,
    OPT_MAX_SIZE: 2,
    OPT_T1: 4,
    OPT_T2: 4,
}
_ADDRESS_LIST = (OPT_ROUTER, OPT_DNS)
ZERO_IP = "0.0.0.0"
BROADCAST_IP = "255.255.255.255"
BROADCAST_MAC = b"\xff" * 6


# --- codec ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DhcpMessage:
    """One parsed BOOTP/DHCP message (either direction)."""

    op: int
    """1 BOOTREQUEST (client to server), 2 BOOTREPLY."""
    htype: int
    """Hardware type; always 1 (Ethernet) after parsing."""
    hlen: int
    """Hardware address length; always 6 after parsing."""
    xid: int
    """Transaction id chosen by the client."""
    secs: int
    """Seconds since the client began acquiring or renewing."""
    flags: int
    """0x8000 is the broadcast flag; other bits are reserved."""
    ciaddr: str
    """Client address, set only when the client already owns it (BOUND/RENEW/REBIND)."""
    yiaddr: str
    """'Your' address: the one the server gives."""
    siaddr: str
    """Next server for bootstrap."""
    giaddr: str
    """Relay agent address."""
    chaddr: bytes
    """The client's 6-byte MAC address (the rest of the 16-byte field is dropped)."""
    options: dict[int, bytes]
    """Options in order of first appearance; repeated codes concatenated (RFC 3396)."""
    message_type: int
    """Option 53: DISCOVER=1 ... INFORM=8."""
    hops: int = 0
    """Relay hop count."""
    sname: bytes = b""
    """Raw 64-byte server name field (holds options when overloaded)."""
    file: bytes = b""
    """Raw 128-byte boot file field (holds options when overloaded)."""

    def ip_option(self, code: int) -> str | None:
        """An option holding one IPv4 address, as text; None when absent."""
        value = self.options.get(code)
        return None if value is None else str(ipaddress.IPv4Address(value))

    @property
    def requested_ip(self) -> str | None:
        """Option 50."""
        return self.ip_option(OPT_REQUESTED_IP)

    @property
    def server_id(self) -> str | None:
        """Option 54."""
        return self.ip_option(OPT_SERVER_ID)

    @property
    def param_request_list(self) -> bytes:
        """Option 55, the codes the client asks for, in its order of preference."""
        return self.options.get(OPT_PARAM_REQUEST, b"")

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)


def _parse_option_area(data: bytes, into: dict[int, bytearray], where: str) -> None:
    """Parse pad/end/TLV options of one area; the area must hold an end option."""
    pos = 0
    size = len(data)
    while pos < size:
        code = data[pos]
        if code == OPT_PAD:
            pos += 1
            continue
        if code == OPT_END:
            return
        if pos + 1 >= size:
            raise CodecError(f"option {code} in {where} has no length")
        end = pos + 2 + data[pos + 1]
        if end > size:
            raise CodecError(f"option {code} in {where} overflows the message")
        into.setdefault(code, bytearray()).extend(data[pos + 2 : end])
        pos = end
    raise CodecError(f"options in {where} lack the end option")


def _check_lengths(options: Mapping[int, bytes]) -> None:
    for code, value in options.items():
        want = _FIXED_LEN.get(code)
        if want is not None and len(value) != want:
            raise CodecError(f"option {code} has length {len(value)}, expected {want}")
        if code in _ADDRESS_LIST and (not value or len(value) % 4):
            raise CodecError(f"option {code} is not a list of IPv4 addresses")
    client_id = options.get(OPT_CLIENT_ID)
    if client_id is not None and len(client_id) < 2:
        raise CodecError("client identifier shorter than 2 bytes")


def _parse_options(body: bytes, sname: bytes, file: bytes) -> dict[int, bytes]:
    collected: dict[int, bytearray] = {}
    _parse_option_area(body, collected, "options")
    overload = collected.get(OPT_OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise CodecError("bad option overload value")
        # RFC 2131 4.1: options, then file, then sname.
        if overload[0] & 1:
            _parse_option_area(file, collected, "file")
        if overload[0] & 2:
            _parse_option_area(sname, collected, "sname")
    options = {code: bytes(value) for code, value in collected.items()}
    _check_lengths(options)
    return options


def parse_dhcp(payload: bytes) -> DhcpMessage:
    """Decode a DHCP message; CodecError for anything malformed or not DHCP-over-Ethernet."""
    if len(payload) < MIN_LEN:
        raise CodecError(f"DHCP message of {len(payload)} bytes is shorter than {MIN_LEN}")
    reader = Reader(payload)
    op, htype, hlen, hops = reader.u8(), reader.u8(), reader.u8(), reader.u8()
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise CodecError(f"BOOTP op {op}")
    if htype != HTYPE_ETHERNET or hlen != 6:
        raise CodecError(f"hardware type {htype}/length {hlen} is not Ethernet")
    xid, secs, flags = reader.u32(), reader.u16(), reader.u16()
    ciaddr, yiaddr, siaddr, giaddr = reader.ipv4(), reader.ipv4(), reader.ipv4(), reader.ipv4()
    chaddr = reader.raw(16)[:6]
    sname, file = reader.raw(SNAME_LEN), reader.raw(FILE_LEN)
    if reader.raw(4) != MAGIC_COOKIE:
        raise CodecError("no DHCP magic cookie")
    options = _parse_options(reader.rest(), sname, file)
    message_type = options.get(OPT_MESSAGE_TYPE)
    if message_type is None:
        raise CodecError("no DHCP message type (option 53)")
    return DhcpMessage(
        op=op,
        htype=htype,
        hlen=hlen,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=ciaddr,
        yiaddr=yiaddr,
        siaddr=siaddr,
        giaddr=giaddr,
        chaddr=chaddr,
        options=options,
        message_type=message_type[0],
        hops=hops,
        sname=sname,
        file=file,
    )


def _encode_option(writer: Writer, code: int, value: bytes) -> None:
    """One option; values over 255 bytes are split into several (RFC 3396)."""
    if code in (OPT_PAD, OPT_END):
        raise CodecError(f"option {code} carries no value")
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
    for chunk in chunks:
        writer.u8(code).u8(len(chunk)).raw(chunk)


def _fixed_field(value: bytes, size: int, name: str) -> bytes:
    if len(value) > size:
        raise CodecError(f"{name} longer than {size} bytes")
    return value.ljust(size, b"\0")


def build_dhcp(
    *,
    message_type: int | None,
    xid: int,
    chaddr: bytes,
    op: int = BOOTREQUEST,
    options: Mapping[int, bytes] | Iterable[tuple[int, bytes]] = (),
    ciaddr: str = ZERO_IP,
    yiaddr: str = ZERO_IP,
    siaddr: str = ZERO_IP,
    giaddr: str = ZERO_IP,
    flags: int = 0,
    secs: int = 0,
    hops: int = 0,
    sname: bytes = b"",
    file: bytes = b"",
    min_size: int = BOOTP_MIN_LEN,
) -> bytes:
    """Encode a DHCP message: option 53 first (unless message_type is None), then
    `options` in the given order, then the end option, zero-padded to `min_size`."""
    if len(chaddr) != 6:
        raise CodecError("chaddr must be a 6-byte MAC address")
    writer = Writer().u8(op).u8(HTYPE_ETHERNET).u8(6).u8(hops)
    writer.u32(xid).u16(secs).u16(flags)
    for address in (ciaddr, yiaddr, siaddr, giaddr):
        writer.ipv4(address)
    writer.raw(_fixed_field(chaddr, 16, "chaddr"))
    writer.raw(_fixed_field(sname, SNAME_LEN, "sname")).raw(_fixed_field(file, FILE_LEN, "file"))
    writer.raw(MAGIC_COOKIE)
    if message_type is not None:
        _encode_option(writer, OPT_MESSAGE_TYPE, bytes((message_type,)))
    items = options.items() if isinstance(options, Mapping) else options
    for code, value in items:
        _encode_option(writer, code, value)
    writer.u8(OPT_END)
    return writer.getvalue().ljust(min_size, b"\0")
