"""Targets for the pure codecs of ntma/proto (protocol v2 and the GN link). Each states what
it refuses with (CodecError unless said) and checks that what it accepts is well-formed:
it re-encodes to the same bytes, or the reply built from it stays within its bound."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

from dnslib import DNSRecord

from ..observe.spans import StageStats
from ..proto import dns, ether
from ..proto import fields_v2 as f
from ..proto.bodies_v2 import DIRECTION, RELAY_INFO, REQUESTER, TUNNEL_REF
from ..proto.buffer import CodecError, Reader, Writer
from ..proto.crypto import x25519
from ..proto.devices import HELD_MAX, Devices
from ..proto.dhcp import DhcpConfig, DhcpServer
from ..proto.dhcp_codec import BOOTP_MIN_LEN, build_dhcp, parse_dhcp
from ..proto.envelope import unwrap, wrap
from ..proto.fields_v2 import check_name
from ..proto.gnlink import GnLink, Kind, answer_arp, classify_frame
from ..proto.grant import check_grant, make_grant
from ..proto.handshake import (
    COOKIE_REPLY_LEN,
    InitFrame,
    build_cookie_reply,
    frame_payload,
    mac1_ok,
    open_init,
    parse_cookie_reply,
    parse_init,
    parse_resp,
    unframe_payload,
)
from ..proto.inbound import UDP_FLOWS_MAX, InboundFilter, parse_rule
from ..proto.messages_v2 import MESSAGES, BodyKind, MsgType, decode, encode, kind_of, message_type
from ..proto.names import normalize_fqdn
from ..proto.noise import mac1_key
from ..proto.replay import WINDOW_BITS, ReplayWindow
from ..proto.session import TRANSPORT_HEADER, Keypair, ReplayError, parse_transport
from ..stages.gn_services import answer_dhcp, serve_gn_vip
from . import seeds, seeds6
from .registry import check, target

# --- buffer.Reader -------------------------------------------------------------------------

# Each Reader call, and how its value is written back.
_READS = [
    (Reader.u8, Writer.u8),
    (Reader.u16, Writer.u16),
    (Reader.u32, Writer.u32),
    (Reader.u64, Writer.u64),
    (Reader.blob, Writer.blob),
    (lambda r: r.raw(3), Writer.raw),
]


def _reader_seeds() -> list[bytes]:
    w = Writer().u8(7).u16(2).u32(3).u64(4).blob(b"abc").raw(b"xyz")
    return [b"\x00\x01\x02\x03" + w.getvalue(), b"\x04\x04\x05\x05" + bytes(40)]


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


# --- fields_v2: every Field kind's reader --------------------------------------------------

_FIELDS: list[f.Field] = [
    f.U16,
    f.U32,
    f.U64,
    f.TUNNEL_ID,
    f.PREFIX4,
    f.PREFIX6,
    f.STATUS,
    f.ROUTE,
    f.ROLE,
    f.REACH,
    f.WANT,
    f.GONE_REASON,
    f.KEY,
    f.DC_ID,
    f.GRANT,
    f.padding(19),
    f.TIMESTAMP,
    f.NAME,
    f.ENDPOINT,
    f.OPT_ENDPOINT,
    f.VIP4,
    f.VIP6,
    f.array(f.ENDPOINT, f.UPDATE_ENDPOINTS_MAX),
    f.array(f.ENDPOINT, f.DIRECTION_ENDPOINTS_MAX),
    f.OBSERVED_ENDPOINTS,
    f.optional(RELAY_INFO),
    RELAY_INFO,
    DIRECTION,
    REQUESTER,
    TUNNEL_REF,
    f.array(TUNNEL_REF, f.RELAY_KEEPALIVE_MAX),
]


def _field_seeds() -> list[bytes]:
    """One byte naming a field (index into _FIELDS), then bytes of a real message where
    that field reads: every field is seeded with the values the messages carry."""
    bodies = [encode(m) for m in seeds.messages()]
    out = []
    for i, kind in enumerate(_FIELDS):
        found = 0
        for body in bodies:
            for at in range(1, len(body)):
                with contextlib.suppress(CodecError):
                    kind.read(Reader(body[at:]))
                    out.append(bytes((i,)) + body[at:])
                    found += 1
                    break
            if found >= 6:
                break
    return out


@target("fields_v2.readers", _field_seeds)
def fuzz_fields(data: bytes) -> None:
    """Byte 0 picks a Field; what it reads writes back the same bytes, within max_size."""
    if not data:
        return
    kind = _FIELDS[data[0] % len(_FIELDS)]
    r = Reader(data[1:])
    value = kind.read(r)
    consumed = data[1 : len(data) - len(r.rest())]
    w = Writer()
    kind.write(w, value)
    check(w.getvalue() == consumed, f"{kind.name} does not write back")
    check(len(consumed) <= kind.max_size, f"{kind.name} longer than its max_size")
    if kind is f.NAME:
        check(value == value.lower() and len(value) <= f.NAME_MAX, "name not as v2 sends it")
    if kind in (f.ENDPOINT, f.OPT_ENDPOINT) and value is not None:
        f.check_endpoint(value)


@target("fields_v2.check_name", lambda: [b"mn.ntm.example", b"a" * 63 + b".b", b"A.b", b"a..b"])
def fuzz_check_name(data: bytes) -> None:
    """A name that passes fits DNS: 253 bytes, labels 1..63 of a-z 0-9 -, and packs."""
    name = f.check_name(data)
    labels = name.split(".")
    check(len(name) <= 253 and all(1 <= len(x) <= 63 for x in labels), "name over a limit")
    check(name.encode() == data, "name changed")
    DNSRecord.question(name).pack()


# --- messages_v2.decode, one target per type ---------------------------------------------------

_KINDS = tuple(BodyKind)


def _decode_target(msg_type: MsgType) -> None:
    def run(data: bytes) -> None:
        msg = decode(data)
        kind = kind_of(message_type(msg))
        check(encode(msg) == data, "decoded body does not re-encode to itself")
        check(decode(data, where=kind) == msg, "refused where it belongs")
        for other in _KINDS:
            if other is not kind:
                with contextlib.suppress(CodecError):
                    decode(data, where=other)
                    check(False, f"a {kind.value} accepted as a {other.value}")
        check(len(data) <= MESSAGES[message_type(msg)].max_body, "body over its max size")

    run.__doc__ = f"decode({msg_type.name}): whatever decodes re-encodes; where= holds"
    target(f"messages.{msg_type.name.lower()}", lambda: seeds.bodies_of(msg_type))(run)


for _msg_type in MsgType:
    _decode_target(_msg_type)


# --- handshake ---------------------------------------------------------------------------------

_DC_MAC1 = mac1_key(seeds.key("dc").public)


@target("handshake.parse_init", seeds.handshakes)
def fuzz_parse_init(data: bytes) -> None:
    """A frame's parts are the datagram's bytes; mac1 is checked without raising."""
    frame = parse_init(data)
    check(frame.sender_index == int.from_bytes(data[4:8], "big"), "wrong sender index")
    check(data[:8] + frame.noise_message + frame.mac1 + frame.mac2 == data, "parts lost")
    check(isinstance(mac1_ok(frame, _DC_MAC1), bool), "mac1_ok is not a bool")


@target("handshake.open_init", seeds.inits, max_input=1500)
def fuzz_open_init(data: bytes) -> None:
    """open_init as the DC, mac1 or not (what a responder does after mac1): CodecError only;
    what opens was made for the DC's key by one of the world's nodes."""
    opened = open_init(parse_init(data), seeds.key("dc"))
    check(opened.initiator_public in (seeds.key("mn").public, seeds.key("cn").public), "who?")
    f.check_timestamp(opened.timestamp)


@target("handshake.parse_resp", seeds.handshakes)
def fuzz_parse_resp(data: bytes) -> None:
    """Indexes and parts from the datagram's bytes; mac2 is zero."""
    frame = parse_resp(data)
    check((frame.sender_index, frame.receiver_index) == struct.unpack_from("!II", data, 4), "idx")
    check(data[:12] + frame.noise_message + frame.mac1 + bytes(16) == data, "parts lost")


