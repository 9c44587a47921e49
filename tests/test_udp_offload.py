"""UDP GSO/GRO batching on real sockets over loopback, and the pure send planner."""

from __future__ import annotations

import trio

from ntma.io.fdio import GSO_MAX_SEGMENTS, UdpSocket, plan_sends, split_gro

A = ("127.0.0.1", 9)
B = ("127.0.0.2", 9)


def test_plan_groups_equal_sizes_to_one_destination():
    datagrams = [(b"x" * 1000, A)] * 3 + [(b"y" * 400, A)] + [(b"z" * 1000, A)] + [(b"w", B)]
    plans = plan_sends(datagrams)
    assert [(len(g), addr, seg) for g, addr, seg in plans] == [
        (4, A, 1000),  # three full segments and a shorter last one
        (1, A, 0),  # after a short segment a new run starts
        (1, B, 0),
    ]


def test_plan_respects_segment_count_and_size_limits():
    plans = plan_sends([(b"x" * 100, A)] * (GSO_MAX_SEGMENTS + 5))
    assert [len(g) for g, _, _ in plans] == [GSO_MAX_SEGMENTS, 5]
    big = plan_sends([(b"x" * 1500, A)] * 3)  # larger than one frame: never coalesced
    assert [(len(g), seg) for g, _, seg in big] == [(1, 0)] * 3
    assert sum(len(g) for g, _, _ in plan_sends([(b"x" * 1460, A)] * 100)) == 100


def test_split_gro():
    assert split_gro(b"a" * 10 + b"b" * 10 + b"c" * 5, 10) == [b"a" * 10, b"b" * 10, b"c" * 5]
    assert split_gro(b"abc", 0) == [b"abc"]


async def test_gso_send_arrives_as_separate_datagrams_or_gro_batch():
    receiver = UdpSocket.bind(("127.0.0.1", 0))
    sender = UdpSocket.bind(("127.0.0.1", 0))
    to = receiver.sock.getsockname()
    payloads = [bytes([i]) * 1200 for i in range(40)] + [b"tail" * 10]
    try:
        assert await sender.send_batch([(p, to) for p in payloads]) == len(payloads)
        got: list[bytes] = []
        with trio.fail_after(5):
            while len(got) < len(payloads):
                got += [d for d, _ in await receiver.recv_batch(128)]
        assert got == payloads  # same datagrams, same order, whatever the kernel coalesced
    finally:
        sender.close()
        receiver.close()


async def test_plain_socket_without_offload_still_works():
    receiver = UdpSocket.bind(("127.0.0.1", 0), offload=False)
    sender = UdpSocket.bind(("127.0.0.1", 0), offload=False)
    to = receiver.sock.getsockname()
    try:
        assert not receiver.gro and not sender.gso
        await sender.send_batch([(b"one", to), (b"two", to)])
        with trio.fail_after(5):
            got = [d for d, _ in await receiver.recv_batch(8)]
            while len(got) < 2:
                got += [d for d, _ in await receiver.recv_batch(8)]
        assert got == [b"one", b"two"]
    finally:
        sender.close()
        receiver.close()
