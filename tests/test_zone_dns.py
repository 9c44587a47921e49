"""The DC's zone DNS faces the Internet: answers are rate-limited per source prefix (beyond the
limit, a truncated reply no larger than the query), and no input stops it."""

from __future__ import annotations

import socket
from ipaddress import IPv4Network
from types import SimpleNamespace

import trio
from dnslib import DNSRecord

from ntma.dc.server import run_zone_dns
from ntma.dc.vip6 import Vip6Plan
from ntma.observe.spans import Spans
from ntma.proto.dns import RRL_PER_S, ResponseRateLimit, parse_query, truncated


def test_rate_limit_per_prefix_refills_and_is_bounded():
    rrl = ResponseRateLimit(rate=2)
    assert [rrl.allow("198.51.100.7", 0.0) for _ in range(3)] == [True, True, False]
    assert not rrl.allow("198.51.100.200", 0.0)  # the same /24
    assert rrl.allow("198.51.101.1", 0.0)  # another /24
    assert rrl.allow("2001:db8:0:1::1", 0.0) and rrl.allow("2001:db8:0:1::2", 0.0)
    assert not rrl.allow("2001:db8:0:ff::3", 0.0)  # the same /56
    assert rrl.allow("198.51.100.7", 0.5)  # refilled at 2 per second


def test_a_truncated_reply_is_no_larger_than_its_query():
    data = DNSRecord.question("mn.ntm.example", "A").pack()
    reply = DNSRecord.parse(truncated(parse_query(data)))
    assert len(truncated(parse_query(data))) <= len(data)
    assert reply.header.tc == 1 and not reply.rr and str(reply.q.qname) == "mn.ntm.example."


async def test_zone_dns_truncates_a_flooding_source(autojump_clock):
    record = SimpleNamespace(vip="10.99.0.2")
    dc = SimpleNamespace(
        zone="ntm.example",
        store=SimpleNamespace(get=lambda name: record, vip6=Vip6Plan(IPv4Network("10.99.0.0/16"))),
        online_record=lambda name: record,
    )
    spans = Spans()
    server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await server.bind(("127.0.0.1", 0))
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_zone_dns, dc, server, spans)
        query = DNSRecord.question("mn.ntm.example", "A").pack()
        full = cut = 0
        for _ in range(int(RRL_PER_S) + 10):
            await client.sendto(query, server.getsockname())
            reply = DNSRecord.parse(await client.recv(4096))
            if reply.header.tc:
                cut += 1
            else:
                assert str(reply.rr[0].rdata) == "10.99.0.2"
                full += 1
        assert full == int(RRL_PER_S) and cut == 10
        assert spans.stage("dc_dns").drops["rate_limited"] == 10
        nursery.cancel_scope.cancel()
    server.close()
    client.close()
