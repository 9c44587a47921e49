"""DNS decisions for the node's and adapter's resolver and the DC's zone (sans-IO).

Parsing and building use dnslib; what to answer lives here as pure functions so
the I/O stages stay thin.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord

from .buffer import CodecError
from .messages import Status
from .names import normalize_fqdn

NTM_TTL = 30
MAX_QUERY = 4096


@dataclass(frozen=True)
class Query:
    record: DNSRecord
    name: str  # lower case, without the trailing dot
    qtype: int


def parse_query(data: bytes) -> Query:
    """One question, QR clear; CodecError for anything else."""
    if len(data) > MAX_QUERY:
        raise CodecError("DNS query too large")
    try:
        record = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, KeyError, UnicodeError) as exc:
        raise CodecError(f"malformed DNS query: {exc}") from exc
    if record.header.qr or len(record.questions) != 1:
        raise CodecError("not a single-question DNS query")
    question = record.questions[0]
    return Query(record, normalize_fqdn(str(question.qname)), question.qtype)


def answer_for_status(query: Query, status: Status, vip: str | None, ttl: int = NTM_TTL) -> bytes:
    """The reply to an NTM-name query once the DC (and tunnel) gave its outcome."""
    reply = query.record.reply()
    if status == Status.OK and vip is not None:
        if query.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(query.name + ".", QTYPE.A, rdata=A(vip), ttl=ttl))
        # AAAA and other types: NOERROR with no answer until the VIPs have IPv6.
    elif status == Status.UNKNOWN:
        reply.header.rcode = RCODE.NXDOMAIN
    else:  # OFFLINE, NO_ROUTE, time-outs, refusals: the name exists, try later
        reply.header.rcode = RCODE.SERVFAIL
    return reply.pack()


def servfail(query: Query) -> bytes:
    reply = query.record.reply()
    reply.header.rcode = RCODE.SERVFAIL
    return reply.pack()


def zone_answer(query: Query, vip: str | None, known: bool, ttl: int = NTM_TTL) -> bytes:
    """The DC's authoritative answer for its zone: A for an online node."""
    reply = query.record.reply()
    reply.header.aa = 1
    if vip is not None and query.qtype in (QTYPE.A, QTYPE.ANY):
        reply.add_answer(RR(query.name + ".", QTYPE.A, rdata=A(vip), ttl=ttl))
    elif not known:
        reply.header.rcode = RCODE.NXDOMAIN
    return reply.pack()


def refused(query: Query) -> bytes:
    reply = query.record.reply()
    reply.header.rcode = RCODE.REFUSED
    return reply.pack()
