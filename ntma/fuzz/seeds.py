"""Valid inputs built with the project's own builders, and the real-client captures.

Keys are derived from fixed names so every run (and every reproducer) sees the same
bytes. The lab's addresses are used throughout: VIP pool 10.99.0.0/16, router
10.99.0.1, the GN at 10.99.0.23, the Internet segment 198.51.100.0/24.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from functools import cache
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from dnslib import EDNS0, DNSQuestion, DNSRecord

from ..proto import dhcp_codec as dhcp
from ..proto.crypto import SignalBox, StaticKey
from ..proto.ether import (
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    PROTO_TCP,
    build_arp_reply,
    build_ipv4,
    build_udp,
    checksum,
    eth_header,
)
from ..proto.grant import Grant, grant_key, make_grant
from ..proto.messages import (
    GRANT_LEN,
    Deregister,
    DeregisterAck,
    Direction,
    DirectionRequest,
    DirectionResponse,
    Keepalive,
    KeepaliveAck,
    Message,
    Probe,
    ProbeAck,
    Punch,
    Register,
    RegisterAck,
    RelayBind,
    RelayBound,
    RelayInfo,
    Role,
    Route,
    RouteDirection,
    RouteDirectionAck,
    Status,
    TunnelRequest,
    TunnelResponse,
    encode_body,
    message_type,
)
from ..proto.packet import pack_data_header, seal_message, wrap_envelope

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"
EPOCH_MS = 1_700_000_000_000  # the wall clock every fuzzed machine believes in, at now=0
ZONE = "ntm.example"
POOL = "10.99.0.0/16"
DC_ENDPOINT = ("198.51.100.10", 7400)
RS_ENDPOINT = ("198.51.100.60", 7500)
MN_ENDPOINT = ("198.51.100.41", 7401)  # mn's NAT mapping as the DC sees it
CN_ENDPOINT = ("198.51.100.30", 7401)
ADAPTER_MAC = bytes.fromhex("020000000001")
GN_MAC = bytes.fromhex("02005e10000b")
OTHER_MAC = bytes.fromhex("02deadbeef01")
ROUTER_IP = bytes((10, 99, 0, 1))
GN_IP = bytes((10, 99, 0, 23))
PEER_IP = bytes((10, 99, 0, 2))
WEB_IP = bytes((198, 51, 100, 20))
NONCE = bytes(range(12))


@cache
def key(name: str) -> StaticKey:
    """A fixed X25519 key per role name ("dc", "mn", "cn", "rs", "stranger")."""
    private = X25519PrivateKey.from_private_bytes(sha256(name.encode()).digest())
    return StaticKey.from_private(private)


@cache
def relay_grant_key() -> bytes:
    return grant_key(key("dc"), key("rs").public)


def grant(tunnel_id: int = 0x11223344, expires_ms: int = EPOCH_MS + 3_600_000) -> bytes:
    body = Grant(tunnel_id, expires_ms, key("mn").public, key("cn").public)
    return make_grant(relay_grant_key(), body)


# --- signalling --------------------------------------------------------------------------


def directions() -> list[Direction]:
    relay = RelayInfo(RS_ENDPOINT, key("rs").public, grant())
    cn, mn = key("cn").public, key("mn").public
    return [
        Direction(
            0x11223344,
            Route.DIRECT,
            Role.INITIATE,
            "cn.ntm.example",
            "10.99.0.6",
            cn,
            [
                CN_ENDPOINT,
                ("10.20.0.2", 7401),
            ],
        ),
        Direction(0x11223344, Route.DIRECT, Role.RESPOND, "mn.ntm.example", "10.99.0.5", mn, []),
        Direction(
            0x11223345,
            Route.PUNCH,
            Role.INITIATE,
            "cn.ntm.example",
            "10.99.0.6",
            cn,
            [CN_ENDPOINT],
            relay,
        ),
        Direction(
            0x11223346,
            Route.RELAY,
            Role.RESPOND,
            "mn.ntm.example",
            "10.99.0.5",
            mn,
            [("2001:db8::41", 7401)],
            relay,
        ),
    ]


def messages() -> list[Message]:
    """At least one message of every signalling type, with their optional fields."""
    ts = EPOCH_MS
    with_relay, plain, punch, relay_route = directions()
    return [
        Register(1, ts, "mn.ntm.example", [("10.10.1.2", 7401), ("2001:db8::1", 7401)]),
        Register(2, ts, "bücher.ntm.example", []),
        Register(3, ts, "x" * 200 + ".ntm.example", [("10.10.1.2", 7401)] * 16),
        RegisterAck(1, Status.OK, "10.99.0.5", 16, MN_ENDPOINT, 15, "", ("198.51.100.10", 7401)),
        RegisterAck(1, Status.OK, "10.99.0.5", 16, MN_ENDPOINT, 15),
        RegisterAck(7, Status.REFUSED, reason="name mn.ntm.example is not on the admission list"),
        Keepalive(4, ts),
        KeepaliveAck(4, Status.OK, MN_ENDPOINT),
        KeepaliveAck(4, Status.REREGISTER, ("2001:db8::41", 65535)),
        DirectionRequest(5, ts, "cn.ntm.example"),
        DirectionResponse(5, Status.OK, with_relay),
        DirectionResponse(5, Status.OK, punch),
        DirectionResponse(5, Status.NOT_NTM),
        RouteDirection(6, plain),
        RouteDirection(6, relay_route),
        RouteDirection(
            12,
            replace(
                with_relay,
                tunnel_id=0x55667788,
                peer_endpoints=[CN_ENDPOINT, ("2001:db8:1::30", 7401)],
            ),
        ),
        RouteDirectionAck(6, 0x11223344),
        Deregister(8, ts),
        DeregisterAck(8),
        Probe(9, ts),
        ProbeAck(9, MN_ENDPOINT),
        TunnelRequest(10, 0x11223344, ts, key("eph-i").public, "10.99.0.5"),
        TunnelResponse(10, 0x11223344, key("eph-r").public, "10.99.0.6"),
        Punch(0x11223345),
        RelayBind(11, ts, grant()),
        RelayBound(11, 0x11223344, MN_ENDPOINT),
    ]


def tunnel_request() -> TunnelRequest:
    return next(m for m in messages() if isinstance(m, TunnelRequest))


def bodies_of(msg_type: int) -> list[bytes]:
    return [encode_body(m) for m in messages() if message_type(m) == msg_type]


def sealed(msg: Message, sender: str, receiver: str, nonce: bytes = NONCE) -> bytes:
    box = SignalBox(key(sender), key(receiver).public)
    return seal_message(msg, box, key(sender).public, nonce)


def sealed_messages() -> list[bytes]:
    """Every message sealed mn -> dc, plus a few from a key nobody admitted."""
    out = [sealed(m, "mn", "dc") for m in messages()]
    out += [sealed(m, "stranger", "dc") for m in messages()[:3]]
    return out


def data_packets() -> list[bytes]:
    inner = build_udp(GN_IP, PEER_IP, 40000, 80, b"hello")
    return [
        pack_data_header(0x11223344, 0) + bytes(16),
        pack_data_header(0x11223344, 7) + inner + bytes(16),
        pack_data_header(0xFFFFFFFF, (1 << 64) - 1) + bytes(16),
    ]


def envelopes() -> list[bytes]:
    request = tunnel_request()
    return [wrap_envelope(0x11223344, sealed(request, "mn", "cn"))]


def grants() -> list[bytes]:
    return [grant(), grant(1, EPOCH_MS - 1), grant(0xFFFFFFFF, (1 << 64) - 1), bytes(GRANT_LEN)]


# --- DNS ---------------------------------------------------------------------------------


def dns_queries() -> list[bytes]:
    names = ["cn.ntm.example", "Mn.NTM.Example.", "example.com", ".", "_ipp._tcp.local"]
    names += ["a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61]  # 253 bytes
    out = [DNSRecord.question(n, q).pack() for n in names for q in ("A", "AAAA")]
    out.append(DNSRecord.question("cn.ntm.example", "ANY").pack())
    with_edns = DNSRecord.question("cn.ntm.example", "A")
    with_edns.add_ar(EDNS0(udp_len=1232))
    out.append(with_edns.pack())
    out.append(DNSRecord(q=DNSQuestion("cn.ntm.example", 65280)).pack())  # an unknown type
    return out + dns_hostile()


def dns_hostile() -> list[bytes]:
    """Queries that broke parse_query before issue 10: a question label of 100 bytes, a name
    of 320 bytes, and a chain of 1,500 compression pointers (in an unknown type's rdata,
    then named by an answer) that made dnslib recurse past Python's limit."""
    header = struct.pack("!HHHHHH", 0xABCD, 0x0100, 1, 0, 0, 0)
    long_label = header + b"\x64" + b"a" * 100 + b"\0\0\x01\0\x01"
    long_name = header + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\x01\0\x01"
    question = b"\0\0\x01\0\x01"
    hops = 1500
    rr_head = b"\0" + struct.pack("!HHIH", 65280, 1, 0, 2 * hops)
    start = 12 + len(question) + len(rr_head)
    chain = b"".join(
        struct.pack("!H", 0xC000 | (12 if i == 0 else start + 2 * (i - 1))) for i in range(hops)
    )
    last = struct.pack("!H", 0xC000 | (start + 2 * (hops - 1)))
    answer = last + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4)
    pointers = struct.pack("!HHHHHH", 0xABCD, 0x0100, 1, 2, 0, 0) + question + rr_head + chain
    return [long_label, long_name, pointers + answer]


