"""Traffic that spans a mobility event, for the lab's tests and `ntma bench --handover`
(stdlib only: it runs inside the lab's namespaces as its own process).

    python3 -m ntma.lab.traffic echo-server PORT
        UDP echo server on 0.0.0.0:PORT (until killed).
    python3 -m ntma.lab.traffic stream HOST PORT --pps 100 --seconds S
        A datagram every 1/pps s for S s, each with a sequence number; echoes are taken
        whenever they come. Prints one JSON object: sent, received, and `replies`, the
        CLOCK_MONOTONIC time of every echo received (the clock every namespace shares, so
        a move's timestamps compare with it). SIGTERM ends the stream early, result printed.

`gap_after(replies, t)`: the handover gap, the longest silence of the stream that covers
or follows t (an event's start): from the last echo before the silence to the first after.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence

HEADER = struct.Struct("!QI")  # sequence number, run id
SIZE = 64


def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    while True:
        data, peer = sock.recvfrom(65535)
        try:
            sock.sendto(data, peer)
        except OSError:
            continue  # the way back is gone for a moment (a move): the client counts it


def stream(host: str, port: int, pps: float, seconds: float) -> dict[str, object]:
    run_id = int.from_bytes(os.urandom(4), "big")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    interval, padding = 1.0 / pps, bytes(SIZE - HEADER.size)
    replies: list[float] = []
    seen: set[int] = set()
    sent = send_errors = 0
    start = time.monotonic()
    next_send = start
    while not stopping and time.monotonic() - start < seconds:
        now = time.monotonic()
        if now >= next_send:
            try:
                sock.sendto(HEADER.pack(sent, run_id) + padding, (host, port))
            except OSError:
                send_errors += 1  # no route for a moment (the host moved)
            sent += 1
            next_send += interval
        _take_echoes(sock, run_id, seen, replies)
        time.sleep(max(0.0, min(next_send - time.monotonic(), 0.002)))
    _take_echoes(sock, run_id, seen, replies)
    sock.close()
    return {
        "host": host,
        "port": port,
        "pps": pps,
        "started": start,
        "sent": sent,
        "received": len(replies),
        "send_errors": send_errors,
        "replies": [round(t, 6) for t in replies],
    }


def _take_echoes(sock: socket.socket, run_id: int, seen: set[int], replies: list[float]):
    while True:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, ConnectionRefusedError):
            return
        except OSError:
            return
        if len(data) < HEADER.size:
            continue
        seq, rid = HEADER.unpack_from(data)
        if rid == run_id and seq not in seen:
            seen.add(seq)
            replies.append(time.monotonic())


def gap_after(replies: Sequence[float], t: float) -> float | None:
    """The longest silence (seconds) between consecutive echoes that ends after t; None
    when no echo came after t (the stream never resumed)."""
    after = [i for i, r in enumerate(replies) if r > t]
    if not after:
        return None
    first = after[0]
    gaps = [replies[i] - replies[i - 1] for i in range(max(first, 1), len(replies))]
    if first == 0:
        gaps.append(replies[0] - t)
    return max(gaps, default=0.0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ntma.lab.traffic")
    sub = parser.add_subparsers(dest="cmd", required=True)
    server = sub.add_parser("echo-server")
    server.add_argument("port", type=int)
    client = sub.add_parser("stream")
    client.add_argument("host")
    client.add_argument("port", type=int)
    client.add_argument("--pps", type=float, default=100.0)
    client.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.cmd == "echo-server":
        serve(args.port)
        return 0
    host = socket.gethostbyname(args.host)  # by name: the node's resolver builds the tunnel
    print(json.dumps(stream(host, args.port, args.pps, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
