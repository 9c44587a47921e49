"""Non-blocking file descriptor helpers: drain while data is there, then wait."""

from __future__ import annotations

import errno
import os
import socket
import sys

import trio

from ..proto.buffer import Endpoint

SOL_UDP = 17
UDP_SEGMENT = 103  # send: one buffer, many equal-size datagrams (UDP GSO)
UDP_GRO = 104  # receive: datagrams of one flow coalesced into one buffer
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
GSO_MAX_SEGMENT = 1472  # each segment must fit a 1500-byte frame with IPv4 and UDP headers
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_GSO_FAILED = {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP}


def plan_sends(datagrams: list[tuple[bytes, Endpoint]]) -> list[tuple[list[bytes], Endpoint, int]]:
    """Group consecutive datagrams into UDP GSO sends: same destination, equal size
    (the last of a run may be shorter). Returns (datagrams, destination, segment size);
    a segment size of 0 means a plain send of the one datagram."""
    if len(datagrams) == 1:  # light load: nothing to group
        datagram, addr = datagrams[0]
        return [([datagram], addr, 0)]
    plans: list[tuple[list[bytes], Endpoint, int]] = []
    run: list[bytes] = []
    run_addr: Endpoint | None = None
    size = total = 0

    def flush() -> None:
        if run:
            plans.append((list(run), run_addr, size if len(run) > 1 else 0))  # type: ignore[arg-type]
            run.clear()

    for datagram, addr in datagrams:
        n = len(datagram)
        fits = (
            run
            and addr == run_addr
            and n <= size
            and len(run) < GSO_MAX_SEGMENTS
            and total + n <= GSO_MAX_BYTES
            and len(run[-1]) == size  # only the last segment of a run may be short
        )
        if not fits:
            flush()
            run_addr, size, total = addr, n, 0
            if n > GSO_MAX_SEGMENT:
                plans.append(([datagram], addr, 0))
                continue
        run.append(datagram)
        total += n
    flush()
    return plans


def split_gro(data: bytes, segment: int) -> list[bytes]:
    if segment <= 0 or segment >= len(data):
        return [data]
    return [data[i : i + segment] for i in range(0, len(data), segment)]


class BatchReader:
    """Reads a non-blocking fd in batches: drain while it has data (up to a maximum),
    then hand the batch over. A drain that emptied the fd is remembered, so the next
    read waits for readiness first instead of failing once more with EAGAIN: at light
    load that is one syscall and one exception fewer per packet on the packet's path.
    (Readiness is level-triggered: data that came meanwhile is reported at once.)"""

    _found_empty = False

    async def read_drained(self, fileobj, drain, max_items: int) -> list:
        """`drain(batch, max_items)` appends until max_items or raises BlockingIOError."""
        if self._found_empty:
            await trio.lowlevel.wait_readable(fileobj)
        batch: list = []
        while True:
            try:
                drain(batch, max_items)
                self._found_empty = False
            except BlockingIOError:
                self._found_empty = True
            if batch:
                return batch  # no checkpoint: the stage yields on a full outbox or a wait here
            await trio.lowlevel.wait_readable(fileobj)


