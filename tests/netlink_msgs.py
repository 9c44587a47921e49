"""rtnetlink messages built by hand with struct (not ntma's parser), for the tests."""

from __future__ import annotations

import socket
import struct

from ntma.io.netlink import (
    IFA_ADDRESS,
    IFA_LOCAL,
    IFLA_IFNAME,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_TABLE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)

IFF_UP_RUNNING = 0x1 | 0x40 | 0x1000 | 0x2  # UP, RUNNING, MULTICAST, BROADCAST


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def nlmsg(kind: int, body: bytes, flags: int = 0, seq: int = 0, pid: int = 0) -> bytes:
    """One message: the header's length counts the body, not the padding after it."""
    return pad(struct.pack("=IHHII", 16 + len(body), kind, flags, seq, pid) + body)


def rtattr(kind: int, payload: bytes) -> bytes:
    return pad(struct.pack("=HH", 4 + len(payload), kind) + payload)


def link_msg(index: int, name: str | None = "eth0", kind: int = RTM_NEWLINK) -> bytes:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, IFF_UP_RUNNING, 0)
    if name is not None:
        body += rtattr(IFLA_IFNAME, name.encode() + b"\0")
    return nlmsg(kind, body)


def addr_msg(
    index: int,
    address: str,
    prefixlen: int = 24,
    kind: int = RTM_NEWADDR,
    peer: str | None = None,
) -> bytes:
    """IFA_ADDRESS is the peer's when given (a point-to-point link), IFA_LOCAL ours."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    body = struct.pack("=BBBBI", family, prefixlen, 0, 0, index)
    body += rtattr(IFA_ADDRESS, socket.inet_pton(family, peer or address))
    body += rtattr(IFA_LOCAL, socket.inet_pton(family, address))
    return nlmsg(kind, body)


def route_msg(
    family: int,
    dst: str | None = None,
    dst_len: int = 0,
    oif: int | None = None,
    gateway: str | None = None,
    table: int = 254,
    kind: int = RTM_NEWROUTE,
) -> bytes:
    compat = table if table < 256 else 252  # RT_TABLE_COMPAT: the number is in RTA_TABLE
    body = struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, compat, 4, 0, 1, 0)
    body += rtattr(RTA_TABLE, struct.pack("=I", table))
    if dst is not None:
        body += rtattr(RTA_DST, socket.inet_pton(family, dst))
    if gateway is not None:
        body += rtattr(RTA_GATEWAY, socket.inet_pton(family, gateway))
    if oif is not None:
        body += rtattr(RTA_OIF, struct.pack("=I", oif))
    return nlmsg(kind, body)
