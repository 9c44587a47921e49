"""Small I/O interfaces the stages use, so tests can swap in channel-backed fakes.

Reads return as soon as data is there without a Trio checkpoint, and writes end
without one: every stage loop already passes a checkpoint once per batch (its channel
send or receive), and each extra one would cost a trip through the scheduler per hop.

PacketIO: a TUN device (read and write whole IP packets, in batches).
DatagramIO: the node's one UDP socket (signalling and tunnels share it, so the
NAT mapping the DC observes is the one peers reach).
"""

from __future__ import annotations

from typing import Protocol

from ..proto.buffer import Endpoint

BATCH_MAX = 128  # packets drained from a socket or TUN per read: one batch, one queue item


class PacketIO(Protocol):
    async def read_batch(self, max_packets: int) -> list[bytes]: ...
    async def write_batch(self, packets: list[bytes]) -> int: ...


class DatagramIO(Protocol):
    async def recv_batch(self, max_datagrams: int) -> list[tuple[bytes, Endpoint]]: ...
    async def send_batch(self, datagrams: list[tuple[bytes, Endpoint]]) -> int: ...
