"""Channel-backed fakes of PacketIO and DatagramIO for in-process tests and benchmarks."""

from __future__ import annotations

import trio

from ..proto.buffer import Endpoint


class FakePackets:
    """A TUN stand-in: tests send packets in with `inject` and read writes from `written`."""

    def __init__(self, depth: int = 64) -> None:
        self._in_send, self._in_recv = trio.open_memory_channel[list[bytes]](depth)
        self.written_send, self.written = trio.open_memory_channel[list[bytes]](depth)

    async def inject(self, packets: list[bytes]) -> None:
        await self._in_send.send(packets)

    async def read_batch(self, max_packets: int) -> list[bytes]:
        return await self._in_recv.receive()

    async def write_batch(self, packets: list[bytes]) -> int:
        await self.written_send.send(list(packets))
        return len(packets)


class FakeLink:
    """Two DatagramIO ends joined by channels; `a` at endpoint_a, `b` at endpoint_b."""

    def __init__(self, endpoint_a: Endpoint, endpoint_b: Endpoint, depth: int = 64) -> None:
        a_to_b = trio.open_memory_channel[list[tuple[bytes, Endpoint]]](depth)
        b_to_a = trio.open_memory_channel[list[tuple[bytes, Endpoint]]](depth)
        self.a = _FakeEnd(endpoint_a, a_to_b[0], b_to_a[1])
        self.b = _FakeEnd(endpoint_b, b_to_a[0], a_to_b[1])


class _FakeEnd:
    def __init__(
        self, me: Endpoint, send: trio.MemorySendChannel, recv: trio.MemoryReceiveChannel
    ) -> None:
        self.me, self._send, self._recv = me, send, recv
        self.sent: list[tuple[bytes, Endpoint]] = []

    async def recv_batch(self, max_datagrams: int) -> list[tuple[bytes, Endpoint]]:
        return await self._recv.receive()

    async def send_batch(self, datagrams: list[tuple[bytes, Endpoint]]) -> int:
        self.sent.extend(datagrams)
        await self._send.send([(d, self.me) for d, _ in datagrams])
        return len(datagrams)