# --- DHCP and the GN link ----------------------------------------------------------------


def dhcp_payloads() -> list[bytes]:
    """The real clients' captures, and our own builder's DISCOVER/REQUEST/RELEASE/..."""
    out = [bytes.fromhex(p.read_text()) for p in sorted((VECTORS / "dhcp").glob("*.hex"))]
    vip = (10, 99, 0, 23)
    server = bytes(ROUTER_IP)
    requested = [(dhcp.OPT_REQUESTED_IP, bytes(vip)), (dhcp.OPT_SERVER_ID, server)]
    params = [(dhcp.OPT_PARAM_REQUEST, bytes((1, 3, 6, 15, 26, 28, 51, 54)))]
    client_id = [(dhcp.OPT_CLIENT_ID, b"\x01" + GN_MAC)]
    for kind, options, ciaddr in (
        (dhcp.DISCOVER, params + client_id, "0.0.0.0"),
        (dhcp.REQUEST, requested + params, "0.0.0.0"),
        (dhcp.REQUEST, params, "10.99.0.23"),
        (dhcp.RELEASE, [(dhcp.OPT_SERVER_ID, server)], "10.99.0.23"),
        (dhcp.DECLINE, requested, "0.0.0.0"),
        (dhcp.INFORM, params, "10.99.0.23"),
    ):
        out.append(
            dhcp.build_dhcp(
                message_type=kind, xid=0x1234, chaddr=GN_MAC, options=options, ciaddr=ciaddr
            )
        )
    out.append(
        dhcp.build_dhcp(
            message_type=dhcp.DISCOVER,
            xid=1,
            chaddr=GN_MAC,
            options=[(dhcp.OPT_OVERLOAD, b"\x03")],
            sname=b"\x0c\x02gn\xff",
            file=b"\x37\x01\x01\xff",
        )
    )
    return out


