"""Valid inputs built with the project's own builders, real v2 datagrams captured from a
run of the fuzz world (world.py), and the real-client captures (DHCP).

Keys are derived from fixed names so every run (and every reproducer) sees the same
bytes. The lab's addresses are used throughout: VIP pool 10.99.0.0/16, router
10.99.0.1, the GN at 10.99.0.23, the Internet segment 198.51.100.0/24.
"""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from dnslib import EDNS0, DNSQuestion, DNSRecord

from ..proto import dhcp_codec as dhcp
from ..proto.bodies_v2 import (
    Ack,
    DcHello,
    DcWelcome,
    Deregister,
    Direction,
    DirectionRequest,
    DirectionResponse,
    Keepalive,
    KeepaliveAck,
    Message,
    NameAdd,
    NameAddAck,
    NameRemove,
    Probe,
    ProbeAck,
    Register,
    RegisterAck,
    RelayBind,
    RelayBound,
    RelayInfo,
    RelayKeepalive,
    RemoteDirectionRequest,
    RemoteDirectionResponse,
    Requester,
    RouteDirection,
    RouteDirectionAck,
    RouteUpdate,
    RsHello,
    RsWelcome,
    TunnelAccept,
    TunnelClose,
    TunnelClosed,
    TunnelGone,
    TunnelInit,
    TunnelRef,
    Update,
    UpdateAck,
)
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
from ..proto.fields_v2 import GoneReason, Reach, Role, Route, Status, Want, dc_id_of
from ..proto.grant import Grant, grant_key, make_grant
from ..proto.handshake import (
    T_DATA,
    T_INIT,
    T_RELAY_ENVELOPE,
    T_SIGNAL,
    InitFrame,
    build_cookie_reply,
)
from ..proto.messages_v2 import decode, encode, message_type
from ..proto.noise import expand_transport_key
from ..proto.session import TRANSPORT_HEADER, Keypair, parse_transport
from ..proto.tunnel import punch_datagram
from . import world as world_module
from .world import DC_EP, DC_PROBE, EPOCH, NODES, RS_EP, ZONE, key, world

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"
EPOCH_MS = int(EPOCH * 1000)  # the wall clock every fuzzed machine believes in, at now=0
POOL = world_module.POOL
MN_ENDPOINT = NODES["mn"][1]  # mn's NAT mapping as everyone sees it
CN_ENDPOINT = NODES["cn"][1]
ADAPTER_MAC = bytes.fromhex("020000000001")
GN_MAC = bytes.fromhex("02005e10000b")
OTHER_MAC = bytes.fromhex("02deadbeef01")
ROUTER_IP = bytes((10, 99, 0, 1))
GN_IP = bytes((10, 99, 0, 23))
PEER_IP = bytes((10, 99, 0, 2))
WEB_IP = bytes((198, 51, 100, 20))
DC_ID = dc_id_of(key("dc").public)
TUNNEL_ID = 0x1122334455667788
__all__ = ["DC_EP", "DC_PROBE", "RS_EP", "ZONE", "key"]


@cache
def relay_grant_key() -> bytes:
    return grant_key(key("dc"), key("rs").public)


def grant(
    tunnel_id: int = TUNNEL_ID, expires_ms: int = EPOCH_MS + 3_600_000, dc_id: bytes = DC_ID
) -> bytes:
    body = Grant(dc_id, tunnel_id, expires_ms, key("mn").public, key("cn").public)
    return make_grant(relay_grant_key(), body)


def grants() -> list[bytes]:
    """A good grant, an expired one, extremes, one of another DC, one with equal ends
    (no DC makes it), zeros, and the grant the world's DC really made."""
    same_ends = make_grant(
        relay_grant_key(), Grant(DC_ID, 1, EPOCH_MS + 1, key("mn").public, key("mn").public)
    )
    out = [
        grant(),
        grant(1, EPOCH_MS - 1),
        grant((1 << 64) - 1, (1 << 64) - 1),
        grant(dc_id=bytes(8)),
        same_ends,
        bytes(104),
    ]
    return out + [d.relay.grant for d in world_directions() if d.relay is not None]


# --- v2 messages ------------------------------------------------------------------------


