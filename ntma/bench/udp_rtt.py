"""Small probes run inside the lab's namespaces (stdlib only: nothing else from ntma).

    python3 -m ntma.bench.udp_rtt server PORT
        UDP echo server on [::]:PORT, dual-stack (IPv4 too, as mapped addresses); on
        0.0.0.0:PORT where the machine has no IPv6. Runs until killed.
    python3 -m ntma.bench.udp_rtt client HOST PORT COUNT [--size 64] [--give-up N]
        COUNT datagrams of --size bytes, one at a time: send, wait for its echo (1 s timeout,
        then it counts as lost), time with perf_counter_ns. Prints one JSON object. HOST is
        an IPv4 or IPv6 address (or a name: its first address).
    python3 -m ntma.bench.udp_rtt arp IFACE TARGET_IP COUNT
        COUNT ARP requests for TARGET_IP from IFACE's MAC and IPv4 address, one at a time,
        each waiting up to 0.2 s for the reply (raw AF_PACKET socket, needs root). Prints JSON.

Echoes carry a sequence number, so a late echo of a datagram already counted as lost is
discarded rather than taken for the answer to a later one.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import statistics
import struct
import sys
import time

TIMEOUT_S = 1.0
ARP_TIMEOUT_S = 0.2
ETH_P_ARP = 0x0806
SIOCGIFADDR = 0x8915
HEADER = struct.Struct("!QI")  # sequence number, run id


def summary(rtts_ns: list[int], count: int, **extra: object) -> dict[str, object]:
    """JSON-able result: count, received, lost, and RTT statistics in microseconds."""
    out: dict[str, object] = {
        "count": count,
        "received": len(rtts_ns),
        "lost": count - len(rtts_ns),
    }
    if rtts_ns:
        ordered = sorted(rtts_ns)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        out.update(
            median_us=round(statistics.median(ordered) / 1000, 1),
            p99_us=round(p99 / 1000, 1),
            mean_us=round(statistics.fmean(ordered) / 1000, 1),
            min_us=round(ordered[0] / 1000, 1),
            max_us=round(ordered[-1] / 1000, 1),
        )
    else:
        out.update(median_us=None, p99_us=None, mean_us=None, min_us=None, max_us=None)
    out.update(extra)
    return out


def echo_socket(port: int) -> socket.socket:
    """The echo server's socket: [::]:port for both families, else 0.0.0.0:port."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:  # no IPv6 in this kernel
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        return sock
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    return sock


def serve(port: int) -> None:
    sock = echo_socket(port)
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def client(host: str, port: int, count: int, size: int = 64, give_up: int = 0) -> dict:
    """`give_up` > 0: stop after that many consecutive losses (the rest count as lost)."""
    size = max(size, HEADER.size)
    run_id = int.from_bytes(os.urandom(4), "big")
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.connect(address)
    padding = bytes(size - HEADER.size)
    rtts: list[int] = []
    consecutive_lost = 0
    sent = 0
    aborted = False
    for seq in range(count):
        if give_up and consecutive_lost >= give_up:
            aborted = True
            break
        payload = HEADER.pack(seq, run_id) + padding
        started = time.perf_counter_ns()
        deadline = started + int(TIMEOUT_S * 1e9)
        sock.send(payload)
        sent += 1
        while True:
            remaining = (deadline - time.perf_counter_ns()) / 1e9
            if remaining <= 0:
                consecutive_lost += 1
                break
            sock.settimeout(remaining)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                consecutive_lost += 1
                break
            except ConnectionRefusedError:  # ICMP port unreachable: wait out the timeout
                continue
            if len(data) >= HEADER.size and HEADER.unpack_from(data) == (seq, run_id):
                rtts.append(time.perf_counter_ns() - started)
                consecutive_lost = 0
                break
    sock.close()
    fields = {"host": host, "port": port, "size": size, "sent": sent, "aborted": aborted}
    return summary(rtts, count, **fields, family="ipv6" if family == socket.AF_INET6 else "ipv4")


def _iface_ipv4(sock: socket.socket, iface: str) -> bytes:
    request = struct.pack("256s", iface.encode()[:15])
    return fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)[20:24]


def arp(iface: str, target_ip: str, count: int) -> dict:
    """ARP requests from iface's MAC and address for target_ip; RTT of each reply."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((iface, ETH_P_ARP))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        own_ip = _iface_ipv4(probe, iface)
    with open(f"/sys/class/net/{iface}/address") as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    target = socket.inet_aton(target_ip)
    request = (
        b"\xff" * 6
        + mac
        + struct.pack("!H", ETH_P_ARP)
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
        + mac
        + own_ip
        + bytes(6)
        + target
    )
    rtts: list[int] = []
    for _ in range(count):
        started = time.perf_counter_ns()
        deadline = started + int(ARP_TIMEOUT_S * 1e9)
        sock.send(request)
        while True:
            remaining = (deadline - time.perf_counter_ns()) / 1e9
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                frame = sock.recv(2048)
            except TimeoutError:
                break
            if len(frame) < 42 or frame[12:14] != b"\x08\x06":
                continue
            op = struct.unpack_from("!H", frame, 20)[0]
            if op == 2 and frame[28:32] == target and frame[38:42] == own_ip:
                rtts.append(time.perf_counter_ns() - started)
                break
    sock.close()
    return summary(rtts, count, iface=iface, target=target_ip, source=socket.inet_ntoa(own_ip))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ntma.bench.udp_rtt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("server", help="UDP echo server")
    p.add_argument("port", type=int)
    p = sub.add_parser("client", help="UDP round-trip times")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    p.add_argument(
        "--give-up", type=int, default=0, help="stop after N consecutive losses (default never)"
    )
    p = sub.add_parser("arp", help="ARP request/reply times (raw socket, root)")
    p.add_argument("iface")
    p.add_argument("target_ip")
    p.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.command == "server":
        try:
            serve(args.port)
        except KeyboardInterrupt:
            return 0
    elif args.command == "client":
        result = client(args.host, args.port, args.count, args.size, args.give_up)
        print(json.dumps(result))
    else:
        print(json.dumps(arp(args.iface, args.target_ip, args.count)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
