"""Capture rtnetlink notices into the vectors beside this file (root; Linux only).

    flock /tmp/ntma-netns.lock python3 tests/vectors/netlink/capture.py

Makes a throw-away namespace (no IPv6 DAD), and inside it (`ip netns exec`) opens ntma's
NetlinkSocket, runs each step's `ip` commands and writes every datagram the step caused to
`<step>.hex`, one datagram per line. The namespace is deleted afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
STEPS = [
    ("link_add", "link add nw0 type veth peer name nw1"),
    ("link_up", "link set nw1 up"),  # nw0 is still down: nw1 has no carrier
    ("link_up_carrier", "link set nw0 up"),
    ("addr_add_v4", "addr add 192.0.2.10/24 dev nw0"),
    ("route_add_default_v4", "route add default via 192.0.2.1"),
    ("route_del_default_v4", "route del default via 192.0.2.1"),
    ("route_readd_default_v4", "route add default via 192.0.2.1 metric 50"),
    ("addr_add_v6", "-6 addr add 2001:db8::10/64 dev nw0 nodad"),
    ("route_add_v6", "-6 route add 2001:db8:1::/48 via 2001:db8::1"),
    ("link_down", "link set nw0 down"),  # with its IPv4 and IPv6 addresses and routes
    ("addr_del_v4", "addr del 192.0.2.10/24 dev nw0"),
    ("link_del", "link del nw0"),  # takes nw1 with it
]


def child() -> None:
    import trio

    sys.path.insert(0, str(HERE.parents[2]))
    from ntma.io.netlink import NetlinkSocket

    async def main() -> None:
        async with NetlinkSocket.open() as nl:
            for name, command in STEPS:
                subprocess.run(["ip", *command.split()], check=True)
                datagrams: list[bytes] = []
                with trio.move_on_after(0.5):
                    while True:
                        datagrams += await nl.read_batch()
                (HERE / f"{name}.hex").write_text("".join(d.hex() + "\n" for d in datagrams))
                print(name, len(datagrams), "datagrams", flush=True)

    trio.run(main)


def parent() -> None:
    ns = f"ntma-t-nwcap-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for sysctl in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
            # no DAD: a link-local address's notices come with link_up, not a second later
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", sysctl], check=True)
        time.sleep(0.2)
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--child"], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else parent()