def dhcp_request_selecting() -> bytes:
    """The GN's REQUEST for 10.99.0.23 from the adapter (10.99.0.1): after it, a lease."""
    options = [(dhcp.OPT_REQUESTED_IP, GN_IP), (dhcp.OPT_SERVER_ID, ROUTER_IP)]
    return dhcp.build_dhcp(message_type=dhcp.REQUEST, xid=0x1234, chaddr=GN_MAC, options=options)


def tcp_syn(options: bytes, src: bytes = GN_IP, dst: bytes = PEER_IP) -> bytes:
    """An IPv4 packet carrying a TCP SYN with these options, checksums right."""
    options += b"\0" * (-len(options) % 4)
    header = (
        struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, (20 + len(options)) << 2, 0x02, 65535, 0, 0)
        + options
    )
    pseudo = src + dst + struct.pack("!BBH", 0, PROTO_TCP, len(header))
    header = header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]
    return build_ipv4(src, dst, PROTO_TCP, header)


def ip_packets() -> list[bytes]:
    """IPv4 packets a GN sends: SYNs with the MSS option at even and odd offsets, UDP."""
    mss = b"\x02\x04\x05\xb4"
    return [
        tcp_syn(mss),
        tcp_syn(b"\x01" + mss),  # MSS at an odd offset
        tcp_syn(b"\x01\x01\x01" + mss + b"\x04\x02\x08\x0a" + bytes(8)),
        tcp_syn(b"\x01\x03\x03\x07" + mss),  # window scale first
        tcp_syn(b""),
        build_udp(GN_IP, ROUTER_IP, 40000, 53, DNSRecord.question("cn.ntm.example").pack()),
        build_udp(GN_IP, PEER_IP, 40000, 80, b"x" * 100),
        build_udp(GN_IP, WEB_IP, 40000, 443, b"y"),
    ]


def arp_request(sender_mac: bytes, sender_ip: bytes, target_ip: bytes, op: int = 1) -> bytes:
    body = struct.pack(
        "!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op, sender_mac, sender_ip, bytes(6), target_ip
    )
    return eth_header(b"\xff" * 6, sender_mac, ETH_P_ARP) + body + bytes(18)


def frames() -> list[bytes]:
    """Ethernet frames on the GN link: DHCP, ARP, DNS, tunnel and passthrough IPv4, other."""
    eth = eth_header(ADAPTER_MAC, GN_MAC, ETH_P_IP)
    out = [
        eth_header(b"\xff" * 6, GN_MAC, ETH_P_IP) + build_udp(bytes(4), b"\xff" * 4, 68, 67, p)
        for p in dhcp_payloads()[:3]
    ]
    out += [
        arp_request(GN_MAC, GN_IP, ROUTER_IP),
        arp_request(GN_MAC, GN_IP, PEER_IP),
        arp_request(GN_MAC, GN_IP, GN_IP),  # gratuitous
        arp_request(GN_MAC, bytes(4), GN_IP),  # probe
        arp_request(OTHER_MAC, bytes((10, 99, 0, 99)), ROUTER_IP),
        build_arp_reply(GN_MAC, GN_IP, ADAPTER_MAC, ROUTER_IP),
    ]
    out += [eth + packet for packet in ip_packets()]
    out.append(eth_header(ADAPTER_MAC, OTHER_MAC, ETH_P_IP) + ip_packets()[6])
    out.append(eth_header(ADAPTER_MAC, GN_MAC, ETH_P_IPV6) + bytes(40))
    out.append(eth_header(ADAPTER_MAC, GN_MAC, 0x8100) + bytes(46))
    return out


def arp_frames() -> list[bytes]:
    return [f for f in frames() if f[12:14] == ETH_P_ARP.to_bytes(2, "big")]
