"""UDP GSO/GRO batching on real sockets over loopback, and the pure send planner."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from ntma.io.fdio import GSO_MAX_SEGMENTS, FdPackets, UdpSocket, plan_sends, split_gro

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


async def test_reader_waits_after_emptying_the_fd_and_reads_at_once_after_a_full_batch():
    """BatchReader: a drain that stopped at the batch limit reads again at once; one that
    found the fd empty waits for readiness first (no second EAGAIN), and data that came
    meanwhile is still reported at once (readiness is level-triggered)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader = FdPackets(ours.fileno(), mtu=1500)
    try:
        for i in range(5):
            theirs.send(bytes([i]) * 10)
        assert len(await reader.read_batch(3)) == 3  # stopped at the limit
        with trio.testing.assert_no_checkpoints():
            assert len(await reader.read_batch(3)) == 2  # read at once, found it empty
        theirs.send(b"meanwhile")
        with trio.fail_after(5), trio.testing.assert_checkpoints():
            assert await reader.read_batch(3) == [b"meanwhile"]  # waited, then read

        async def later() -> None:
            await trio.sleep(0.05)
            theirs.send(b"later")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            with trio.fail_after(5):
                assert await reader.read_batch(3) == [b"later"]
    finally:
        ours.close()
        theirs.close()


async def test_no_destination_ends_the_sender():
    """An IPv6 endpoint on an IPv4 socket, the limited broadcast without SO_BROADCAST, port 0:
    each is counted as not sent, and the next datagram still goes out (issue 10)."""
    receiver = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await receiver.bind(("127.0.0.1", 0))
    sender = UdpSocket.bind(("127.0.0.1", 0))
    try:
        bad = [
            (b"a", ("2001:db8::1", 7401)),
            (b"b", ("255.255.255.255", 7401)),
            (b"c", ("127.0.0.1", 0)),
        ]
        good = [(b"ok", receiver.getsockname())]
        assert await sender.send_batch(bad + good) == 1
        assert sender.send_errors == 3
        with trio.fail_after(5):
            assert await receiver.recv(10) == b"ok"
    finally:
        sender.close()
        receiver.close()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_a_dual_stack_socket_serves_both_families_with_plain_ipv4_endpoints():
    """Bound to "::", one socket talks to an IPv4 and an IPv6 peer; the IPv4 peer's address
    comes up as plain IPv4 (never ::ffff:...), and replies to it go out mapped."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    dual = UdpSocket.bind(("::", 0))
    port = dual.sock.getsockname()[1]
    v4, v6 = UdpSocket.bind(("127.0.0.1", 0)), UdpSocket.bind(("::1", 0))
    try:
        for offload in (True, False):
            dual.gso = v4.gso = v6.gso = offload
            await v4.send_batch([(b"from four", ("127.0.0.1", port))])
            await v6.send_batch([(b"from six", ("::1", port))])
            got: list[tuple[bytes, tuple]] = []
            with trio.fail_after(5):
                while len(got) < 2:
                    got += await dual.recv_batch(16)
            by_payload = dict(got)
            assert by_payload[b"from four"] == ("127.0.0.1", v4.sock.getsockname()[1])
            assert by_payload[b"from six"] == ("::1", v6.sock.getsockname()[1])
            sent = await dual.send_batch([(b"back", by_payload[b"from four"])] * 2)
            sent += await dual.send_batch([(b"back6", by_payload[b"from six"])])
            assert sent == 3 and dual.send_errors == 0
            with trio.fail_after(5):
                assert [d for d, _ in await v4.recv_batch(16)][:1] == [b"back"]
                assert [d for d, a in await v6.recv_batch(16)] == [b"back6"]
            with trio.move_on_after(0.2):
                await v4.recv_batch(16)  # the second "back", coalesced or not
    finally:
        for sock in (dual, v4, v6):
            sock.close()


IF_INET6_SAMPLE = """\
20010db8000000000000000000000040 02 40 00 80     eth0
fe80000000000000020000fffe0a0001 02 40 20 80     eth0
fd000099000000000000000000000003 05 70 00 80     ntm0
20010db8000000000000000000000041 02 40 00 c0     eth0
20010db8000000000000000000000042 03 40 00 20     wan0
00000000000000000000000000000001 01 80 10 80       lo
"""


def test_a_dual_stack_node_reports_its_usable_global_ipv6_addresses(tmp_path):
    """Global scope only; not our TUN (its VIP), not tentative (c0) or deprecated (20)."""
    from ntma.io.addresses import global_ipv6_endpoints

    table = tmp_path / "if_inet6"
    table.write_text(IF_INET6_SAMPLE)
    found = global_ipv6_endpoints(7401, {"ntm0"}, str(table))
    assert found == [("2001:db8::40", 7401)]
    assert global_ipv6_endpoints(7401, set(), str(tmp_path / "missing")) == []
