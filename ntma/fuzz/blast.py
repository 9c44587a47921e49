"""python -m ntma.fuzz.blast: send a bounded burst of hostile inputs to ONE address.

Test tooling for the lab (run inside a namespace with `ip netns exec`): the inputs come
from the fuzz engine (`engine.Mutator` over a corpus of `seeds.py`, or over the hex lines of
--mutate FILE, e.g. captured datagrams), or are replayed verbatim from --replay FILE (one
datagram or frame per hex line). It sends only to the
address given, at most --count inputs, for at most --seconds, then stops by itself and
prints one JSON line: {"sent": ..., "errors": ..., "seconds": ...}.

    --to HOST:PORT            UDP datagrams (replies are read and thrown away)
    --to HOST:PORT --tcp      DNS over TCP: each input length-prefixed, 20 to a connection
    --to HOST:PORT --hold N   open N TCP connections, send nothing, keep them idle until
                              --seconds has passed (prints {"held": N} once they are open)
    --iface IFACE             raw Ethernet frames out of IFACE; the source MAC of mutated
                              frames is set to IFACE's own (never another host's)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from . import seeds
from .engine import Mutator

#: Corpus name -> the seeds.py builders it draws on (whichever of them exist: the protocol's
#: builders change with its version, the corpus names do not).
CORPORA: dict[str, tuple[str, ...]] = {
    "signalling": ("sealed_messages", "envelopes", "data_packets", "grants"),
    "dns": ("dns_queries",),
    "frames": ("frames",),
    "random": (),
}
#: Verbatim inputs sent first, before the mutations (the known killers of a corpus).
VERBATIM: dict[str, tuple[str, ...]] = {"dns": ("dns_hostile",)}
QUESTION_TAIL = b"\x00\x01\x00\x01"  # type A, class IN


def dns_edge_cases() -> list[bytes]:
    """Hand-made DNS inputs on the limits: 64-byte labels, names of 254 to 256 bytes on the
    wire, compression pointers that loop (to themselves, between two, after a label) or
    point past the end, counts that lie, truncated headers, a response, an odd opcode."""

    def header(qd: int = 1, an: int = 0, flags: int = 0x0100) -> bytes:
        return struct.pack("!HHHHHH", 0xBEEF, flags, qd, an, 0, 0)

    def name_of(total: int) -> bytes:  # a wire name `total` bytes long, labels <= 63
        labels, left = [], total - 1
        while left > 0:
            size = min(63, left - 1)
            labels.append(bytes((size,)) + b"n" * size)
            left -= size + 1
        return b"".join(labels) + b"\0"

    out = [
        header() + b"\x40" + b"a" * 64 + b"\0" + QUESTION_TAIL,
        header() + (b"\x3f" + b"b" * 63) * 3 + b"\x40" + b"c" * 64 + b"\0" + QUESTION_TAIL,
        header() + b"\xc0\x0c" + QUESTION_TAIL,  # points at itself
        header() + b"\xc0\x0e\xc0\x0c" + QUESTION_TAIL,  # two pointers, each at the other
        header() + b"\x01a\xc0\x0c" + QUESTION_TAIL,  # a label, then back to the start
        header() + b"\xc0\xff" + QUESTION_TAIL,  # past the end
        header() + b"\x80a\0" + QUESTION_TAIL,  # label type 10 (reserved)
        header(qd=0xFFFF, an=0xFFFF) + b"\x01a\0" + QUESTION_TAIL,
        header(qd=0),
        header()[:11],
        b"",
        header(flags=0x8180) + b"\x01a\0" + QUESTION_TAIL,  # a response, not a query
        header(flags=0x7900) + b"\x01a\0" + QUESTION_TAIL,  # opcode 15
    ]
    out += [header() + name_of(n) + QUESTION_TAIL for n in (254, 255, 256, 300)]
    return out


TCP_PER_CONNECTION = 20
TCP_TIMEOUT_S = 1.0
MAX_COUNT = 100_000
MAX_SECONDS = 30.0


def corpus(name: str) -> tuple[list[bytes], list[bytes]]:
    """(verbatim inputs, seeds to mutate) of a corpus."""

    def gather(builders: tuple[str, ...]) -> list[bytes]:
        out: list[bytes] = []
        for builder in builders:
            fn = getattr(seeds, builder, None)
            if fn is not None:
                out += [bytes(b) for b in fn()]
        return out

    verbatim = gather(VERBATIM.get(name, ()))
    if name == "dns":
        verbatim += dns_edge_cases()
    return verbatim, gather(CORPORA[name])


def inputs(args: argparse.Namespace) -> Iterator[bytes]:
    if args.replay:
        lines = Path(args.replay).read_text().split()
        yield from (bytes.fromhex(line) for line in lines)
        return
    if args.mutate:
        verbatim, seed_inputs = (
            [],
            [bytes.fromhex(x) for x in Path(args.mutate).read_text().split()],
        )
    else:
        random.seed(args.seed)  # dnslib picks query ids from the module's generator
        verbatim, seed_inputs = corpus(args.corpus)
    yield from verbatim
    mutator = Mutator(seed_inputs, args.seed)
    while True:
        if seed_inputs:
            yield mutator.next_input()
        else:
            yield mutator.rng.randbytes(mutator.rng.randrange(0, 1500))


def endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


class Pacer:
    """Bounded count, bounded time, at most `rate` inputs per second."""

    def __init__(self, count: int, seconds: float, rate: float) -> None:
        self.count, self.rate = count, rate
        self.start = time.monotonic()
        self.deadline = self.start + seconds
        self.sent = self.errors = 0

    def more(self) -> bool:
        if self.sent + self.errors >= self.count:
            return False
        now = time.monotonic()
        if now >= self.deadline:
            return False
        ahead = (self.sent + self.errors) / self.rate - (now - self.start)
        if ahead > 0:
            time.sleep(min(ahead, self.deadline - now))
        return True

    def report(self, **extra: object) -> str:
        elapsed = round(time.monotonic() - self.start, 3)
        return json.dumps({"sent": self.sent, "errors": self.errors, "seconds": elapsed, **extra})


def blast_udp(args: argparse.Namespace, pacer: Pacer) -> None:
    family = socket.AF_INET6 if ":" in args.to[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if args.bind:
            sock.bind(args.bind)
        sock.setblocking(False)
        for data in inputs(args):
            if not pacer.more():
                break
            try:
                sock.sendto(data, args.to)
                pacer.sent += 1
            except OSError:  # ENOBUFS, an ICMP error reported on this socket, ...
                pacer.errors += 1
            with contextlib.suppress(OSError):
                while sock.recv(65535):
                    pass


def _tcp_connect(args: argparse.Namespace) -> socket.socket:
    sock = socket.create_connection(args.to, timeout=TCP_TIMEOUT_S)
    sock.settimeout(TCP_TIMEOUT_S)
    return sock


def blast_tcp(args: argparse.Namespace, pacer: Pacer) -> None:
    sock: socket.socket | None = None
    on_this = 0
    try:
        for data in inputs(args):
            if not pacer.more():
                break
            try:
                if sock is None or on_this >= TCP_PER_CONNECTION:
                    if sock is not None:
                        sock.close()
                    sock, on_this = _tcp_connect(args), 0
                sock.sendall(struct.pack("!H", min(len(data), 0xFFFF)) + data[:0xFFFF])
                on_this += 1
                pacer.sent += 1
                with contextlib.suppress(TimeoutError, BlockingIOError):
                    sock.setblocking(False)
                    while sock.recv(65535):
                        pass
                sock.settimeout(TCP_TIMEOUT_S)
            except OSError:  # reset, refused, timed out: the server may end a connection
                pacer.errors += 1
                if sock is not None:
                    sock.close()
                sock = None
    finally:
        if sock is not None:
            sock.close()


def hold_tcp(args: argparse.Namespace, pacer: Pacer) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(min(args.hold, args.count)):
            try:
                held.append(_tcp_connect(args))
                pacer.sent += 1
            except OSError:
                pacer.errors += 1
        print(json.dumps({"held": len(held)}), flush=True)
        time.sleep(max(0.0, pacer.deadline - time.monotonic()))
    finally:
        for sock in held:
            sock.close()


def blast_frames(args: argparse.Namespace, pacer: Pacer) -> None:
    own_mac = bytes.fromhex(
        Path(f"/sys/class/net/{args.iface}/address").read_text().strip().replace(":", "")
    )
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((args.iface, 0))
        for data in inputs(args):
            if not pacer.more():
                break
            frame = bytearray(data)
            if not args.replay and len(frame) >= 12:
                frame[6:12] = own_mac
            try:
                sock.send(bytes(frame))
                pacer.sent += 1
            except OSError:  # too short, too long for the link
                pacer.errors += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ntma.fuzz.blast",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", type=endpoint, help="HOST:PORT, the only address sent to")
    where.add_argument("--iface", help="send raw frames out of this interface")
    parser.add_argument("--tcp", action="store_true", help="DNS over TCP to --to")
    parser.add_argument("--hold", type=int, help="idle TCP connections to open to --to")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="signalling")
    parser.add_argument("--replay", help="file of hex lines, sent as they are, in order")
    parser.add_argument("--mutate", help="file of hex lines: mutate these instead of --corpus")
    parser.add_argument("--count", type=int, default=3000, help=f"at most (<= {MAX_COUNT})")
    parser.add_argument("--seconds", type=float, default=5.0, help=f"at most (<= {MAX_SECONDS})")
    parser.add_argument("--rate", type=float, default=3000.0, help="inputs per second, at most")
    parser.add_argument("--seed", type=int, default=0, help="mutation engine seed")
    parser.add_argument("--bind", type=endpoint, help="source HOST:PORT for UDP")
    args = parser.parse_args(argv)
    if (args.tcp or args.hold) and not args.to:
        parser.error("--tcp and --hold need --to")
    if args.replay and args.mutate:
        parser.error("--replay or --mutate, not both")
    if not 0 < args.count <= MAX_COUNT or not 0 < args.seconds <= MAX_SECONDS or args.rate <= 0:
        parser.error(f"--count in 1..{MAX_COUNT}, --seconds in (0, {MAX_SECONDS}], --rate > 0")
    pacer = Pacer(args.count, args.seconds, args.rate)
    if args.iface:
        blast_frames(args, pacer)
    elif args.hold:
        hold_tcp(args, pacer)
    elif args.tcp:
        blast_tcp(args, pacer)
    else:
        blast_udp(args, pacer)
    print(pacer.report(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
