"""DHCP server for the general node: codec, RFC 2131 behaviour, real client captures, fuzzing.

The fixtures in tests/vectors/dhcp/ are BOOTP payloads captured from ISC dhclient 4.4.3-P1 and
BusyBox 1.35.0 udhcpc (and two hand-crafted Windows-style messages); see the README there.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntma.proto.buffer import CodecError
from ntma.proto.dhcp import (
    Declined,
    DhcpConfig,
    DhcpReply,
    DhcpServer,
    Ignored,
    Informed,
    Leased,
    Released,
    Spoofed,
    subnet_mask,
)
from ntma.proto.dhcp_codec import (
    ACK,
    BOOTREPLY,
    DECLINE,
    DISCOVER,
    INFORM,
    MAGIC_COOKIE,
    NAK,
    OFFER,
    RELEASE,
    REQUEST,
    DhcpMessage,
    build_dhcp,
    parse_dhcp,
)

VECTORS = Path(__file__).parent / "vectors" / "dhcp"
SERVER_IP = "10.99.0.1"
VIP = "10.99.0.23"  # the address the captured clients asked for
OTHER_VIP = "10.99.0.24"
BCAST_IP = "255.255.255.255"
BCAST_MAC = b"\xff" * 6
MAC_A = bytes.fromhex("02005e10000b")  # dhclient and udhcpc captures
MAC_B = bytes.fromhex("02005e10000c")  # udhcpc -B capture
MAC_WIN = bytes.fromhex("00155d4a2b01")  # crafted Windows messages
CONFIG = DhcpConfig(server_ip=SERVER_IP, prefix_len=16, domain="ntm.example")
REQUIRED = (1, 3, 6, 26, 51, 54)


def vector(name: str) -> bytes:
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().replace("\n", ""))


def server(vip: str | None = VIP, config: DhcpConfig = CONFIG) -> DhcpServer:
    srv = DhcpServer(config)
    srv.set_address(vip)
    return srv


def ip4(value: bytes) -> str:
    return str(ipaddress.IPv4Address(value))


def client(kind: int, mac: bytes = MAC_A, xid: int = 0x1234, **kw: object) -> bytes:
    """A client message built with our own codec."""
    return build_dhcp(message_type=kind, xid=xid, chaddr=mac, **kw)  # type: ignore[arg-type]


def bind(srv: DhcpServer, now: float = 0.0, mac: bytes = MAC_A) -> None:
    reply = srv.handle(client(REQUEST, mac, options={50: _ip(VIP), 54: _ip(SERVER_IP)}), now)
    assert reply is not None and reply.kind == "ACK"
    srv.events()


def _ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def reply_of(reply: DhcpReply | None) -> DhcpMessage:
    assert reply is not None
    return parse_dhcp(reply.payload)


# --- the real captures ----------------------------------------------------------------

# name: (message type, chaddr, ciaddr, broadcast flag, option codes in order)
CAPTURES = {
    "dhclient_discover": (DISCOVER, MAC_A, "0.0.0.0", False, [53, 12, 55]),
    "dhclient_discover_requested_ip": (DISCOVER, MAC_A, "0.0.0.0", False, [53, 50, 12, 55]),
    "dhclient_request_selecting": (REQUEST, MAC_A, "0.0.0.0", False, [53, 54, 50, 12, 55]),
    "dhclient_request_init_reboot": (REQUEST, MAC_A, "0.0.0.0", False, [53, 50, 12, 55]),
    "dhclient_request_renewing": (REQUEST, MAC_A, VIP, False, [53, 12, 55]),
    "dhclient_request_rebinding": (REQUEST, MAC_A, VIP, False, [53, 12, 55]),
    "dhclient_release": (RELEASE, MAC_A, VIP, False, [53, 54, 12]),
    "udhcpc_discover": (DISCOVER, MAC_A, "0.0.0.0", False, [53, 57, 55, 60, 61]),
    "udhcpc_request_selecting": (REQUEST, MAC_A, "0.0.0.0", False, [53, 50, 54, 57, 55, 60, 61]),
    "udhcpc_request_renewing": (REQUEST, MAC_A, VIP, False, [53, 57, 55, 60, 61]),
    "udhcpc_release": (RELEASE, MAC_A, VIP, False, [53, 54, 61]),
    "udhcpc_decline": (DECLINE, MAC_A, "0.0.0.0", False, [53, 50, 54, 61]),
    "udhcpc_discover_broadcast_flag": (DISCOVER, MAC_B, "0.0.0.0", True, [53, 57, 55, 60, 61]),
    "udhcpc_request_broadcast_flag": (
        REQUEST,
        MAC_B,
        "0.0.0.0",
        True,
        [53, 50, 54, 57, 55, 60, 61],
    ),
    "windows_discover": (DISCOVER, MAC_WIN, "0.0.0.0", True, [53, 61, 50, 12, 60, 55]),
    "windows_request_selecting": (
        REQUEST,
        MAC_WIN,
        "0.0.0.0",
        True,
        [53, 61, 50, 54, 12, 81, 60, 55],
    ),
}


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_capture_parses(name: str) -> None:
    kind, mac, ciaddr, broadcast, codes = CAPTURES[name]
    msg = parse_dhcp(vector(name))
    assert (msg.op, msg.htype, msg.hlen, msg.hops) == (1, 1, 6, 0)
    assert msg.message_type == kind
    assert msg.chaddr == mac
    assert msg.ciaddr == ciaddr
    assert msg.yiaddr == msg.siaddr == msg.giaddr == "0.0.0.0"
    assert msg.broadcast is broadcast
    assert list(msg.options) == codes
    if 50 in msg.options:
        assert msg.requested_ip == VIP
    if 54 in msg.options:
        assert msg.server_id == SERVER_IP


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_codec_rebuilds_capture_byte_for_byte(name: str) -> None:
    data = vector(name)
    msg = parse_dhcp(data)
    rebuilt = build_dhcp(
        message_type=msg.message_type,
        xid=msg.xid,
        chaddr=msg.chaddr,
        options=[(c, v) for c, v in msg.options.items() if c != 53],
        ciaddr=msg.ciaddr,
        flags=msg.flags,
        secs=msg.secs,
    )
    assert rebuilt == data


def test_what_the_real_clients_ask_for() -> None:
    dhclient = parse_dhcp(vector("dhclient_discover"))
    assert list(dhclient.param_request_list) == [1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]
    assert dhclient.options[12] == b"vm"  # hostname of the capturing machine
    udhcpc = parse_dhcp(vector("udhcpc_discover"))
    assert list(udhcpc.param_request_list) == [1, 3, 6, 12, 15, 28, 42]  # no MTU (26)
    assert udhcpc.options[57] == (576).to_bytes(2, "big")
    assert udhcpc.options[60] == b"udhcp 1.35.0"
    assert udhcpc.options[61] == b"\x01" + MAC_A
    windows = parse_dhcp(vector("windows_request_selecting"))
    assert list(windows.param_request_list) == [
        1,
        3,
        6,
        15,
        31,
        33,
        43,
        44,
        46,
        47,
        119,
        121,
        249,
        252,
    ]
    assert windows.options[60] == b"MSFT 5.0"


# --- OFFER / ACK content --------------------------------------------------------------


def test_dhclient_discover_gets_full_offer() -> None:
    request = parse_dhcp(vector("dhclient_discover"))
    srv = server()
    reply = srv.handle(vector("dhclient_discover"), now=5.0)
    assert reply is not None and reply.kind == "OFFER"
    assert (reply.dst_ip, reply.dst_mac) == (VIP, MAC_A)  # unicast to yiaddr, no broadcast flag
    assert len(reply.payload) >= 300
    offer = parse_dhcp(reply.payload)
    assert offer.op == BOOTREPLY and offer.message_type == OFFER
    assert (offer.xid, offer.flags, offer.chaddr) == (request.xid, request.flags, MAC_A)
    assert (offer.secs, offer.hops) == (0, 0)
    assert (offer.ciaddr, offer.yiaddr, offer.siaddr, offer.giaddr) == (
        "0.0.0.0",
        VIP,
        "0.0.0.0",
        "0.0.0.0",
    )
    opts = offer.options
    assert ip4(opts[54]) == SERVER_IP
    assert int.from_bytes(opts[51], "big") == 3600
    assert int.from_bytes(opts[58], "big") == 1800
    assert int.from_bytes(opts[59], "big") == 3150
    assert ip4(opts[1]) == "255.255.0.0"
    assert ip4(opts[3]) == SERVER_IP
    assert ip4(opts[6]) == SERVER_IP
    assert int.from_bytes(opts[26], "big") == 1400
    assert opts[15] == b"ntm.example"
    assert ip4(opts[28]) == "10.99.255.255"  # dhclient asked for the broadcast address
    assert 61 not in opts and 50 not in opts
    # lease options first, then parameters in the order of dhclient's request list
    assert list(opts) == [53, 54, 51, 58, 59, 1, 28, 3, 15, 6, 26]
    assert srv.events() == []
    assert not srv.bound and srv.client_mac == MAC_A


def test_udhcpc_discover_gets_mtu_although_not_requested() -> None:
    offer = reply_of(server().handle(vector("udhcpc_discover"), 0.0))
    assert offer.yiaddr == VIP
    for code in REQUIRED:
        assert code in offer.options
    assert list(offer.options)[:5] == [53, 54, 51, 58, 59]
    assert list(offer.options)[5:] == [1, 3, 6, 15, 28, 26]


def test_without_parameter_request_list_and_domain() -> None:
    srv = server(config=DhcpConfig(server_ip=SERVER_IP, prefix_len=24, lease_time=600, mtu=1280))
    offer = reply_of(srv.handle(client(DISCOVER), 0.0))
    assert list(offer.options) == [53, 54, 51, 58, 59, 1, 3, 6, 26]
    assert ip4(offer.options[1]) == "255.255.255.0"
    assert int.from_bytes(offer.options[26], "big") == 1280
    assert int.from_bytes(offer.options[58], "big") == 300
    assert int.from_bytes(offer.options[59], "big") == 525


@pytest.mark.parametrize(
    ("prefix", "mask"),
    [
        (0, "0.0.0.0"),
        (8, "255.0.0.0"),
        (16, "255.255.0.0"),
        (22, "255.255.252.0"),
        (32, "255.255.255.255"),
    ],
)
def test_subnet_mask(prefix: int, mask: str) -> None:
    assert ip4(subnet_mask(prefix)) == mask


def test_infinite_lease_has_no_t1_t2_and_never_expires() -> None:
    config = DhcpConfig(server_ip=SERVER_IP, prefix_len=16, lease_time=0xFFFFFFFF)
    srv = server(config=config)
    ack = reply_of(srv.handle(vector("dhclient_request_selecting"), 0.0))
    assert ack.options[51] == b"\xff\xff\xff\xff"
    assert 58 not in ack.options and 59 not in ack.options
    assert not srv.lease_expired(1e12) and srv.bound


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_ip": "10.99.0", "prefix_len": 16},
        {"server_ip": SERVER_IP, "prefix_len": 33},
        {"server_ip": SERVER_IP, "prefix_len": 16, "lease_time": 0},
        {"server_ip": SERVER_IP, "prefix_len": 16, "mtu": 67},
        {"server_ip": SERVER_IP, "prefix_len": 16, "domain": ""},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DhcpConfig(**kwargs)


def test_reply_copies_xid_flags_giaddr_and_chaddr() -> None:
    request = client(DISCOVER, xid=0xDEADBEEF, flags=0x8000, giaddr="10.1.2.3", secs=9, hops=1)
    reply = server().handle(request, 0.0)
    offer = reply_of(reply)
    assert (offer.xid, offer.flags, offer.giaddr, offer.chaddr) == (
        0xDEADBEEF,
        0x8000,
        "10.1.2.3",
        MAC_A,
    )
    assert (offer.secs, offer.hops) == (0, 0)
    assert reply is not None and (reply.dst_ip, reply.dst_mac) == (BCAST_IP, BCAST_MAC)


# --- one message to a fresh server: table ----------------------------------------------

U = "unicast"  # to yiaddr (or ciaddr when set) and chaddr
B = "broadcast"

# vector: (VIP the server hands out, reply kind or None, addressing, event)
FRESH = {
    "dhclient_discover": (VIP, "OFFER", U, None),
    "dhclient_discover_requested_ip": (VIP, "OFFER", U, None),
    "udhcpc_discover": (VIP, "OFFER", U, None),
    "udhcpc_discover_broadcast_flag": (VIP, "OFFER", B, None),
    "windows_discover": (VIP, "OFFER", B, None),
    "dhclient_request_selecting": (VIP, "ACK", U, Leased(MAC_A, VIP, 3600, False)),
    "udhcpc_request_selecting": (VIP, "ACK", U, Leased(MAC_A, VIP, 3600, False)),
    "udhcpc_request_broadcast_flag": (VIP, "ACK", B, Leased(MAC_B, VIP, 3600, False)),
    "windows_request_selecting": (VIP, "ACK", B, Leased(MAC_WIN, VIP, 3600, False)),
    "dhclient_request_init_reboot": (VIP, "ACK", U, Leased(MAC_A, VIP, 3600, False)),
    "dhclient_request_renewing": (VIP, "ACK", U, Leased(MAC_A, VIP, 3600, True)),
    "dhclient_request_rebinding": (VIP, "ACK", U, Leased(MAC_A, VIP, 3600, True)),
    "udhcpc_request_renewing": (VIP, "ACK", U, Leased(MAC_A, VIP, 3600, True)),
    "dhclient_release": (VIP, None, None, Ignored("no lease to release")),
    "udhcpc_decline": (VIP, None, None, Declined(MAC_A, VIP)),
    # the server hands out another address than the one the client wants
    "dhclient_discover#other": (OTHER_VIP, "OFFER", U, None),
    "dhclient_request_selecting#other": (OTHER_VIP, "NAK", B, None),
    "udhcpc_request_broadcast_flag#other": (OTHER_VIP, "NAK", B, None),
    "windows_request_selecting#other": (OTHER_VIP, "NAK", B, None),
    "dhclient_request_init_reboot#other": (OTHER_VIP, "NAK", B, None),
    "dhclient_request_renewing#other": (OTHER_VIP, "NAK", B, None),
    "dhclient_request_rebinding#other": (OTHER_VIP, "NAK", B, None),
    "udhcpc_request_renewing#other": (OTHER_VIP, "NAK", B, None),
}


@pytest.mark.parametrize("case", sorted(FRESH))
def test_fresh_server_table(case: str) -> None:
    vip, kind, addressing, event = FRESH[case]
    data = vector(case.split("#")[0])
    request = parse_dhcp(data)
    srv = server(vip)
    reply = srv.handle(data, now=10.0)
    assert srv.events() == ([] if event is None else [event])
    if kind is None:
        assert reply is None
        return
    assert reply is not None and reply.kind == kind
    msg = parse_dhcp(reply.payload)
    assert msg.message_type == {"OFFER": OFFER, "ACK": ACK, "NAK": NAK}[kind]
    assert msg.xid == request.xid and msg.chaddr == request.chaddr and msg.flags == request.flags
    assert len(reply.payload) >= 300
    if kind == "NAK":
        assert list(msg.options) == [53, 54] and ip4(msg.options[54]) == SERVER_IP
        assert msg.yiaddr == msg.ciaddr == "0.0.0.0"
        assert not srv.bound
    else:
        assert msg.yiaddr == vip
        assert all(code in msg.options for code in REQUIRED)
        assert msg.ciaddr == (request.ciaddr if kind == "ACK" else "0.0.0.0")
        assert srv.bound is (kind == "ACK")
    if addressing == B:
        assert (reply.dst_ip, reply.dst_mac) == (BCAST_IP, BCAST_MAC)
    else:
        unicast_ip = request.ciaddr if request.ciaddr != "0.0.0.0" else vip
        assert (reply.dst_ip, reply.dst_mac) == (unicast_ip, request.chaddr)


# --- REQUEST variants -----------------------------------------------------------------


def test_request_for_another_server_is_ignored() -> None:
    srv = server()
    request = client(REQUEST, options={54: _ip("10.99.0.2"), 50: _ip(VIP)})
    assert srv.handle(request, 0.0) is None
    assert srv.events() == [Ignored("other server")]
    assert not srv.bound


def test_selecting_with_wrong_requested_ip_is_nak_broadcast() -> None:
    srv = server()
    reply = srv.handle(client(REQUEST, options={54: _ip(SERVER_IP), 50: _ip("10.99.0.99")}), 0.0)
    assert reply is not None and reply.kind == "NAK"
    assert (reply.dst_ip, reply.dst_mac) == (BCAST_IP, BCAST_MAC)


def test_request_without_any_address_is_ignored() -> None:
    srv = server()
    assert srv.handle(client(REQUEST), 0.0) is None
    assert srv.events() == [Ignored("request names no address")]


def test_renewal_nak_when_vip_changed() -> None:
    srv = server()
    bind(srv)
    srv.set_address(OTHER_VIP)
    reply = srv.handle(vector("dhclient_request_renewing"), 1800.0)
    assert reply is not None and reply.kind == "NAK" and reply.dst_ip == BCAST_IP
    assert not srv.bound
    offer = reply_of(srv.handle(vector("dhclient_discover"), 1801.0))
    assert offer.yiaddr == OTHER_VIP


def test_set_address_validates() -> None:
    srv = server()
    with pytest.raises(ValueError):
        srv.set_address("not an address")
    assert srv.address == VIP


# --- whole sessions replayed from captures ---------------------------------------------


def test_dhclient_session_discover_request_renew_rebind_release() -> None:
    srv = server()
    assert srv.handle(vector("dhclient_discover"), 0.0).kind == "OFFER"  # type: ignore[union-attr]
    ack = srv.handle(vector("dhclient_request_selecting"), 0.1)
    assert ack is not None and ack.kind == "ACK" and (ack.dst_ip, ack.dst_mac) == (VIP, MAC_A)
    assert srv.events() == [Leased(MAC_A, VIP, 3600, False)]
    assert srv.bound and srv.client_mac == MAC_A
    renew = srv.handle(vector("dhclient_request_renewing"), 1800.0)
    assert renew is not None and (renew.dst_ip, renew.dst_mac) == (VIP, MAC_A)
    assert reply_of(renew).ciaddr == VIP
    assert srv.events() == [Leased(MAC_A, VIP, 3600, True)]
    assert not srv.lease_expired(3700.0)  # the renewal moved the end to 5400
    rebind = srv.handle(vector("dhclient_request_rebinding"), 4950.0)
    assert rebind is not None and rebind.kind == "ACK" and rebind.dst_ip == VIP
    assert srv.events() == [Leased(MAC_A, VIP, 3600, True)]
    assert srv.handle(vector("dhclient_release"), 5000.0) is None
    assert srv.events() == [Released(MAC_A, VIP)]
    assert not srv.bound and not srv.lease_expired(10_000.0)


def test_udhcpc_session_and_decline() -> None:
    srv = server()
    assert srv.handle(vector("udhcpc_discover"), 0.0) is not None
    assert srv.handle(vector("udhcpc_request_selecting"), 0.0) is not None
    assert srv.client_id == b"\x01" + MAC_A  # option 61 recorded, not echoed
    assert srv.bound
    srv.events()
    assert srv.handle(vector("udhcpc_decline"), 1.0) is None
    assert srv.events() == [Declined(MAC_A, VIP)]
    assert not srv.bound
    # only one address to give: a later DISCOVER still gets it
    assert reply_of(srv.handle(vector("udhcpc_discover"), 11.0)).yiaddr == VIP


def test_udhcpc_renew_and_release() -> None:
    srv = server()
    srv.handle(vector("udhcpc_request_selecting"), 0.0)
    reply = srv.handle(vector("udhcpc_request_renewing"), 20.0)
    assert (
        reply is not None and reply.kind == "ACK" and (reply.dst_ip, reply.dst_mac) == (VIP, MAC_A)
    )
    assert srv.events()[-1] == Leased(MAC_A, VIP, 3600, True)
    assert srv.handle(vector("udhcpc_release"), 25.0) is None
    assert srv.events() == [Released(MAC_A, VIP)]
    assert not srv.bound


def test_windows_style_broadcast_session() -> None:
    srv = server()
    offer = srv.handle(vector("windows_discover"), 0.0)
    assert offer is not None and (offer.dst_ip, offer.dst_mac) == (BCAST_IP, BCAST_MAC)
    ack = srv.handle(vector("windows_request_selecting"), 0.5)
    assert ack is not None and ack.kind == "ACK"
    assert (ack.dst_ip, ack.dst_mac) == (BCAST_IP, BCAST_MAC)
    msg = parse_dhcp(ack.payload)
    assert msg.flags == 0x8000 and msg.yiaddr == VIP
    assert 81 not in msg.options and 61 not in msg.options
    assert list(msg.options) == [53, 54, 51, 58, 59, 1, 3, 6, 15, 26]  # Windows' order
    assert srv.client_mac == MAC_WIN and srv.client_id == b"\x01" + MAC_WIN


def test_decline_for_another_server_is_ignored() -> None:
    srv = server()
    bind(srv)
    decline = client(DECLINE, options={50: _ip(VIP), 54: _ip("10.99.0.2")})
    assert srv.handle(decline, 1.0) is None
    assert srv.events() == [Ignored("other server")]
    assert srv.bound


# --- INFORM ---------------------------------------------------------------------------


def test_inform_gets_parameters_without_lease() -> None:
    srv = server()
    inform = client(INFORM, ciaddr=VIP, options={55: bytes([1, 3, 6, 15, 51])})
    reply = srv.handle(inform, 0.0)
    assert reply is not None and reply.kind == "ACK"
    assert (reply.dst_ip, reply.dst_mac) == (VIP, MAC_A)
    msg = parse_dhcp(reply.payload)
    assert msg.message_type == ACK
    assert msg.ciaddr == VIP and msg.yiaddr == "0.0.0.0"
    for code in (51, 58, 59):
        assert code not in msg.options
    for code in (1, 3, 6, 15, 26, 54):
        assert code in msg.options
    assert srv.events() == [Informed(MAC_A, VIP)]
    assert not srv.bound


def test_inform_without_ciaddr_is_broadcast_and_needs_no_vip() -> None:
    srv = server(None)
    reply = srv.handle(client(INFORM, options={55: bytes([28])}), 0.0)
    assert reply is not None and (reply.dst_ip, reply.dst_mac) == (BCAST_IP, BCAST_MAC)
    assert 28 not in parse_dhcp(reply.payload).options  # no own address, no broadcast address


# --- one client -----------------------------------------------------------------------


def test_second_mac_ignored_while_bound() -> None:
    srv = server()
    srv.handle(vector("dhclient_request_selecting"), 0.0)
    srv.events()
    others = [
        vector("udhcpc_discover_broadcast_flag"),
        vector("udhcpc_request_broadcast_flag"),
        client(RELEASE, MAC_B, ciaddr=VIP, options={54: _ip(SERVER_IP)}),
        client(DECLINE, MAC_B, options={50: _ip(VIP), 54: _ip(SERVER_IP)}),
        client(INFORM, MAC_B, ciaddr="10.99.0.50"),
        client(REQUEST, MAC_B, ciaddr=VIP),
    ]
    for data in others:
        assert srv.handle(data, 100.0) is None
    assert srv.events() == [Ignored("other client")] * len(others)
    assert srv.bound and srv.client_mac == MAC_A
    assert srv.handle(vector("dhclient_request_renewing"), 1800.0) is not None


def test_second_mac_takes_over_after_release() -> None:
    srv = server()
    srv.handle(vector("dhclient_request_selecting"), 0.0)
    srv.handle(vector("dhclient_release"), 10.0)
    offer = srv.handle(vector("udhcpc_discover_broadcast_flag"), 11.0)
    assert offer is not None and offer.kind == "OFFER" and srv.client_mac == MAC_B
    ack = srv.handle(vector("udhcpc_request_broadcast_flag"), 11.1)
    assert ack is not None and ack.kind == "ACK" and srv.bound
    assert srv.handle(vector("dhclient_discover"), 12.0) is None  # now MAC_A is the other one


def test_second_mac_takes_over_after_expiry() -> None:
    srv = server()
    srv.handle(vector("dhclient_request_selecting"), 0.0)
    assert srv.handle(vector("udhcpc_discover_broadcast_flag"), 3600.0) is None
    offer = srv.handle(vector("udhcpc_discover_broadcast_flag"), 3600.5)
    assert offer is not None and srv.client_mac == MAC_B


def test_unbound_first_client_can_be_replaced() -> None:
    """Before any ACK, a new MAC replaces the first one (a probe must not lock the GN out)."""
    srv = server()
    assert srv.handle(vector("dhclient_discover"), 0.0) is not None
    assert srv.handle(vector("udhcpc_discover_broadcast_flag"), 0.1) is not None
    assert srv.client_mac == MAC_B


def test_no_address_yet() -> None:
    srv = server(None)
    assert srv.address is None
    assert srv.handle(vector("dhclient_discover"), 0.0) is None
    assert srv.handle(vector("dhclient_request_selecting"), 0.0) is None
    assert srv.events() == [Ignored("no address yet")] * 2
    assert srv.client_mac == MAC_A and not srv.bound
    srv.set_address(VIP)
    assert reply_of(srv.handle(vector("dhclient_discover"), 1.0)).yiaddr == VIP


def test_lease_expiry() -> None:
    srv = server()
    assert not srv.lease_expired(0.0)
    srv.handle(vector("dhclient_request_selecting"), 100.0)
    assert srv.bound
    assert not srv.lease_expired(3700.0)
    assert srv.bound
    assert srv.lease_expired(3700.001)
    assert not srv.bound
    srv.handle(vector("dhclient_request_init_reboot"), 4000.0)
    assert srv.bound and not srv.lease_expired(7600.0)


@pytest.mark.parametrize("kind", [OFFER, ACK, NAK, 9, 10, 13, 200])
def test_unsupported_message_types_are_ignored(kind: int) -> None:
    srv = server()
    assert srv.handle(client(kind), 0.0) is None
    assert srv.events() == [Ignored(f"unsupported message type {kind}")]
    assert srv.client_mac is None


def test_events_drain() -> None:
    srv = server()
    srv.handle(vector("dhclient_request_selecting"), 0.0)
    assert len(srv.events()) == 1
    assert srv.events() == []


# --- robustness -----------------------------------------------------------------------


def _end_offset(data: bytes) -> int:
    """Index of the end option of a message without overload (options only in the options area)."""
    pos = 240
    while data[pos] != 255:
        pos += 1 if data[pos] == 0 else 2 + data[pos + 1]
    return pos


@pytest.mark.parametrize(
    "name", ["dhclient_discover", "udhcpc_request_selecting", "windows_request_selecting"]
)
def test_truncated_at_every_length(name: str) -> None:
    data = vector(name)
    end = _end_offset(data)
    whole = parse_dhcp(data)
    for n in range(len(data)):
        if n <= end:
            with pytest.raises(CodecError):
                parse_dhcp(data[:n])
            with pytest.raises(CodecError):
                server().handle(data[:n], 0.0)
        else:  # only zero padding was cut
            assert parse_dhcp(data[:n]) == whole


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


BASE = build_dhcp(message_type=DISCOVER, xid=1, chaddr=MAC_A, options={55: b"\x01\x03"}, min_size=0)
# BASE layout after the cookie: 35 01 01 | 37 02 01 03 | ff

MALFORMED = {
    "empty": b"",
    "header only": BASE[:236],
    "cookie only": BASE[:240],
    "wrong cookie": _patch(BASE, 236, b"\x63\x82\x53\x64"),
    "op 2 (BOOTREPLY)": _patch(BASE, 0, b"\x02"),
    "op 3": _patch(BASE, 0, b"\x03"),
    "htype 6": _patch(BASE, 1, b"\x06"),
    "hlen 16": _patch(BASE, 2, b"\x10"),
    "no end option": BASE[:-1],
    "length overflows packet": _patch(BASE, 244, b"\xff"),
    "length overflows by one": _patch(BASE, 244, b"\x04"),
    "code without length": BASE[:-1] + b"\x0c",
    "missing option 53": build_dhcp(message_type=None, xid=1, chaddr=MAC_A),
    "zero-length option 53": build_dhcp(
        message_type=None, xid=1, chaddr=MAC_A, options=[(53, b"")]
    ),
    "option 53 twice": build_dhcp(
        message_type=DISCOVER, xid=1, chaddr=MAC_A, options=[(53, b"\x01")]
    ),
    "requested ip of 3 bytes": build_dhcp(
        message_type=REQUEST, xid=1, chaddr=MAC_A, options={50: b"\n\x63\0"}
    ),
    "server id of 5 bytes": build_dhcp(
        message_type=REQUEST, xid=1, chaddr=MAC_A, options={54: bytes(5)}
    ),
    "client id of 1 byte": build_dhcp(
        message_type=DISCOVER, xid=1, chaddr=MAC_A, options={61: b"\x01"}
    ),
    "router of 6 bytes": build_dhcp(
        message_type=DISCOVER, xid=1, chaddr=MAC_A, options={3: bytes(6)}
    ),
    "overload value 4": build_dhcp(
        message_type=DISCOVER, xid=1, chaddr=MAC_A, options={52: b"\x04"}
    ),
    "overload zero length": build_dhcp(
        message_type=DISCOVER, xid=1, chaddr=MAC_A, options={52: b""}
    ),
    "overload file without end": build_dhcp(
        message_type=DISCOVER, xid=1, chaddr=MAC_A, options={52: b"\x01"}
    ),
    "overload sname overflows": build_dhcp(
        message_type=DISCOVER,
        xid=1,
        chaddr=MAC_A,
        options={52: b"\x02"},
        sname=bytes(62) + b"\x0c\x05",
    ),
    "overload repeats 52": build_dhcp(
        message_type=DISCOVER, xid=1, chaddr=MAC_A, options={52: b"\x01"}, file=b"\x34\x01\x01\xff"
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_raises_codec_error(case: str) -> None:
    with pytest.raises(CodecError):
        server().handle(MALFORMED[case], 0.0)


def test_base_message_is_valid() -> None:
    assert server().handle(BASE, 0.0) is not None
    assert len(BASE) == 240 + 3 + 4 + 1


def test_option_overload_file_and_sname_are_parsed() -> None:
    # option 50 in 'file', option 54 in 'sname' (RFC 2131 4.1 order: options, file, sname)
    data = build_dhcp(
        message_type=REQUEST,
        xid=7,
        chaddr=MAC_A,
        options={52: b"\x03"},
        file=bytes([0, 50, 4]) + _ip(VIP) + b"\xff",
        sname=bytes([54, 4]) + _ip(SERVER_IP) + b"\xff\x00",
    )
    msg = parse_dhcp(data)
    assert list(msg.options) == [53, 52, 50, 54]
    assert (msg.requested_ip, msg.server_id) == (VIP, SERVER_IP)
    reply = server().handle(data, 0.0)
    assert reply is not None and reply.kind == "ACK"


def test_overload_only_file_leaves_sname_alone() -> None:
    data = build_dhcp(
        message_type=DISCOVER,
        xid=7,
        chaddr=MAC_A,
        options={52: b"\x01"},
        file=b"\xff",
        sname=b"\x0c\x40garbage that is a server name, not options",
    )
    assert list(parse_dhcp(data).options) == [53, 52]


def test_huge_parameter_request_list() -> None:
    everything = bytes(range(1, 255)) * 3  # 762 bytes: split into 3 options, concatenated back
    data = client(DISCOVER, options={55: everything})
    assert parse_dhcp(data).param_request_list == everything
    offer = reply_of(server().handle(data, 0.0))
    assert set(offer.options) == {53, 54, 51, 58, 59, 1, 3, 6, 15, 26, 28}
    assert list(offer.options)[5:] == [1, 3, 6, 15, 26, 28]  # the client's order


def test_long_option_split_rfc3396() -> None:
    data = client(DISCOVER, options=[(12, b"h" * 300)], min_size=0)
    assert data[243:246] == b"\x0c\xff" + b"h"
    assert parse_dhcp(data).options[12] == b"h" * 300


def test_build_rejects_bad_input() -> None:
    with pytest.raises(CodecError):
        build_dhcp(message_type=DISCOVER, xid=1, chaddr=b"\x01\x02")
    with pytest.raises(CodecError):
        build_dhcp(message_type=DISCOVER, xid=1, chaddr=MAC_A, sname=bytes(65))
    with pytest.raises(CodecError):
        build_dhcp(message_type=DISCOVER, xid=1, chaddr=MAC_A, options={0: b"x"})


def test_pads_and_trailing_garbage_after_end_are_accepted() -> None:
    data = BASE[:240] + b"\x00\x00" + BASE[240:] + b"trailing junk after the end option"
    assert parse_dhcp(data).options == parse_dhcp(BASE).options


def _check_outcome(srv: DhcpServer, data: bytes, now: float) -> None:
    """Only CodecError or a well-formed outcome; any other exception fails the test."""
    try:
        reply = srv.handle(data, now)
    except CodecError:
        return
    for event in srv.events():
        assert isinstance(event, Leased | Released | Declined | Informed | Ignored)
    if reply is not None:
        msg = parse_dhcp(reply.payload)
        assert msg.op == BOOTREPLY and reply.kind in ("OFFER", "ACK", "NAK")
        assert len(reply.dst_mac) == 6
        ipaddress.IPv4Address(reply.dst_ip)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        action = rng.random()
        # most damage in the header and options, where it matters
        pos = rng.randrange(len(buf)) if rng.random() < 0.3 else rng.randrange(min(len(buf), 280))
        if action < 0.5:
            buf[pos] = rng.randrange(256)
        elif action < 0.65:
            buf[pos] ^= 1 << rng.randrange(8)
        elif action < 0.75:
            del buf[pos : pos + rng.randint(1, 8)]
        elif action < 0.85:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif action < 0.95:
            buf = buf[: rng.randrange(len(buf) + 1)]
        else:
            buf[244:245] = bytes([rng.choice([0, 1, 2, 3, 52, 53, 54, 55, 255])])
        if not buf:
            break
    return bytes(buf)


def test_ten_thousand_random_mutations() -> None:
    rng = random.Random(20240229)
    seeds = [vector(name) for name in sorted(CAPTURES)]
    srv = server()
    accepted = 0
    for i in range(10_000):
        if i % 500 == 0:
            srv = server(VIP if i % 1000 else None)
        data = _mutate(rng, seeds[0] if i < 5000 else rng.choice(seeds))
        _check_outcome(srv, data, float(i))
        try:
            parse_dhcp(data)
            accepted += 1
        except CodecError:
            pass
    assert 500 < accepted < 9500  # the mutations exercised both paths


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 0xFFFF), st.binary(min_size=4, max_size=4))
def test_arbitrary_options_area(options: bytes, flags: int, ciaddr: bytes) -> None:
    header = struct.pack("!BBBBIHH4s", 1, 1, 6, 0, 42, 0, flags, ciaddr)
    data = header + bytes(12) + MAC_A + bytes(10 + 64 + 128) + MAGIC_COOKIE + options
    _check_outcome(server(), data, 0.0)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(1, 254), st.binary(max_size=300), max_size=8))
def test_build_parse_roundtrip(options: dict[int, bytes]) -> None:
    options.pop(53, None)
    options.pop(52, None)  # overload would make the parser look into sname/file
    data = build_dhcp(message_type=INFORM, xid=3, chaddr=MAC_A, options=options)
    try:
        msg = parse_dhcp(data)
    except CodecError:
        return  # a length the parser checks (e.g. a 3-byte option 50)
    assert msg.options == {53: bytes([INFORM]), **{c: v for c, v in options.items()}}


# --- the GN's identity on its link (issue 10) ----------------------------------------------


def test_a_release_in_the_gns_name_from_another_mac_is_ignored() -> None:
    srv = server()
    bind(srv, mac=MAC_A)
    release = client(RELEASE, MAC_A, ciaddr=_ip(VIP), options={54: _ip(SERVER_IP)})
    assert srv.handle(release, 1.0, src_mac=MAC_B) is None
    assert srv.events() == [Spoofed(MAC_A, MAC_B)]
    assert srv.bound and srv.client_mac == MAC_A
    # ... and the intruder cannot take the lease with its own MAC either while it is bound.
    discover = client(DISCOVER, MAC_B)
    assert srv.handle(discover, 2.0, src_mac=MAC_B) is None
    assert srv.events() == [Ignored("other client")]
    # The GN itself still renews.
    renew = client(REQUEST, MAC_A, ciaddr=_ip(VIP))
    reply = srv.handle(renew, 3.0, src_mac=MAC_A)
    assert reply is not None and reply.kind == "ACK"


def test_a_request_taking_the_gns_vip_in_its_name_is_ignored() -> None:
    srv = server()
    request = client(REQUEST, MAC_A, options={50: _ip(VIP), 54: _ip(SERVER_IP)})
    assert srv.handle(request, 0.0, src_mac=MAC_B) is None
    assert isinstance(srv.events()[0], Spoofed) and srv.client_mac is None
