"""DNS decisions for the node's and adapter's resolver and the DC's zone (sans-IO).

Parsing and building use dnslib; what to answer lives here as pure functions so
the I/O stages stay thin.

Hostile queries: dnslib parses names it cannot pack (labels over 63 bytes, names
over 255) and follows compression pointers by recursion, so a chain of them in any
section exhausts the stack. parse_query() therefore walks the message itself first,
bounded and without following pointers: one question whose name is plain labels
within RFC 1035's limits, then the other sections' records skipped by their lengths.
dnslib then sees only the header and that question, which is all a reply copies.
Every reply builder is then total, and its output at most MAX_REPLY bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from dataclasses import dataclass

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSError, DNSLabel, DNSRecord

from .buffer import CodecError
from .fields_v2 import VIP6_NONE, Status
from .names import normalize_fqdn

NTM_TTL = 30
MAX_QUERY = 4096
MAX_LABEL = 63  # RFC 1035 2.3.4
MAX_NAME_WIRE = 255  # RFC 1035 2.3.4: a name's wire form, length octets and root included
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_RR_FIXED = 10  # type, class, TTL, RDLENGTH
# Header, the question (name + type + class), one A record whose owner is not compressed.
MAX_REPLY = _HEADER.size + (MAX_NAME_WIRE + 4) + (MAX_NAME_WIRE + _RR_FIXED + 4)


@dataclass(frozen=True)
class Query:
    record: DNSRecord
    name: str  # lower case, without the trailing dot
    qtype: int


def parse_query(data: bytes) -> Query:
    """One question, QR clear; CodecError for anything else."""
    if len(data) > MAX_QUERY:
        raise CodecError("DNS query too large")
    if len(data) < _HEADER.size:
        raise CodecError("malformed DNS query: shorter than the header")
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & _QR or qdcount != 1:
        raise CodecError("not a single-question DNS query")
    question_end = _question_name_end(data, _HEADER.size) + 4
    if question_end > len(data):
        raise CodecError("malformed DNS query: truncated question")
    _skip_records(data, question_end, ancount + nscount + arcount)
    # dnslib sees the header and the question only (see the module docstring).
    head = data[:4] + _HEADER.pack(0, 0, 1, 0, 0, 0)[4:]
    try:
        record = DNSRecord.parse(head + data[_HEADER.size : question_end])
    except (DNSError, ValueError, IndexError, KeyError, UnicodeError) as exc:
        raise CodecError(f"malformed DNS query: {exc}") from exc
    question = record.questions[0]
    return Query(record, normalize_fqdn(str(question.qname)), question.qtype)


def _question_name_end(data: bytes, pos: int) -> int:
    """The offset after a question name made of plain labels (a query's first name has
    nothing earlier to point to, so no compression), within RFC 1035's limits."""
    start = pos
    while True:
        if pos >= len(data):
            raise CodecError("malformed DNS query: truncated name")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length > MAX_LABEL:  # a pointer (0xC0) or a reserved label type (0x40, 0x80)
            raise CodecError(f"DNS question name has a label type or length {length:#x}")
        pos += 1 + length
        if pos + 1 - start > MAX_NAME_WIRE:  # + 1: the root label still to come
            raise CodecError("DNS question name longer than 255 bytes")


def _skip_records(data: bytes, pos: int, count: int) -> None:
    """Check that count resource records follow; their names end at a pointer or root."""
    for _ in range(count):
        while True:
            if pos >= len(data):
                raise CodecError("malformed DNS query: truncated record")
            length = data[pos]
            if length >= 0xC0:
                pos += 2
                break
            if length > MAX_LABEL:
                raise CodecError(f"DNS record name has a label type {length:#x}")
            pos += 1 + length
            if length == 0:
                break
        if pos + _RR_FIXED > len(data):
            raise CodecError("malformed DNS query: truncated record")
        pos += _RR_FIXED + int.from_bytes(data[pos + 8 : pos + 10], "big")
        if pos > len(data):
            raise CodecError("malformed DNS query: truncated record data")