def _cookie_init_mac1() -> bytes:
    return seeds.captured(1, seeds.DC_EP)[0][-32:-16]


@target("handshake.parse_cookie_reply", lambda: seeds.cookie_replies() + seeds.inits()[:1])
def fuzz_parse_cookie_reply(data: bytes) -> None:
    """Open as the DC's initiator would; what opens is rebuilt to the same bytes."""
    mac1 = _cookie_init_mac1()
    receiver, cookie = parse_cookie_reply(
        data, responder_public=seeds.key("dc").public, init_mac1=mac1
    )
    check(len(data) == COOKIE_REPLY_LEN and len(cookie) == 16, "wrong sizes")
    fake_init = bytes(4) + receiver.to_bytes(4, "big") + bytes(142) + mac1 + bytes(16)
    again = build_cookie_reply(
        InitFrame(fake_init, receiver),
        responder_public=seeds.key("dc").public,
        nonce=data[8:32],
        cookie=cookie,
    )
    check(again == data, "cookie reply does not rebuild")


def _payload_seeds() -> list[bytes]:
    return [frame_payload(b"", 2), frame_payload(b"abc", 40), frame_payload(bytes(12) + b"x", 9)]


@target("handshake.unframe_payload", _payload_seeds)
def fuzz_unframe_payload(data: bytes) -> None:
    """length ‖ content ‖ zero padding: frames again to the same bytes."""
    content = unframe_payload(data)
    check(frame_payload(content, len(data)) == data, "payload does not re-frame")


