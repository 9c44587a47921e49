"""A paced TCP transfer for the handover benchmark (stdlib only: it runs inside the lab's
namespaces as its own process).

    python3 -m ntma.bench.handover.tcpstream serve PORT FILE --rate BYTES_PER_S
        Sends FILE to every client that connects, RATE bytes a second in 10 ms steps,
        then closes. The pace is the sender's, so the data is still being sent long after
        the event (a reader-side limit lets the kernel's buffers take the rest early).
        After a stall it goes on at the same pace; it does not catch up.
    python3 -m ntma.bench.handover.tcpstream get HOST PORT
        One connection (never a second one), read to the end. Prints one JSON object:
        bytes, sha256, seconds, connects (always 1) and error (null when the sender closed
        normally). SIGTERM ends it early, result printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import socket
import sys
import threading
import time

STEP_S = 0.01


def _send_paced(conn: socket.socket, data: bytes, rate: int) -> None:
    chunk = max(1, round(rate * STEP_S))
    next_at = time.monotonic()
    with conn:
        try:
            for pos in range(0, len(data), chunk):
                conn.sendall(data[pos : pos + chunk])  # blocks while the path is down
                next_at = max(next_at + STEP_S, time.monotonic())  # no catching up
                time.sleep(max(0.0, next_at - time.monotonic()))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            return


def serve(port: int, path: str, rate: int) -> None:
    with open(path, "rb") as f:
        data = f.read()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(8)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_send_paced, args=(conn, data, rate), daemon=True).start()


class _Stopped(Exception):
    pass


def _stop(*_: object) -> None:
    raise _Stopped


def get(host: str, port: int) -> dict[str, object]:
    digest, received, error = hashlib.sha256(), 0, None
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _stop)
    try:
        with socket.create_connection((host, port), timeout=30) as conn:
            conn.settimeout(None)  # the bench decides how long to wait (SIGTERM)
            while data := conn.recv(65536):
                digest.update(data)
                received += len(data)
    except _Stopped:
        error = "stopped before the end"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {
        "bytes": received,
        "sha256": digest.hexdigest(),
        "seconds": round(time.monotonic() - started, 3),
        "connects": 1,
        "error": error,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ntma.bench.handover.tcpstream")
    sub = parser.add_subparsers(dest="cmd", required=True)
    server = sub.add_parser("serve")
    server.add_argument("port", type=int)
    server.add_argument("file")
    server.add_argument("--rate", type=int, required=True)
    client = sub.add_parser("get")
    client.add_argument("host")
    client.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port, args.file, args.rate)
        return 0
    print(json.dumps(get(args.host, args.port)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