def _owner(query: Query) -> DNSLabel:
    """The answer's owner name: the normalized name, or the question's own labels when the
    text form does not pack back within the limits (escaped bytes, dots inside a label)."""
    try:
        label = DNSLabel(query.name + ".")
    except (UnicodeError, ValueError):  # IDNA refuses it (an empty or oversized label)
        return query.record.questions[0].qname
    if all(len(part) <= MAX_LABEL for part in label.label) and (
        sum(len(part) + 1 for part in label.label) + 1 <= MAX_NAME_WIRE
    ):
        return label
    return query.record.questions[0].qname


def _a_record(query: Query, vip: str, ttl: int) -> RR:
    return RR(_owner(query), QTYPE.A, rdata=A(vip), ttl=ttl)


def _add_addresses(reply, query: Query, vip: str | None, vip6: str | None, ttl: int) -> None:
    """A for an A or ANY question (ANY: that one record, RFC 8482, so a reply stays within
    MAX_REPLY), AAAA for AAAA when the name has an IPv6 VIP; other types and a missing
    family: NOERROR with no answer (the name exists)."""
    if vip is not None and query.qtype in (QTYPE.A, QTYPE.ANY):
        reply.add_answer(_a_record(query, vip, ttl))
    elif vip6 not in (None, VIP6_NONE) and query.qtype == QTYPE.AAAA:
        reply.add_answer(RR(_owner(query), QTYPE.AAAA, rdata=AAAA(vip6), ttl=ttl))


def answer_for_status(
    query: Query, status: Status, vip: str | None, ttl: int = NTM_TTL, vip6: str | None = None
) -> bytes:
    """The reply to an NTM-name query once the DC (and tunnel) gave its outcome."""
    reply = query.record.reply()
    if status == Status.OK and vip is not None:
        _add_addresses(reply, query, vip, vip6, ttl)
    elif status == Status.UNKNOWN:
        reply.header.rcode = RCODE.NXDOMAIN
    elif status == Status.OFFLINE:
        pass  # NOERROR, no address: the name exists, its node is not online (as zone DNS)
    else:  # NO_ROUTE, time-outs, refusals: the name exists, try later
        reply.header.rcode = RCODE.SERVFAIL
    return reply.pack()


def servfail(query: Query) -> bytes:
    reply = query.record.reply()
    reply.header.rcode = RCODE.SERVFAIL
    return reply.pack()


def zone_answer(
    query: Query, vip: str | None, known: bool, ttl: int = NTM_TTL, vip6: str | None = None
) -> bytes:
    """The DC's authoritative answer for its zone: A (and AAAA) for an online node."""
    reply = query.record.reply()
    reply.header.aa = 1
    if vip is not None:
        _add_addresses(reply, query, vip, vip6, ttl)
    elif not known:
        reply.header.rcode = RCODE.NXDOMAIN
    return reply.pack()


def refused(query: Query) -> bytes:
    reply = query.record.reply()
    reply.header.rcode = RCODE.REFUSED
    return reply.pack()


def truncated(query: Query) -> bytes:
    """The reply a rate-limited source gets: TC set and only the question, so it is no
    larger than the query and a real resolver retries over TCP (docs/protocol.md 8)."""
    reply = query.record.reply()
    reply.header.tc = 1
    reply.rr, reply.auth, reply.ar = [], [], []
    return reply.pack()


RRL_PER_S = 20.0  # full answers per second per source prefix
RRL_PREFIXES_MAX = 4096


class ResponseRateLimit:
    """Response-rate limiting for a DNS server that faces the Internet: full answers per
    IPv4 /24 or IPv6 /56 are held to RRL_PER_S (token bucket); beyond it the source gets
    `truncated()` replies. At most RRL_PREFIXES_MAX prefixes, least recently seen evicted."""

    def __init__(self, rate: float = RRL_PER_S) -> None:
        self._rate = rate
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # prefix -> [tokens, at]

    def allow(self, address: str, now: float) -> bool:
        prefix = _rrl_prefix(address)
        bucket = self._buckets.get(prefix)
        if bucket is None:
            bucket = self._buckets[prefix] = [self._rate, now]
            while len(self._buckets) > RRL_PREFIXES_MAX:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(prefix)
        bucket[0] = min(self._rate, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False


def _rrl_prefix(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 56), strict=False))
    v4 = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip
    return str(ipaddress.IPv4Network((v4, 24), strict=False))