# --- session and envelope ------------------------------------------------------------------


@target("session.parse_transport", lambda: seeds.transports() + seeds.handshakes()[:2])
def fuzz_parse_transport(data: bytes) -> None:
    """(type, index, counter) pack back to the 16 header bytes."""
    kind, index, counter = parse_transport(data)
    check(TRANSPORT_HEADER.pack(2, kind, 0, index, counter) == data[:16], "header lost")


def _receiving_keys() -> dict[int, tuple[bytes, bytes]]:
    """Receiver index -> (send key, receive key) of the world keypair holding it."""
    out = {}
    for name in ("dc", "rs", "mn", "cn"):
        for kp in seeds.world_keypairs(name):
            out[kp.local_index] = (kp.send_key, kp.receive_key)
    return out


_KEYS = _receiving_keys()
_ANY_KEYS = next(iter(_KEYS.values()))


@target("session.keypair_open", seeds.transports)
def fuzz_keypair_open(data: bytes) -> None:
    """Keypair.open on a fresh keypair of the receiver the index names: AuthError or a
    payload; a payload opened once is a ReplayError the second time."""
    _, index, counter = parse_transport(data)
    send_key, receive_key = _KEYS.get(index, _ANY_KEYS)
    keypair = Keypair(send_key, receive_key, index, 1, 0.0, initiator=False)
    keypair.open(data, counter)
    try:
        keypair.open(data, counter)
    except ReplayError:
        return
    check(False, "the same counter opened twice")


@target("envelope.unwrap", lambda: seeds.envelopes() + seeds.handshakes()[:2])
def fuzz_unwrap(data: bytes) -> None:
    """What unwraps wraps back to the same bytes, and carries a handshake."""
    dc_id, tunnel_id, inner = unwrap(data)
    check(wrap(dc_id, tunnel_id, inner) == data, "envelope does not re-wrap")
    check(inner[0] == 2 and inner[1] in (1, 2, 3), "envelope carries no handshake")


