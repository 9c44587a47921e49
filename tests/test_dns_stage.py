"""The DNS responder stage on loopback sockets: NTM names go to the broker, other
names to a stub upstream; UDP and TCP; malformed queries are counted, not fatal."""

from __future__ import annotations

import socket

import pytest
import trio
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from ntma.observe.spans import StageStats
from ntma.proto.fields_v2 import Status
from ntma.proto.node import DirectionResolved
from ntma.stages.dns import (
    TCP_PER_SOURCE,
    DnsResolver,
    TcpConnections,
    run_dns_tcp,
    run_dns_udp,
)
from ntma.stages.signalling import DirectionBroker

ANSWERS = {
    "cn.ntm.example": DirectionResolved("cn.ntm.example", Status.OK, "10.99.0.3"),
    "gone.ntm.example": DirectionResolved("gone.ntm.example", Status.UNKNOWN),
    "off.ntm.example": DirectionResolved("off.ntm.example", Status.OFFLINE),
    "other.ntm.example": DirectionResolved("other.ntm.example", Status.NOT_NTM),
}


async def fake_signalling(broker: DirectionBroker, asked: list[str]) -> None:
    async for ask in broker.requests:
        fqdn = ask.fqdn
        asked.append(fqdn)
        if fqdn in ANSWERS:
            broker.deliver(ANSWERS[fqdn])
        # names not in ANSWERS never get an answer: the DNS stage must time out


async def stub_upstream(sock) -> None:
    while True:
        data, addr = await sock.recvfrom(4096)
        query = DNSRecord.parse(data)
        reply = query.reply()
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.80"), ttl=60))
        await sock.sendto(reply.pack(), addr)


@pytest.fixture
async def dns(nursery):
    stats = StageStats("dns")
    broker = DirectionBroker(stats)
    asked: list[str] = []
    upstream = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await upstream.bind(("127.0.0.1", 0))
    nursery.start_soon(stub_upstream, upstream)
    nursery.start_soon(fake_signalling, broker, asked)
    resolver = DnsResolver(broker, upstream.getsockname(), ["ntm.example"], stats)
    udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await udp.bind(("127.0.0.1", 0))
    await nursery.start(run_dns_udp, udp, resolver, stats)
    tcp = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    await nursery.start(run_dns_tcp, trio.SocketListener(tcp), resolver, stats)
    return udp.getsockname(), tcp.getsockname(), asked, stats


async def ask_udp(server, name: str, qtype: str = "A") -> DNSRecord:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, trio.fail_after(15):
        await sock.sendto(DNSRecord.question(name, qtype).pack(), server)
        return DNSRecord.parse(await sock.recv(4096))


async def test_ntm_name_answered_with_vip(dns):
    server, _, asked, _ = dns
    reply = await ask_udp(server, "cn.ntm.example")
    assert [str(rr.rdata) for rr in reply.rr] == ["10.99.0.3"]
    assert asked == ["cn.ntm.example"]


async def test_aaaa_for_ntm_name_is_empty_noerror(dns):
    reply = await ask_udp(dns[0], "cn.ntm.example", "AAAA")
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr


@pytest.mark.parametrize(
    ("name", "rcode"), [("gone.ntm.example", RCODE.NXDOMAIN), ("off.ntm.example", RCODE.NOERROR)]
)
async def test_unknown_and_offline(dns, name, rcode):
    """Unknown: NXDOMAIN; offline: the name exists but has no address now (no answer)."""
    reply = await ask_udp(dns[0], name)
    assert reply.header.rcode == rcode and not reply.rr


async def test_not_ntm_per_dc_and_ordinary_names_are_forwarded(dns):
    for name in ("other.ntm.example", "www.example.org"):
        reply = await ask_udp(dns[0], name)
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.80"]
    assert "www.example.org" not in dns[2]  # ordinary names never reach signalling


async def test_no_answer_from_signalling_times_out_to_servfail(dns, autojump_clock):
    reply = await ask_udp(dns[0], "slow.ntm.example")
    assert reply.header.rcode == RCODE.SERVFAIL
    assert dns[3].drops["direction_timeout"] == 1