class UdpSocket(BatchReader):
    """A non-blocking UDP socket read and written in batches, with UDP GSO for sends
    and UDP GRO for receives where the kernel offers them (plain calls otherwise).

    Bound to an IPv6 address ("::" included) it is dual-stack: IPv4 peers arrive as
    v4-mapped addresses and are handed up as plain IPv4 endpoints, and IPv4 destinations
    are mapped on the way out, so the layers above see one endpoint form per family."""

    def __init__(self, sock: socket.socket, *, offload: bool = True) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.dual = sock.family == socket.AF_INET6
        self.send_errors = 0
        self.gso = offload
        self.gro = offload and self._enable_gro()

    def _enable_gro(self) -> bool:
        try:
            self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError:
            return False
        return True

    @classmethod
    def bind(cls, endpoint: Endpoint, *, offload: bool = True) -> UdpSocket:
        if ":" in endpoint[0]:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind(endpoint)
        return cls(sock, offload=offload)

    async def recv_batch(self, max_datagrams: int) -> list[tuple[bytes, Endpoint]]:
        drain = self._drain_gro if self.gro else self._drain_plain
        batch = await self.read_drained(self.sock, drain, max_datagrams)
        if self.dual:
            return [(datagram, unmapped(addr)) for datagram, addr in batch]
        return batch

    def _drain_plain(self, batch: list[tuple[bytes, Endpoint]], max_datagrams: int) -> None:
        recvfrom = self.sock.recvfrom
        while len(batch) < max_datagrams:
            try:
                batch.append(recvfrom(65535))
            except ConnectionRefusedError:  # ICMP from an earlier send; nothing to read
                continue

    def _drain_gro(self, batch: list[tuple[bytes, Endpoint]], max_datagrams: int) -> None:
        recvmsg = self.sock.recvmsg
        while len(batch) < max_datagrams:
            try:
                data, ancdata, _, addr = recvmsg(65535, _GRO_CMSG_SPACE)
            except ConnectionRefusedError:  # ICMP from an earlier send; nothing to read
                continue
            segment = 0
            for level, kind, value in ancdata:
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = int.from_bytes(value[:4], sys.byteorder)
            for datagram in split_gro(data, segment):
                batch.append((datagram, addr))

    async def send_batch(self, datagrams: list[tuple[bytes, Endpoint]]) -> int:
        """Send all; unreachable destinations are counted, never raised."""
        sent = 0
        for group, addr, segment in (
            plan_sends(datagrams) if self.gso else (([d], a, 0) for d, a in datagrams)
        ):
            sent += await self._send_group(group, addr, segment)
        return sent  # no checkpoint: the stage yields when its inbox is empty

    async def _send_group(self, group: list[bytes], addr: Endpoint, segment: int) -> int:
        if self.dual and ":" not in addr[0]:
            addr = ("::ffff:" + addr[0], addr[1])  # an IPv4 peer, from a dual-stack socket
        while True:
            try:
                if segment:
                    cmsg = [(SOL_UDP, UDP_SEGMENT, segment.to_bytes(2, sys.byteorder))]
                    self.sock.sendmsg([b"".join(group)], cmsg, 0, addr)
                else:
                    self.sock.sendto(group[0], addr)
                return len(group)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
            except OSError as exc:
                if segment and exc.errno in _GSO_FAILED:
                    self.gso = False  # this path cannot segment: plain sends from now on
                    sent = 0
                    for datagram in group:
                        sent += await self._send_group([datagram], addr, 0)
                    return sent
                # Unreachable, refused, a family this socket cannot send to (an IPv6
                # endpoint on an IPv4 socket), EPERM from a firewall...: the caller counts
                # what was not sent; no destination may end the sender (issue 10).
                self.send_errors += len(group)
                return 0
            except OverflowError:  # a port out of range
                self.send_errors += len(group)
                return 0

    def close(self) -> None:
        self.sock.close()


def unmapped(addr: tuple) -> Endpoint:
    """An address from a dual-stack socket as an endpoint: (host, port), v4-mapped IPv6
    turned back into IPv4."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, addr[1])


class FdPackets(BatchReader):
    """Whole packets on a non-blocking fd (a TUN device)."""

    def __init__(self, fd: int, mtu: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.read_size = mtu + 64

    async def read_batch(self, max_packets: int) -> list[bytes]:
        return await self.read_drained(self.fd, self._drain, max_packets)

    def _drain(self, batch: list[bytes], max_packets: int) -> None:
        read, fd, size = os.read, self.fd, self.read_size
        while len(batch) < max_packets:
            batch.append(read(fd, size))

    async def write_batch(self, packets: list[bytes]) -> int:
        written = 0
        write, fd = os.write, self.fd
        for packet in packets:
            while True:
                try:
                    write(fd, packet)
                    written += 1
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(fd)
                except OSError as exc:  # e.g. EINVAL for a packet the kernel rejects
                    if exc.errno != errno.EINVAL:
                        raise
                    break
        return written  # no checkpoint: the stage yields when its inbox is empty
