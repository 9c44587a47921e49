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


class FakeNetwork:
    """A switch for DatagramIO fakes: each attached endpoint gets its own inbox;
    `drop` (datagram, src, dst) -> bool can discard datagrams in flight."""

    def __init__(self, depth: int = 64) -> None:
        self._depth = depth
        self._inboxes: dict[Endpoint, trio.abc.SendChannel] = {}
        self.drop = lambda datagram, src, dst: False
        self.undeliverable = 0

    def attach(self, endpoint: Endpoint) -> FakeUdp:
        send, recv = trio.open_memory_channel[list[tuple[bytes, Endpoint]]](self._depth)
        self._inboxes[endpoint] = send
        return FakeUdp(self, endpoint, recv)

    def deliver(self, src: Endpoint, datagrams: list[tuple[bytes, Endpoint]]) -> None:
        for datagram, dst in datagrams:
            inbox = self._inboxes.get(dst)
            if inbox is None or self.drop(datagram, src, dst):
                self.undeliverable += 1
                continue
            try:
                inbox.send_nowait([(datagram, src)])
            except trio.WouldBlock:  # a full socket buffer drops, as the kernel would
                self.undeliverable += 1


class FakeUdp:
    def __init__(self, net: FakeNetwork, me: Endpoint, inbox: trio.abc.ReceiveChannel) -> None:
        self.net, self.me, self._inbox = net, me, inbox
        self.sent: list[tuple[bytes, Endpoint]] = []

    async def recv_batch(self, max_datagrams: int) -> list[tuple[bytes, Endpoint]]:
        batch = await self._inbox.receive()
        while len(batch) < max_datagrams:  # drain what is queued, like a socket read loop
            try:
                batch.extend(self._inbox.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    async def send_batch(self, datagrams: list[tuple[bytes, Endpoint]]) -> int:
        self.sent.extend(datagrams)
        self.net.deliver(self.me, datagrams)
        await trio.lowlevel.checkpoint()
        return len(datagrams)
