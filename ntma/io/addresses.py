"""This host's own view of its endpoints (IPv4, and global IPv6 for a dual-stack socket),
which it reports to the DC."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from ..proto.buffer import Endpoint

SIOCGIFADDR = 0x8915
INTERFACES_MAX = 16  # candidates; the DC session sends at most 6 valid ones (UPDATE)


def interface_endpoints(port: int, exclude: set[str]) -> list[Endpoint]:
    """This host's IPv4 addresses (one per interface) with our UDP port."""
    found: list[Endpoint] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            if name == "lo" or name in exclude:
                continue
            try:
                ifreq = fcntl.ioctl(
                    probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15])
                )
            except OSError:
                continue  # no IPv4 address on this interface
            found.append((socket.inet_ntoa(ifreq[20:24]), port))
    return found[:INTERFACES_MAX]


IF_INET6 = "/proc/net/if_inet6"
_SKIP_FLAGS = 0x08 | 0x20 | 0x40  # IFA_F_DADFAILED, DEPRECATED, TENTATIVE


def global_ipv6_endpoints(port: int, exclude: set[str], table: str = IF_INET6) -> list[Endpoint]:
    """This host's usable global-scope IPv6 addresses (ULA included) with our UDP port."""
    found: list[Endpoint] = []
    try:
        lines = open(table).read().splitlines()  # noqa: SIM115 (a /proc file, read at once)
    except OSError:
        return found  # no IPv6 in this kernel or namespace
    for line in lines:
        fields = line.split()
        if len(fields) != 6 or fields[5] in exclude or fields[5] == "lo":
            continue
        scope, flags = int(fields[3], 16), int(fields[4], 16)
        if scope != 0 or flags & _SKIP_FLAGS:
            continue
        found.append((str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))), port))
    return found[:INTERFACES_MAX]


def local_endpoints_for_listen(listen: Endpoint, exclude: set[str]):
    """What the node tells the DC about its own address(es), computed at each Register:
    the listen address itself when it names one, else every interface's (IPv4 for
    0.0.0.0; IPv4 and global IPv6 for a dual-stack "::")."""
    if listen[0] == "::":
        return lambda: [
            *interface_endpoints(listen[1], exclude),
            *global_ipv6_endpoints(listen[1], exclude),
        ]
    if listen[0] != "0.0.0.0":
        return lambda: [listen]
    return lambda: interface_endpoints(listen[1], exclude)


IPV6_ROUTE = "/proc/net/ipv6_route"


def has_ipv6_default_route(table: str = IPV6_ROUTE) -> bool:
    """Whether this namespace routes IPv6 beyond its links (a ::/0 route not via lo and
    not a kernel 'unreachable' one): the adapter then lets its devices' ordinary IPv6 out."""
    try:
        lines = open(table).read().splitlines()  # noqa: SIM115 (a /proc file, read at once)
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) != 10 or fields[0] != "0" * 32 or fields[1] != "00":
            continue
        if fields[9] != "lo" and not int(fields[8], 16) & 0x0200:  # RTF_REJECT
            return True
    return False
