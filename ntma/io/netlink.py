"""The kernel's own notices of link, address and route changes (rtnetlink multicast).

A raw AF_NETLINK/NETLINK_ROUTE socket subscribed to the link, IPv4/IPv6 address and
IPv4/IPv6 route groups, read from Trio with `wait_readable`, and a pure parser of the
few message types those groups send. Not pyroute2: its async API is built on asyncio
(under Trio it would need a thread or a bridge), and we need five message types and
three attributes, which the stdlib socket and the parser below cover.

The parser never raises on its input: a message whose header, body or attributes do
not fit is skipped and counted. A datagram is framed by each header's length, so a
length that cannot be right ends the datagram (nothing after it can be found).

When the socket's receive buffer overruns, the kernel drops notices and the next
recv fails once with ENOBUFS; the reader turns that into an NLMSG_OVERRUN message, which
parses to an "overrun" event: something changed, we cannot say what.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Literal

import trio

EventKind = Literal["link", "addr", "route", "overrun"]
Action = Literal["new", "del"]

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
WATCH_GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)
# Asked for; the kernel doubles it for its own accounting, up to twice net.core.rmem_max
# (212,992 by default). A notice takes about 830 bytes of it, so even the default cap holds
# some 500 notices, against a dozen for a typical re-addressing; beyond, an overrun.
RCVBUF = 1 << 20
RECV_SIZE = 65536  # a notice is one message, well under a page; a dump reply may be longer

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NLA_TYPE_MASK = 0x3FFF  # the top two bits are the nested and byte-order flags

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (native endian)
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
_RTATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_ADDRESS_SIZE = {socket.AF_INET: 4, socket.AF_INET6: 16}

OVERRUN_MESSAGE = _NLMSGHDR.pack(_NLMSGHDR.size, NLMSG_OVERRUN, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class NetEvent:
    """One notice. address: the interface address (IFA_LOCAL, else IFA_ADDRESS) or the
    route's destination prefix ("0.0.0.0/0" for a default route); ifname: the name the
    link notice carries (IFLA_IFNAME); table and gateway: a route's."""

    kind: EventKind
    action: Action
    ifindex: int
    family: int
    address: str | None = None
    ifname: str | None = None
    gateway: str | None = None
    table: int | None = None


OVERRUN = NetEvent("overrun", "new", 0, socket.AF_UNSPEC)


class Malformed(Exception):
    """Inside the parser only: this message is skipped and counted."""


def parse_messages(data: bytes) -> tuple[list[NetEvent], int]:
    """The events in one datagram, and how many messages in it were malformed. Message
    types we do not watch (and DONE, NOOP, ERROR: we send no requests) are ignored."""
    events: list[NetEvent] = []
    bad = pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind = _NLMSGHDR.unpack_from(data, pos)[:2]
        if length < _NLMSGHDR.size or pos + length > len(data):
            return events, bad + 1
        parse = _PARSERS.get(kind)
        if parse is not None:
            try:
                events.append(parse(kind, data[pos + _NLMSGHDR.size : pos + length]))
            except Malformed:
                bad += 1
        pos += _align(length)
    if pos < len(data):
        bad += 1  # a tail too short for a header
    return events, bad


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attributes(data: bytes, pos: int) -> dict[int, bytes]:
    """Attribute type -> payload (the last one of a type wins)."""
    found: dict[int, bytes] = {}
    while pos + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size or pos + length > len(data):
            raise Malformed
        found[kind & NLA_TYPE_MASK] = data[pos + _RTATTR.size : pos + length]
        pos += _align(length)
    return found


def _address(family: int, raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if len(raw) != _ADDRESS_SIZE.get(family):
        raise Malformed
    return socket.inet_ntop(family, raw)


def _action(kind: int, new: int) -> Action:
    return "new" if kind == new else "del"


def _link(kind: int, body: bytes) -> NetEvent:
    if len(body) < _IFINFOMSG.size:
        raise Malformed
    family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(body)
    name = _attributes(body, _IFINFOMSG.size).get(IFLA_IFNAME)
    ifname = name.split(b"\0", 1)[0].decode(errors="replace") if name else None
    return NetEvent("link", _action(kind, RTM_NEWLINK), index, family, ifname=ifname)


def _addr(kind: int, body: bytes) -> NetEvent:
    if len(body) < _IFADDRMSG.size:
        raise Malformed
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(body)
    attrs = _attributes(body, _IFADDRMSG.size)
    # On a point-to-point link IFA_ADDRESS is the peer's; IFA_LOCAL is ours.
    address = _address(family, attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS)))
    return NetEvent("addr", _action(kind, RTM_NEWADDR), index, family, address)


def _route(kind: int, body: bytes) -> NetEvent:
    if len(body) < _RTMSG.size:
        raise Malformed
    family, dst_len, _src_len, _tos, table = _RTMSG.unpack_from(body)[:5]
    attrs = _attributes(body, _RTMSG.size)
    if RTA_TABLE in attrs:  # tables above 255 only fit here
        table = _u32(attrs[RTA_TABLE])
    dst = _address(family, attrs.get(RTA_DST))
    if dst is None and family in _ADDRESS_SIZE:  # no RTA_DST: the default route
        dst = socket.inet_ntop(family, bytes(_ADDRESS_SIZE[family]))
    oif = _u32(attrs[RTA_OIF]) if RTA_OIF in attrs else 0
    return NetEvent(
        "route",
        _action(kind, RTM_NEWROUTE),
        oif,
        family,
        f"{dst}/{dst_len}" if dst is not None else None,
        gateway=_address(family, attrs.get(RTA_GATEWAY)),
        table=table,
    )


def _u32(raw: bytes) -> int:
    if len(raw) != _U32.size:
        raise Malformed
    return _U32.unpack(raw)[0]


def _overrun(kind: int, body: bytes) -> NetEvent:
    return OVERRUN


_PARSERS = {
    RTM_NEWLINK: _link,
    RTM_DELLINK: _link,
    RTM_NEWADDR: _addr,
    RTM_DELADDR: _addr,
    RTM_NEWROUTE: _route,
    RTM_DELROUTE: _route,
    NLMSG_OVERRUN: _overrun,
}


class NetlinkSocket:
    """A non-blocking rtnetlink socket subscribed to `groups`, read in batches."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.overruns = 0

    @classmethod
    def open(cls, groups: int = WATCH_GROUPS, rcvbuf: int = RCVBUF) -> NetlinkSocket:
        """Raises OSError when the kernel refuses (no netlink, or not allowed)."""
        if not hasattr(socket, "AF_NETLINK"):
            raise OSError(errno.EAFNOSUPPORT, "no netlink on this platform")
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((0, groups))
        except OSError:
            sock.close()
            raise
        return cls(sock)

    async def read_batch(self, max_datagrams: int = 64) -> list[bytes]:
        """Wait for notices, then drain up to max_datagrams. An overrun of the receive
        buffer comes back as an NLMSG_OVERRUN message in its place. Always waits first, so
        each batch is a checkpoint (notices are rare: the extra pass costs nothing)."""
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            batch = self._drain(max_datagrams)
            if batch:
                return batch

    def _drain(self, max_datagrams: int) -> list[bytes]:
        batch: list[bytes] = []
        while len(batch) < max_datagrams:
            try:
                batch.append(self.sock.recv(RECV_SIZE))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1
                batch.append(OVERRUN_MESSAGE)
        return batch

    def close(self) -> None:
        self.sock.close()

    async def __aenter__(self) -> NetlinkSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
