"""Targets for the pure codecs of ntma/proto. Each states what it refuses with (CodecError
unless said) and checks that what it accepts is well-formed: it re-encodes, or the reply
built from it stays within its bound."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

from dnslib import DNSRecord

from ..proto import dns, ether
from ..proto.buffer import CodecError, Reader, Writer
from ..proto.crypto import SignalBox, x25519
from ..proto.dhcp import DhcpConfig, DhcpServer
from ..proto.dhcp_codec import BOOTP_MIN_LEN, build_dhcp, parse_dhcp
from ..proto.gnlink import GnLink, Kind, answer_arp, classify_frame
from ..proto.grant import check_grant, make_grant
from ..proto.messages import (
    MAX_NAME_BYTES,
    MESSAGE_TYPES,
    MsgType,
    Status,
    decode_body,
    encode_body,
    message_type,
)
from ..proto.names import normalize_fqdn
from ..proto.packet import (
    VERSION,
    open_message,
    pack_data_header,
    peek_sender,
    relayed_tunnel_id,
    unpack_data_header,
    unwrap_envelope,
    wrap_envelope,
)
from ..proto.replay import WINDOW_BITS, ReplayWindow
from . import seeds
from .registry import check, target

# --- buffer.Reader -------------------------------------------------------------------------

# Each Reader call, and how its value is written back (None: not symmetric, skip the check).
_READS = [
    (Reader.u8, Writer.u8),
    (Reader.u16, Writer.u16),
    (Reader.u32, Writer.u32),
    (Reader.u64, Writer.u64),
    (Reader.blob, Writer.blob),
    (Reader.text, Writer.text),
    (Reader.endpoint, Writer.endpoint),
    (Reader.ipv4, Writer.ipv4),
    (Reader.endpoints, Writer.endpoints),
    (lambda r: r.raw(3), Writer.raw),
]


def _reader_seeds() -> list[bytes]:
    w = Writer().u8(7).u16(2).u32(3).u64(4).blob(b"abc").text("é").endpoint(("10.0.0.1", 1))
    w.ipv4("192.0.2.1").endpoints([("2001:db8::1", 2), ("10.0.0.2", 3)])
    return [b"\x00\x01\x02\x03" + w.getvalue(), b"\x08\x08\x06\x04" + bytes(40)]


@target("buffer.reader", _reader_seeds)
def fuzz_reader(data: bytes) -> None:
    """The first 4 bytes pick up to 8 reads; each value read must write back the same bytes."""
    program, rest = data[:4], data[4:]
    ops = [(b >> shift) % len(_READS) for b in program for shift in (0, 4)]
    for op in ops:
        read, write = _READS[op]
        r = Reader(rest)
        try:
            value = read(r)
        except CodecError:
            return
        remaining = r.rest()
        consumed = rest[: len(rest) - len(remaining)]
        check(write(Writer(), value).getvalue() == consumed, f"{read} does not write back")
        rest = remaining


# --- messages.decode_body, one target per type ---------------------------------------------


def _decode_target(msg_type: MsgType) -> None:
    def run(data: bytes) -> None:
        msg = decode_body(msg_type, data)
        check(message_type(msg) == msg_type, "decoded as another type")
        check(encode_body(msg) == data, "decoded body does not re-encode to itself")
        for name in ("fqdn", "peer_fqdn"):
            text = getattr(getattr(msg, "direction", None) or msg, name, None)
            if isinstance(text, str):
                check(len(text.encode()) <= MAX_NAME_BYTES, "name over the limit decoded")

    run.__doc__ = f"decode_body({msg_type.name}): whatever decodes re-encodes to the same bytes"
    target(f"messages.{msg_type.name.lower()}", lambda: seeds.bodies_of(msg_type))(run)


for _msg_type in MESSAGE_TYPES:
    _decode_target(_msg_type)


# --- packet ----------------------------------------------------------------------------------


def _dc_box_for(sender: bytes) -> SignalBox | None:
    return _BOXES.get(sender)


_BOXES = {seeds.key("mn").public: SignalBox(seeds.key("dc"), seeds.key("mn").public)}


@target("packet.open_message", seeds.sealed_messages)
def fuzz_open_message(data: bytes) -> None:
    """Open as the DC would (mn's key known, others UnknownPeer); the message re-encodes."""
    sender, msg = open_message(data, _dc_box_for)
    check(sender == data[4:36], "sender is not the header's key")
    encode_body(msg)


@target("packet.peek_sender", seeds.sealed_messages)
def fuzz_peek_sender(data: bytes) -> None:
    """The claimed sender is the 32 bytes at offset 4 of a long enough packet."""
    sender = peek_sender(data)
    check(len(sender) == 32 and sender == data[4:36], "sender is not the header's key")


@target("packet.unwrap_envelope", lambda: seeds.envelopes() + seeds.sealed_messages()[:4])
def fuzz_unwrap_envelope(data: bytes) -> None:
    """What unwraps wraps back to the same bytes (reserved bytes aside)."""
    tunnel_id, inner = unwrap_envelope(data)
    again = wrap_envelope(tunnel_id, inner)
    check(again[:2] + again[4:] == data[:2] + data[4:], "envelope does not re-wrap")


@target("packet.unpack_data_header", lambda: seeds.data_packets() + seeds.envelopes())
def fuzz_unpack_data_header(data: bytes) -> None:
    """(tunnel id, counter) pack back to the header's bytes (reserved bytes aside)."""
    tunnel_id, counter = unpack_data_header(data)
    header = pack_data_header(tunnel_id, counter)
    check(header[:2] + header[4:] == data[:2] + data[4:16], "data header does not re-pack")


@target("packet.relayed_tunnel_id", lambda: seeds.data_packets() + seeds.envelopes())
def fuzz_relayed_tunnel_id(data: bytes) -> None:
    """Data and envelopes only; the id is the u32 at offset 4."""
    tunnel_id = relayed_tunnel_id(data)
    check(data[0] == VERSION and tunnel_id == int.from_bytes(data[4:8], "big"), "wrong id")


# --- grant -----------------------------------------------------------------------------------


@target("grant.check_grant", seeds.grants)
def fuzz_check_grant(data: bytes) -> None:
    """A grant that checks is the DC's and re-makes to the same bytes."""
    grant = check_grant(seeds.relay_grant_key(), data, seeds.EPOCH_MS)
    check(make_grant(seeds.relay_grant_key(), grant) == data, "grant does not re-make")


@target("crypto.x25519", lambda: [seeds.key("mn").public, bytes(32), b"\x01" + bytes(31)])
def fuzz_x25519(data: bytes) -> None:
    """Any 32 bytes as a peer key: a shared secret or AuthError (low order)."""
    peer = data[:32].ljust(32, b"\0")
    check(len(x25519(seeds.key("dc").private, peer)) == 32, "shared secret of the wrong size")


# --- DNS -------------------------------------------------------------------------------------


@target("dns.parse_query", seeds.dns_queries)
def fuzz_parse_query(data: bytes) -> None:
    """One question; its name fits RFC 1035 (255 bytes on the wire, labels of 63)."""
    query = dns.parse_query(data)
    labels = query.record.questions[0].qname.label
    check(all(len(label) <= dns.MAX_LABEL for label in labels), "label over 63 bytes")
    check(sum(len(label) + 1 for label in labels) + 1 <= dns.MAX_NAME_WIRE, "name too long")
    check(query.name == normalize_fqdn(query.name), "name not normalized")


@target("dns.replies", seeds.dns_queries)
def fuzz_dns_replies(data: bytes) -> None:
    """Every reply builder on a parsed query returns a parseable reply of at most MAX_REPLY."""
    query = dns.parse_query(data)
    replies = [dns.answer_for_status(query, status, "10.99.0.6") for status in Status]
    replies += [
        dns.answer_for_status(query, Status.OK, None),
        dns.zone_answer(query, "10.99.0.6", True),
        dns.zone_answer(query, None, True),
        dns.zone_answer(query, None, False),
        dns.refused(query),
        dns.servfail(query),
    ]
    for reply in replies:
        check(len(reply) <= dns.MAX_REPLY, f"reply of {len(reply)} bytes")
        parsed = DNSRecord.parse(reply)
        check(parsed.header.id == query.record.header.id and parsed.header.qr == 1, "bad reply")


# --- DHCP ------------------------------------------------------------------------------------


@target("dhcp.parse", seeds.dhcp_payloads)
def fuzz_parse_dhcp(data: bytes) -> None:
    """A parsed message builds again (chaddr, fields and options as parsed)."""
    msg = parse_dhcp(data)
    options = [(code, value) for code, value in msg.options.items() if code != 53]
    build_dhcp(
        message_type=msg.message_type,
        xid=msg.xid,
        chaddr=msg.chaddr,
        op=msg.op,
        options=options,
        ciaddr=msg.ciaddr,
        yiaddr=msg.yiaddr,
        siaddr=msg.siaddr,
        giaddr=msg.giaddr,
        flags=msg.flags,
        secs=msg.secs,
        hops=msg.hops,
    )


_DHCP_CONFIG = DhcpConfig(server_ip="10.99.0.1", prefix_len=16, lease_time=600, domain=seeds.ZONE)
_DHCP_REPLY_MAX = 576  # RFC 2131: every client takes 576 bytes; our options are fixed


@target("dhcp.server", seeds.dhcp_payloads)
def fuzz_dhcp_server(data: bytes) -> None:
    """A bound server's receive path: replies are well-formed DHCP of bounded size."""
    server = DhcpServer(_DHCP_CONFIG)
    server.set_address("10.99.0.23")
    for payload in _BIND:
        server.handle(payload, 0.0)
    reply = server.handle(data, 1.0)
    server.events()
    if reply is not None:
        check(BOOTP_MIN_LEN <= len(reply.payload) <= _DHCP_REPLY_MAX, "reply size out of bounds")
        parse_dhcp(reply.payload)
        check(len(reply.dst_mac) == 6, "bad destination MAC")
        ipaddress.IPv4Address(reply.dst_ip)


_BIND = [seeds.dhcp_request_selecting()]  # then the GN holds a lease


# --- the GN link -----------------------------------------------------------------------------


def _link() -> GnLink:
    link = GnLink(seeds.ADAPTER_MAC)
    link.set_vip("10.99.0.23", 16)
    link.gn_mac = seeds.GN_MAC
    return link


@target("gnlink.classify_frame", seeds.frames)
def fuzz_classify_frame(data: bytes) -> None:
    """Every frame gets a Kind; only DROP carries a reason."""
    kind, reason = classify_frame(data, _link())
    check(isinstance(kind, Kind) and (kind is Kind.DROP) == bool(reason), "bad classification")


@target("gnlink.answer_arp", seeds.arp_frames)
def fuzz_answer_arp(data: bytes) -> None:
    """A reply is a 60-byte ARP reply to the asker, from our MAC."""
    reply = answer_arp(data, _link())
    if reply is not None:
        check(len(reply) == 60 and reply[6:12] == seeds.ADAPTER_MAC, "bad ARP reply")
        check(ether.parse_arp(reply)[0] == ether.ARP_REPLY, "not an ARP reply")


# --- ether -----------------------------------------------------------------------------------


@target("ether.parsers", seeds.frames)
def fuzz_ether_parsers(data: bytes) -> None:
    """eth_type, parse_arp, ipv4_header_len, parse_udp and build_icmp_error on one frame."""
    ether.eth_type(data)
    with contextlib.suppress(CodecError):
        ether.parse_arp(data)
    packet = data[ether.ETH_HEADER :]
    ihl = ether.ipv4_header_len(packet)
    icmp = ether.build_icmp_error(seeds.ROUTER_IP, packet, ether.ICMP_HOST_UNREACH)
    check(len(icmp) == 20 + 8 + ihl + min(8, len(packet) - ihl), "ICMP error of the wrong size")
    try:
        _, _, payload = ether.parse_udp(packet)
    except CodecError:
        return
    check(len(payload) <= len(packet) - ihl - 8, "UDP payload longer than the packet")


def _tcp_checksum_ok(packet: bytes, ihl: int) -> bool:
    segment = packet[ihl : (packet[2] << 8) | packet[3]]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, ether.PROTO_TCP, len(segment))
    return ether.checksum(pseudo + segment) == 0


