"""AF_PACKET raw socket on the GN-facing interface, read and written in batches."""

from __future__ import annotations

import fcntl
import socket
import struct

import trio

from .fdio import BatchReader

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_ALLMULTI = 2
SIOCGIFHWADDR = 0x8927


def interface_mac(ifname: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        ifreq = fcntl.ioctl(
            probe.fileno(), SIOCGIFHWADDR, struct.pack("256s", ifname.encode()[:15])
        )
    return ifreq[18:24]


def _ignore_outgoing(sock: socket.socket) -> bool:
    """Ask the kernel not to loop our own transmissions back (Linux 4.20+), so reads
    need no per-frame address to filter them."""
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        return False
    return True


class RawSocket(BatchReader):
    """Whole Ethernet frames on one interface. Our own transmissions, which packet
    sockets also see, are skipped."""

    def __init__(self, ifname: str) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((ifname, 0))
        # Every multicast frame too (IPv6 ND: RS to ff02::2, NS to solicited-node groups),
        # which a real NIC's filter would drop; for as long as this socket is open.
        mreq = struct.pack("iHH8s", socket.if_nametoindex(ifname), PACKET_MR_ALLMULTI, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        self.sock = sock
        self.ignores_outgoing = _ignore_outgoing(sock)
        self.ifname = ifname
        self.mac = interface_mac(ifname)
        self.send_errors = 0

    async def read_batch(self, max_packets: int) -> list[bytes]:
        drain = self._drain if self.ignores_outgoing else self._drain_skipping_outgoing
        return await self.read_drained(self.sock, drain, max_packets)

    def _drain(self, batch: list[bytes], max_packets: int) -> None:
        recv = self.sock.recv
        while len(batch) < max_packets:
            batch.append(recv(65535))

    def _drain_skipping_outgoing(self, batch: list[bytes], max_packets: int) -> None:
        recvfrom = self.sock.recvfrom
        while len(batch) < max_packets:
            frame, addr = recvfrom(65535)
            if addr[2] != PACKET_OUTGOING:
                batch.append(frame)

    async def write_batch(self, frames: list[bytes]) -> int:
        written = 0
        send = self.sock.send
        for frame in frames:
            while True:
                try:
                    send(frame)
                    written += 1
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)
                except OSError:  # e.g. EMSGSIZE, ENETDOWN: counted by the caller
                    self.send_errors += 1
                    break
        return written  # no checkpoint: the stage yields when its inbox is empty

    def close(self) -> None:
        self.sock.close()
