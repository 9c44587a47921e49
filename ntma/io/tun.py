"""Linux TUN device: open with ioctl, configure with iproute2.

iproute2 (a declared system dependency) configures the address, MTU and link
state; that is a handful of calls at start-up, not worth a netlink library.
The device is not persistent, so it disappears when its fd is closed.
"""

from __future__ import annotations

import fcntl
import os
import struct

import trio

from .fdio import FdPackets

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class TunDevice(FdPackets):
    def __init__(self, name: str, mtu: int) -> None:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            ifr = fcntl.ioctl(
                fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
            )
        except OSError:
            os.close(fd)
            raise
        self.name = ifr[:16].rstrip(b"\0").decode()
        self.mtu = mtu
        super().__init__(fd, mtu)

    async def configure(self, vip: str, prefix_len: int, vip6: str = "", prefix6: int = 0) -> None:
        """Give the device its VIP (routes the VIP pool into it) and, when given, its IPv6
        VIP (routes the IPv6 pool; no duplicate address detection: the DC assigned it), and
        bring it up."""
        await run_ip("addr", "flush", "dev", self.name)
        await run_ip("addr", "add", f"{vip}/{prefix_len}", "dev", self.name)
        if vip6:
            await run_ip("-6", "addr", "add", f"{vip6}/{prefix6}", "dev", self.name, "nodad")
        await run_ip("link", "set", "dev", self.name, "mtu", str(self.mtu), "up")

    def close(self) -> None:
        os.close(self.fd)


async def run_ip(*args: str) -> None:
    await trio.run_process(["ip", *args], capture_stdout=True, capture_stderr=True)