def directions() -> list[Direction]:
    relay = RelayInfo(RS_EP, key("rs").public, grant())
    cn, mn = key("cn").public, key("mn").public
    many = tuple((f"198.51.100.{i}", 7401) for i in range(100, 106)) + (("2001:db8::7", 1),) * 2
    return [
        Direction(
            DC_ID,
            TUNNEL_ID,
            Route.DIRECT,
            Role.INITIATE,
            f"mn.{ZONE}",
            f"cn.{ZONE}",
            "10.99.0.3",
            "::",
            cn,
            (CN_ENDPOINT, ("10.10.2.2", 7401)),
        ),
        Direction(
            DC_ID,
            TUNNEL_ID,
            Route.DIRECT,
            Role.RESPOND,
            f"cn.{ZONE}",
            f"mn.{ZONE}",
            "10.99.0.2",
            "2001:db8:99::2",
            mn,
            (),
        ),
        Direction(
            DC_ID,
            TUNNEL_ID + 1,
            Route.PUNCH,
            Role.INITIATE,
            f"mn.{ZONE}",
            f"cn.{ZONE}",
            "10.99.0.3",
            "::",
            cn,
            (CN_ENDPOINT,),
            relay,
        ),
        Direction(
            DC_ID,
            TUNNEL_ID + 2,
            Route.RELAY,
            Role.RESPOND,
            f"cn.{ZONE}",
            f"mn.{ZONE}",
            "10.99.0.2",
            "::",
            mn,
            (("2001:db8::41", 7401),),
            relay,
        ),
        Direction(
            DC_ID,
            (1 << 64) - 1,
            Route.DIRECT,
            Role.INITIATE,
            "a" * 63 + "." + "b" * 63,
            "c" * 63 + "." + "d" * 63 + "." + "e" * 63 + "." + "f" * 61,
            "10.99.255.254",
            "fd00::1",
            cn,
            many,
            relay,
        ),
    ]


def messages() -> list[Message]:
    """At least one message of every v2 type, with refusals and optional fields."""
    mn, cn = f"mn.{ZONE}", f"cn.{ZONE}"
    plain, responder, punch, relay_route, largest = directions()
    ref = TunnelRef(DC_ID, TUNNEL_ID)
    requester = Requester(
        mn,
        key("mn").public,
        "10.99.0.2",
        "fd00::2",
        Reach.CONE,
        (MN_ENDPOINT, ("2001:db8::41", 7401)),
    )
    return [
        Register(1, 0x0102030405060708, mn),
        Register(0xFFFFFFFF, 0, "x" * 63 + "." + "y" * 63 + "." + "z" * 63 + "." + "w" * 61),
        TunnelInit(DC_ID, TUNNEL_ID, mn, cn),
        RsHello(3),
        DcHello(4, ZONE),
        RegisterAck(1, Status.OK, "10.99.0.2", 16, "::", 0, MN_ENDPOINT, 15, DC_PROBE),
        RegisterAck(1, Status.OK, "10.99.0.2", 16, "fd00::2", 64, ("2001:db8::41", 7401), 15),
        RegisterAck(1, Status.REFUSED),
        RegisterAck(1, Status.POOL_EXHAUSTED),
        TunnelAccept(DC_ID, TUNNEL_ID, Status.OK),
        TunnelAccept(DC_ID, TUNNEL_ID, Status.REFUSED),
        RsWelcome(3, Status.OK),
        DcWelcome(4, Status.OK, ZONE),
        DcWelcome(4, Status.REFUSED),
        Keepalive(5),
        KeepaliveAck(5, Status.OK, MN_ENDPOINT),
        KeepaliveAck(5, Status.UNKNOWN),
        Update(6, (("10.10.1.2", 7401), ("2001:db8:1::2", 7401))),
        Update(6, tuple((f"10.10.1.{i}", 7401) for i in range(2, 8))),
        Update(6, ()),
        UpdateAck(6, Status.OK, ("2001:db8::41", 65535)),
        Probe(7),
        ProbeAck(7, MN_ENDPOINT),
        ProbeAck(7, ("2001:db8::41", 40001)),
        DirectionRequest(8, mn, cn, Want.V4),
        DirectionRequest(8, mn, cn, Want.BOTH),
        DirectionResponse(8, Status.OK, plain),
        DirectionResponse(8, Status.OK, largest),
        DirectionResponse(8, Status.NOT_NTM),
        RouteDirection(9, responder),
        RouteDirection(9, relay_route),
        RouteDirectionAck(9, TUNNEL_ID),
        RouteUpdate(10, punch),
        TunnelGone(11, TUNNEL_ID, GoneReason.RESTARTED),
        TunnelClosed(12, TUNNEL_ID),
        Deregister(13),
        Ack(13),
        NameAdd(14, f"dev1.{ZONE}"),
        NameAddAck(14, Status.OK, f"dev1.{ZONE}", "10.99.0.9", "::"),
        NameAddAck(14, Status.TOO_MANY_NAMES),
        NameRemove(15, f"dev1.{ZONE}"),
        RelayBind(16, grant()),
        RelayBound(16, Status.OK, DC_ID, TUNNEL_ID, MN_ENDPOINT),
        RelayBound(16, Status.REFUSED),
        RelayKeepalive((ref, TunnelRef(DC_ID, 1))),
        RelayKeepalive(()),
        TunnelClose(TUNNEL_ID),
        RemoteDirectionRequest(17, requester, cn, Want.V6),
        RemoteDirectionResponse(17, Status.OK, responder),
        RemoteDirectionResponse(17, Status.OFFLINE),
    ]