async def test_tcp_dns_two_queries_on_one_connection(dns):
    _, tcp_server, _, _ = dns
    stream = await trio.open_tcp_stream(*tcp_server)
    async with stream:
        for name in ("cn.ntm.example", "www.example.org"):
            query = DNSRecord.question(name).pack()
            await stream.send_all(len(query).to_bytes(2, "big") + query)
        buf = b""
        replies = []
        with trio.fail_after(10):
            while len(replies) < 2:
                buf += await stream.receive_some(4096)
                while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                    size = int.from_bytes(buf[:2], "big")
                    replies.append(DNSRecord.parse(buf[2 : 2 + size]))
                    buf = buf[2 + size :]
    assert [str(r.rr[0].rdata) for r in replies] == ["10.99.0.3", "192.0.2.80"]


async def test_malformed_queries_are_counted_and_service_goes_on(dns):
    server, _, _, stats = dns
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        # garbage, a truncated header, a response instead of a query, a compression loop
        loop = bytes.fromhex("abcd01000001000000000000") + b"\xc0\x0c" + b"\x00\x01\x00\x01"
        response = DNSRecord.question("x.example").reply().pack()
        for junk in (b"\xff" * 7, b"\x00\x01", response, loop):
            await sock.sendto(junk, server)
    await trio.sleep(0.2)
    assert stats.drops["malformed_query"] == 4
    assert (await ask_udp(server, "cn.ntm.example")).rr


# --- hostile clients and a broken upstream (issue 10) --------------------------------------


async def _query_tcp(stream: trio.SocketStream, name: str) -> DNSRecord:
    query = DNSRecord.question(name).pack()
    await stream.send_all(len(query).to_bytes(2, "big") + query)
    buf = b""
    with trio.fail_after(10):
        while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
            chunk = await stream.receive_some(4096)
            assert chunk, "connection closed"
            buf += chunk
    return DNSRecord.parse(buf[2:])


async def test_idle_tcp_connections_from_one_source_are_evicted_for_a_new_one(dns):
    _, tcp_server, _, stats = dns
    idle = [await trio.open_tcp_stream(*tcp_server) for _ in range(TCP_PER_SOURCE)]
    await trio.sleep(0.1)
    fresh = await trio.open_tcp_stream(*tcp_server)
    async with fresh:
        assert str((await _query_tcp(fresh, "cn.ntm.example")).rr[0].rdata) == "10.99.0.3"
    assert stats.drops["tcp_evicted_idle"] >= 1
    with trio.fail_after(5):  # the oldest idle connection was closed by the resolver
        assert await idle[0].receive_some(10) == b""
    for stream in idle:
        await stream.aclose()


async def test_a_reset_in_the_middle_of_a_reply_ends_only_that_connection(dns):
    _, tcp_server, _, _ = dns
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.connect(tcp_server)
    query = DNSRecord.question("www.example.org").pack()
    raw.sendall(len(query).to_bytes(2, "big") + query)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()  # RST: the resolver's send fails
    await trio.sleep(0.3)
    stream = await trio.open_tcp_stream(*tcp_server)
    async with stream:
        assert (await _query_tcp(stream, "cn.ntm.example")).rr


async def test_an_upstream_that_refuses_gives_servfail_not_a_crash():
    stats = StageStats("dns")
    closed = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: the kernel answers ICMP port unreachable
    resolver = DnsResolver(DirectionBroker(stats), ("127.0.0.1", port), ["ntm.example"], stats)
    reply = await resolver.answer(DNSRecord.question("www.example.org").pack())
    assert DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL
    assert stats.drops["upstream_error"] == 1


def test_tcp_connection_limits_refuse_when_nobody_is_idle():
    stats = StageStats("dns")
    conns = TcpConnections(stats)
    keys = [object() for _ in range(TCP_PER_SOURCE + 1)]
    for key in keys[:-1]:
        assert conns.admit(key, "192.0.2.1", trio.CancelScope())
        conns.idle.discard(key)  # all busy answering
    assert not conns.admit(keys[-1], "192.0.2.1", trio.CancelScope())
    assert stats.drops["tcp_connection_limit"] == 1
    assert conns.admit(object(), "192.0.2.2", trio.CancelScope())  # another source is fine
    assert len(conns) == TCP_PER_SOURCE + 1