# --- grant ---------------------------------------------------------------------------------------


@target("grant.check_grant", seeds.grants)
def fuzz_check_grant(data: bytes) -> None:
    """A grant that checks is the DC's, in time, for two ends, and re-makes to its bytes."""
    grant = check_grant(seeds.relay_grant_key(), data, seeds.EPOCH_MS, seeds.DC_ID)
    check(make_grant(seeds.relay_grant_key(), grant) == data, "grant does not re-make")
    check(grant.tunnel_id != 0 and grant.end_a != grant.end_b, "a grant no DC makes")
    check(grant.expires_ms >= seeds.EPOCH_MS and grant.dc_id == seeds.DC_ID, "stale or foreign")


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
    replies = [dns.answer_for_status(query, status, "10.99.0.6") for status in f.Status]
    replies += [
        dns.answer_for_status(query, f.Status.OK, None),
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
    link = GnLink(seeds.ADAPTER_MAC, Devices("gn.ntm.example"))
    link.set_vip("10.99.0.23", 16)
    link.set_ipv6("fd00:99::17", 64, 1400, upstream=True)
    link.devices.admit(seeds.GN_MAC)
    return link


@target("gnlink.classify_frame", lambda: seeds.frames() + seeds6.ipv6_frames())
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


def _device_link() -> GnLink:
    """Host names allowed, two devices at most: every DHCP path of devices.py is reachable."""
    devices = Devices("gn.ntm.example", host_names="site.ntm.example", max_devices=2)
    link = GnLink(seeds.ADAPTER_MAC, devices)
    serve_gn_vip(link, "10.99.0.23", 16, lease_time=600, mtu=1400)
    devices.named("printer.site.ntm.example", "10.99.0.24")
    return link


def _dhcp_with_names() -> list[bytes]:
    """DISCOVERs from new MACs with a host name (12) and a client FQDN (81)."""
    out = []
    for i, options in enumerate(
        ([(12, b"printer")], [(81, b"\x00\x00\x00cam.site.ntm.example")], [(12, b"\xff" * 70)])
    ):
        mac = bytes((2, 0, 0, 0, 0xDD, i))
        payload = build_dhcp(message_type=1, xid=i, chaddr=mac, options=options)
        udp = ether.build_udp(bytes(4), b"\xff" * 4, 68, 67, payload)
        out.append(ether.eth_header(b"\xff" * 6, mac, ether.ETH_P_IP) + udp)
    return out


@target("devices.answer_dhcp", lambda: _dhcp_with_names() + seeds.frames()[:3])
def fuzz_device_dhcp(data: bytes) -> None:
    """A DHCP frame from any MAC: replies are frames from our MAC; the table stays bounded."""
    link = _device_link()
    stats = StageStats("dhcp")
    replies, _ = answer_dhcp([data], link, stats, 0.0, lambda fqdn: None)
    for reply in replies:
        check(reply[6:12] == seeds.ADAPTER_MAC and len(reply) <= 1514, "bad DHCP reply frame")
    check(len(link.devices.by_mac) <= 2, "more devices than max_devices")
    for device in link.devices.by_mac.values():
        check(len(device.held) <= HELD_MAX, "held frames past the bound")
        check_name(device.fqdn)


@target("inbound.allows", lambda: seeds.ip_packets() + [f[14:] for f in seeds6.ipv6_frames()])
def fuzz_inbound(data: bytes) -> None:
    """Any packet from a peer is judged without raising; the flow table stays bounded."""
    rule = InboundFilter((parse_rule("tcp/80"), parse_rule("udp/53")))
    rule.note_outbound(data, 0.0)
    check(rule.allows(data, 1.0) in (True, False), "not a verdict")
    check(len(rule._udp) <= UDP_FLOWS_MAX, "flow table past its bound")


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
