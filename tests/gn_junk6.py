"""Sends hostile IPv6 from the general node's interface (run inside the GN's namespace as
`python3 gn_junk6.py eth0`): an RS flood, ND with bad checksums, lengths and hop limits, a
rogue RA, DAD for the router's address, spoofed sources, DHCPv6 garbage. Test tooling only:
stdlib, no ntma code. Prints how many frames it sent."""

import socket
import struct
import sys

from gn_junk import checksum  # the script's own directory is on sys.path


def ip6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def packet(src: bytes, dst: bytes, nh: int, body: bytes, hop: int = 255, fix: bool = True):
    if fix and nh in (17, 58):
        pseudo = src + dst + struct.pack("!IxxxB", len(body), nh)
        at = 6 if nh == 17 else 2
        body = body[:at] + b"\0\0" + body[at + 2 :]
        body = body[:at] + struct.pack("!H", checksum(pseudo + body)) + body[at + 2 :]
    return struct.pack("!IHBB", 6 << 28, len(body), nh, hop) + src + dst + body


def main(ifname: str) -> None:
    with open(f"/sys/class/net/{ifname}/address") as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    ll = ip6("fe80::") [:8] + bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:]
    router, all_routers, all_nodes = ip6("fd00:99::1"), ip6("ff02::2"), ip6("ff02::1")
    sn_router = ip6("ff02::1:ff00:1")
    eth = lambda dst: dst + mac + b"\x86\xdd"  # noqa: E731
    mc = lambda a: b"\x33\x33" + a[12:]  # noqa: E731
    rs = struct.pack("!BBHI", 133, 0, 0, 0) + struct.pack("!BB6s", 1, 1, mac)
    ns = struct.pack("!BBHI16s", 135, 0, 0, 0, router) + struct.pack("!BB6s", 1, 1, mac)
    frames = [eth(mc(all_routers)) + packet(ll, all_routers, 58, rs) for _ in range(200)]
    frames += [
        eth(mc(sn_router)) + packet(ll, sn_router, 58, ns, fix=False),  # bad checksum
        eth(mc(sn_router)) + packet(ll, sn_router, 58, ns, hop=64),  # not from the link
        eth(mc(sn_router)) + packet(ll, sn_router, 58, ns[:20]),  # truncated
        eth(mc(sn_router)) + packet(ll, sn_router, 58, ns[:24] + b"\x01\x00"),  # option len 0
        eth(mc(sn_router)) + packet(bytes(16), sn_router, 58, ns[:24]),  # DAD for the router
        eth(mc(sn_router)) + packet(ip6("fd00:99::dead"), sn_router, 58, ns),  # spoofed src
        eth(mc(all_nodes))
        + packet(ll, all_nodes, 58, struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)),
        eth(mc(ip6("ff02::1:2")))
        + packet(ll, ip6("ff02::1:2"), 17, struct.pack("!HHHH", 546, 547, 12, 0) + b"\x01\xff"),
        eth(b"\x02\x00\x00\x00\x00\x01") + packet(ll, router, 17, b"\x00" * 3),  # short UDP
        eth(b"\x02\x00\x00\x00\x00\x01") + b"\x60" + bytes(20),  # truncated header
    ]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((ifname, 0))
    for frame in frames:
        sock.send(frame)
    print(len(frames))


if __name__ == "__main__":
    main(sys.argv[1])
