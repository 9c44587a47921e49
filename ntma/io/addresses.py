"""This host's own view of its IPv4 endpoints, which it reports to the DC."""

from __future__ import annotations

import fcntl
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


def local_endpoints_for_listen(listen: Endpoint, exclude: set[str]):
    """What the node tells the DC about its own address(es), computed at each Register."""
    if listen[0] != "0.0.0.0":
        return lambda: [listen]
    return lambda: interface_endpoints(listen[1], exclude)
