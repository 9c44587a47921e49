"""Non-blocking file descriptor helpers: drain while data is there, then wait."""

from __future__ import annotations

import errno
import os
import socket

import trio

from ..proto.buffer import Endpoint

_UNREACHABLE = {
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ECONNREFUSED,
    errno.EINVAL,
    errno.EADDRNOTAVAIL,
    errno.EPERM,
    errno.EMSGSIZE,
}


class UdpSocket:
    """A non-blocking UDP socket read and written in batches."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.send_errors = 0

    @classmethod
    def bind(cls, endpoint: Endpoint) -> UdpSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind(endpoint)
        return cls(sock)

    async def recv_batch(self, max_datagrams: int) -> list[tuple[bytes, Endpoint]]:
        batch: list[tuple[bytes, Endpoint]] = []
        recvfrom = self.sock.recvfrom
        while True:
            try:
                while len(batch) < max_datagrams:
                    batch.append(recvfrom(65535))
            except BlockingIOError:
                pass
            except ConnectionRefusedError:  # ICMP from an earlier send; nothing to read
                continue
            if batch:
                await trio.lowlevel.checkpoint()
                return batch
            await trio.lowlevel.wait_readable(self.sock)

    async def send_batch(self, datagrams: list[tuple[bytes, Endpoint]]) -> int:
        """Send all; unreachable destinations are counted, never raised."""
        sent = 0
        sendto = self.sock.sendto
        for datagram, addr in datagrams:
            while True:
                try:
                    sendto(datagram, addr)
                    sent += 1
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)
                except OSError as exc:
                    if exc.errno not in _UNREACHABLE:
                        raise
                    self.send_errors += 1
                    break
        await trio.lowlevel.checkpoint()
        return sent

    def close(self) -> None:
        self.sock.close()


class FdPackets:
    """Whole packets on a non-blocking fd (a TUN device)."""

    def __init__(self, fd: int, mtu: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.read_size = mtu + 64

    async def read_batch(self, max_packets: int) -> list[bytes]:
        batch: list[bytes] = []
        read, fd, size = os.read, self.fd, self.read_size
        while True:
            try:
                while len(batch) < max_packets:
                    batch.append(read(fd, size))
            except BlockingIOError:
                pass
            if batch:
                await trio.lowlevel.checkpoint()
                return batch
            await trio.lowlevel.wait_readable(fd)

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
        await trio.lowlevel.checkpoint()
        return written