def bodies_of(msg_type: int) -> list[bytes]:
    out = [encode(m) for m in messages() if message_type(m) == msg_type]
    return out + [b for b in captured_bodies() if b[0] == msg_type]


# --- datagrams captured from the world ----------------------------------------------------


def captured(kind: int | None = None, to: tuple | None = None) -> list[bytes]:
    """Datagrams the world sent, optionally of one type (byte 1) or to one endpoint."""
    return [
        d
        for _, dst, d in world().sent
        if (kind is None or d[1] == kind) and (to is None or dst == to)
    ]


def world_keypairs(name: str) -> list[Keypair]:
    """The keypairs a world machine holds (the ones its peers' SIGNALs are sealed to)."""
    machine = world().machines[name]
    if name == "dc":
        return [kp for _, kp in machine.table.by_index.values()]  # type: ignore[attr-defined]
    if name == "rs":
        return [p.keypair for p in getattr(machine, "_peers", {}).values()]
    node = machine
    out = list(node.session.ring.all())  # type: ignore[attr-defined]
    for session in node.relays.sessions.values():  # type: ignore[attr-defined]
        out += session.ring.all()
    return out + [kp for _, kp in node.tunnels.by_index.values()]  # type: ignore[attr-defined]


def open_transport(receive_key: bytes, datagram: bytes) -> bytes | None:
    """The payload of a DATA or SIGNAL sealed to the holder of receive_key; no state."""
    try:
        kind, _, counter = parse_transport(datagram)
    except ValueError:
        return None
    label = b"signal" if kind == T_SIGNAL else b"data"
    aead = AESGCM(expand_transport_key(receive_key, label))
    header = datagram[: TRANSPORT_HEADER.size]
    try:
        return aead.decrypt(bytes(4) + counter.to_bytes(8, "big"), datagram[16:], header)
    except InvalidTag:
        return None


def seal_transport(send_key: bytes, kind: int, receiver_index: int, counter: int, payload: bytes):
    """A DATA or SIGNAL as the holder of send_key makes it, at any counter."""
    label = b"signal" if kind == T_SIGNAL else b"data"
    header = TRANSPORT_HEADER.pack(2, kind, 0, receiver_index, counter)
    aead = AESGCM(expand_transport_key(send_key, label))
    return header + aead.encrypt(bytes(4) + header[8:], payload, header)


@cache
def captured_bodies() -> tuple[bytes, ...]:
    """Every SIGNAL body of the world's run, opened with the receiver's keys."""
    targets = {DC_EP: "dc", DC_PROBE: "dc", RS_EP: "rs"}
    for name, (_, outside, probe_outside) in NODES.items():
        targets[outside] = targets[probe_outside] = name
    out = []
    for _, dst, datagram in world().sent:
        if datagram[1] != T_SIGNAL or dst not in targets:
            continue
        index = int.from_bytes(datagram[4:8], "big")
        for keypair in world_keypairs(targets[dst]):
            if keypair.local_index == index:
                payload = open_transport(keypair.receive_key, datagram)
                if payload is not None:
                    out.append(payload)
                    break
    return tuple(out)


def world_directions() -> list[Direction]:
    out = []
    for body in captured_bodies():
        direction = getattr(decode(body), "direction", None)
        if direction is not None:
            out.append(direction)
    return out


def inits() -> list[bytes]:
    return captured(1) + [d[20:] for d in captured(T_RELAY_ENVELOPE) if d[21] == T_INIT]


def responses() -> list[bytes]:
    return captured(2) + [d[20:] for d in captured(T_RELAY_ENVELOPE) if d[21] == 2]


def cookie_replies() -> list[bytes]:
    """COOKIE_REPLYs to the world's inits, as their responders would make them."""
    out = []
    for init, responder in ((captured(1, DC_EP)[0], "dc"), (captured(1, RS_EP)[0], "rs")):
        frame = InitFrame(init, int.from_bytes(init[4:8], "big"))
        out.append(
            build_cookie_reply(
                frame,
                responder_public=key(responder).public,
                nonce=bytes(range(24)),
                cookie=bytes(range(16)),
            )
        )
    return out


def transports() -> list[bytes]:
    """SIGNAL and DATA datagrams of the run, PUNCH, and edge headers."""
    edge = TRANSPORT_HEADER.pack(2, T_DATA, 0, 0xFFFFFFFF, (1 << 64) - 1) + bytes(16)
    return captured(T_SIGNAL) + captured(T_DATA) + [punch_datagram(), edge]


def envelopes() -> list[bytes]:
    return captured(T_RELAY_ENVELOPE)


def handshakes() -> list[bytes]:
    return inits() + responses() + cookie_replies()


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
    return out  # IPv6 on the link: seeds6.ipv6_frames


def arp_frames() -> list[bytes]:
    return [f for f in frames() if f[12:14] == ETH_P_ARP.to_bytes(2, "big")]