@target("ether.clamp_mss", seeds.ip_packets, rejects=())
def fuzz_clamp_mss(data: bytes) -> None:
    """Total; a clamped SYN differs only in the MSS and checksum, and a right checksum stays
    right (this is what caught the odd-offset bug)."""
    out = ether.clamp_mss(data, 1360)
    check(len(out) == len(data), "length changed")
    if out == data:
        return
    ihl = ether.ipv4_header_len(data)
    changed = [i for i in range(len(data)) if out[i] != data[i]]
    check(all(i in (ihl + 16, ihl + 17) or i > ihl + 20 for i in changed), "header changed")
    if (data[2] << 8 | data[3]) == len(data) and _tcp_checksum_ok(data, ihl):
        check(_tcp_checksum_ok(out, ihl), "clamping broke a right TCP checksum")


# --- replay ----------------------------------------------------------------------------------


@target(
    "replay.window",
    lambda: [bytes(range(64)), b"\x00\x00\xff\xff" * 8],
    rejects=(),
    max_input=256,  # 128 counters a run: longer runs only shift the same bitmap longer
)
def fuzz_replay_window(data: bytes) -> None:
    """Counters from 2-byte steps: never accepted twice, never older than the window."""
    window, seen, highest = ReplayWindow(), set(), -1
    counter = 0
    for i in range(0, len(data) - 1, 2):
        step = int.from_bytes(data[i : i + 2], "big")
        counter = max(0, counter + (step - 0x8000) * (1 if step & 1 else 97))
        accepted = window.accept(counter)
        if counter in seen or counter <= highest - WINDOW_BITS:
            check(not accepted, f"counter {counter} accepted again or too old")
        elif counter > highest:
            check(accepted, f"newest counter {counter} refused")
        if accepted:
            seen.add(counter)
            highest = max(highest, counter)
