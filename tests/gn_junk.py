"""Sends malformed and foreign frames from the general node's interface (run inside the
GN's namespace as `python3 gn_junk.py eth0`). Test tooling only: stdlib, no ntma code."""

import json
import socket
import struct
import subprocess
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def main(ifname: str) -> None:
    with open(f"/sys/class/net/{ifname}/address") as f:
        my_mac = bytes.fromhex(f.read().strip().replace(":", ""))
    info = json.loads(
        subprocess.run(
            ["ip", "-j", "addr", "show", ifname], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    vip = socket.inet_aton(next(a["local"] for a in info["addr_info"] if a["family"] == "inet"))
    router = socket.inet_aton("10.99.0.1")
    peer = socket.inet_aton("10.99.0.2")
    other_mac = bytes.fromhex("02deadbeef01")
    bcast = b"\xff" * 6
    eth_ip = lambda src_mac: bcast + src_mac + b"\x08\x00"  # noqa: E731
    eth_arp = bcast + my_mac + b"\x08\x06"

    def arp(op, spa, tpa, hlen=6):
        return (
            eth_arp + struct.pack("!HHBBH", 1, 0x0800, hlen, 4, op) + my_mac + spa + bytes(6) + tpa
        )

    dhcp_short = ipv4_udp(b"\0" * 4, b"\xff" * 4, 68, 67, bytes(100))
    dhcp_overflow = bytearray(240)
    dhcp_overflow[0:4] = b"\x01\x01\x06\x00"
    dhcp_overflow[28:34] = my_mac
    dhcp_overflow[236:240] = b"\x63\x82\x53\x63"
    dhcp_overflow += b"\x35\x01\x01\x0c\xc8abc"  # hostname option claims 200 bytes
    loop = bytes.fromhex("beef01000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01"
    frames = [
        eth_ip(my_mac)[:12] + b"\x81\x00" + bytes(30),  # VLAN-tagged: not on an untagged link
        eth_ip(my_mac) + b"\x4f" + bytes(10),  # IPv4 header that lies about its length
        eth_ip(my_mac) + b"\x45\x00\xff\xff" + bytes(16),  # total length beyond the frame
        eth_ip(other_mac) + ipv4_udp(vip, peer, 1000, 2000, b"second MAC"),
        eth_ip(my_mac) + ipv4_udp(socket.inet_aton("10.99.7.7"), peer, 1000, 2000, b"spoof"),
        eth_ip(my_mac) + dhcp_short,
        eth_ip(my_mac) + ipv4_udp(b"\0" * 4, b"\xff" * 4, 68, 67, bytes(dhcp_overflow)),
        eth_ip(my_mac) + ipv4_udp(vip, router, 5353, 53, loop),
        eth_ip(my_mac) + ipv4_udp(vip, router, 5353, 53, b"\x00"),
        arp(1, vip, b"\0" * 4),  # ARP for 0.0.0.0
        arp(1, vip, b"\xff" * 4),  # ARP for the broadcast address
        arp(1, vip, vip),  # gratuitous
        arp(1, vip, peer, hlen=8),  # odd hardware length
        eth_arp + bytes(10),  # truncated ARP
        b"\xff" * 6 + my_mac + b"\x86\xdd" + bytes(40),  # IPv6
    ]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        for frame in frames:
            sock.send(frame)


if __name__ == "__main__":
    main(sys.argv[1])
