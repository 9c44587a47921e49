"""DHCPv6 server for one device: codec, RFC 8415 behaviour, ISC dhclient -6's captured
messages, hostile input, and (marked netns) the real dhclient -6 against Dhcp6Server.

The fixtures in tests/vectors/dhcp6/ are UDP payloads captured from ISC dhclient 4.4.3-P1
talking to dnsmasq 2.90 (capture.sh there; see its README). The netns tests run dhclient -6
in a namespace against a Dhcp6Server behind an AF_PACKET socket in this process; run them
under `flock /tmp/ntma-netns.lock` (the machine is shared).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import random
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntma.proto.buffer import CodecError
from ntma.proto.dhcp6 import (
    MAX_IAS,
    MAX_ZEROED,
    REPLY_BUDGET,
    REPLY_MAX,
    Confirmed6,
    Declined6,
    Dhcp6Config,
    Dhcp6Server,
    Ignored6,
    Informed6,
    Leased6,
    Released6,
)
from ntma.proto.dhcp6_codec import (
    ADVERTISE,
    CONFIRM,
    DECLINE,
    INFORMATION_REQUEST,
    MAX_OPTIONS,
    OPT_CLIENTID,
    OPT_DNS_SERVERS,
    OPT_ELAPSED_TIME,
    OPT_IA_NA,
    OPT_IA_PD,
    OPT_IA_TA,
    OPT_IAADDR,
    OPT_IAPREFIX,
    OPT_ORO,
    OPT_PREFERENCE,
    OPT_RAPID_COMMIT,
    OPT_SERVERID,
    OPT_STATUS_CODE,
    REBIND,
    RECONFIGURE,
    RELAY_FORW,
    RELEASE,
    RENEW,
    REPLY,
    REQUEST,
    SOLICIT,
    STATUS_NO_ADDRS_AVAIL,
    STATUS_NO_BINDING,
    STATUS_NO_PREFIX_AVAIL,
    STATUS_NOT_ON_LINK,
    STATUS_SUCCESS,
    Dhcp6Message,
    build_dhcp6,
    duid_ll,
    ia_value,
    iaaddr_value,
    iaprefix_value,
    parse_dhcp6,
    status_value,
)
from ntma.proto.ether import ETH_P_IPV6, eth_header
from ntma.proto.ether6 import build_udp6, parse_udp6
from ntma.proto.ndp import link_local

VECTORS = Path(__file__).parent / "vectors" / "dhcp6"
ADAPTER_MAC = bytes.fromhex("020000000001")
DEVICE_MAC = bytes.fromhex("02005e10000b")  # the captured dhclient's
OURS = ipaddress.IPv6Address("fd00:99::23").packed
OTHER = ipaddress.IPv6Address("fd00:99::24").packed
DNS = ipaddress.IPv6Address("fd00:99::1").packed
CONFIG = Dhcp6Config(ADAPTER_MAC, (DNS,))
SERVER_DUID = bytes.fromhex("00030001") + ADAPTER_MAC
CLIENT_DUID = bytes.fromhex("00030001") + DEVICE_MAC
OTHER_DUID = bytes.fromhex("00030001020000000099")


def ip6(address: bytes) -> str:
    return str(ipaddress.IPv6Address(address))


def vector(name: str) -> bytes:
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().replace("\n", ""))


def server(address: bytes | None = OURS, config: Dhcp6Config = CONFIG) -> Dhcp6Server:
    srv = Dhcp6Server(config)
    srv.set_address(address)
    return srv


def ia_na(iaid: int = 1, *addresses: bytes) -> tuple[int, bytes]:
    inner = [(OPT_IAADDR, iaaddr_value(a, 0, 0)) for a in addresses]
    return (OPT_IA_NA, ia_value(OPT_IA_NA, iaid, 0, 0, inner))


def client(
    kind: int,
    *options: tuple[int, bytes],
    duid: bytes | None = CLIENT_DUID,
    server_id: bytes | None = None,
    xid: int = 0xABCDEF,
) -> bytes:
    """A client message built with our codec: client id, server id, then `options`."""
    head = [] if duid is None else [(OPT_CLIENTID, duid)]
    if server_id is not None:
        head.append((OPT_SERVERID, server_id))
    return build_dhcp6(kind, xid, [*head, *options])


def answer(srv: Dhcp6Server, data: bytes, now: float = 0.0) -> Dhcp6Message:
    reply = srv.handle(data, now)
    assert reply is not None, srv.events()
    return parse_dhcp6(reply)


def bind(srv: Dhcp6Server, now: float = 0.0, duid: bytes = CLIENT_DUID) -> None:
    reply = answer(srv, client(REQUEST, ia_na(), duid=duid, server_id=SERVER_DUID), now)
    assert reply.msg_type == REPLY and reply.ias[0].addresses[0].address == srv.address
    assert srv.client_duid == duid and srv.bound
    srv.events()


def statuses(msg: Dhcp6Message) -> list[int | None]:
    return [ia.status for ia in msg.ias]


def with_server_id(data: bytes, duid: bytes) -> bytes:
    """A captured message with its Server Identifier's DUID replaced (dnsmasq's by ours)."""
    msg = parse_dhcp6(data)
    options = [(c, duid if c == OPT_SERVERID else v) for c, v in msg.options]
    return build_dhcp6(msg.msg_type, msg.xid, options)


def tlv(code: int, value: bytes) -> bytes:
    """One option, packed here by hand (not with the codec)."""
    return struct.pack("!HH", code, len(value)) + value


# --- byte vectors ---------------------------------------------------------------------------

SOLICIT_BYTES = bytes.fromhex(
    "01 abcdef"  # SOLICIT, transaction id abcdef
    " 0001 000a 0003 0001 02005e10000b"  # Client Identifier: DUID-LL of the device
    " 0003 000c 00000001 00000000 00000000"  # IA_NA, IAID 1, T1 0, T2 0
    " 0008 0002 0000"  # Elapsed Time 0
)
ADVERTISE_BYTES = bytes.fromhex(
    "02 abcdef"  # ADVERTISE, the same transaction id
    " 0001 000a 0003 0001 02005e10000b"  # the client's DUID echoed
    " 0002 000a 0003 0001 020000000001"  # Server Identifier: DUID-LL of the adapter's MAC
    " 0007 0001 ff"  # Preference 255: request at once
    " 0003 0028 00000001 00001c20 00002d00"  # IA_NA 1, T1 7200, T2 11520 (0.5, 0.8 of 14400)
    " 0005 0018 fd000099000000000000000000000023 00003840 00015180"  # IAADDR 14400, 86400
    " 0017 0010 fd000099000000000000000000000001"  # DNS Recursive Name Server: the adapter
)


def test_advertise_to_a_solicit_byte_for_byte():
    assert client(SOLICIT, ia_na(), (OPT_ELAPSED_TIME, b"\0\0")) == SOLICIT_BYTES
    srv = server()
    assert srv.handle(SOLICIT_BYTES, 0.0) == ADVERTISE_BYTES
    assert srv.events() == [] and srv.client_duid is None  # nothing committed yet
    assert srv.duid == SERVER_DUID == duid_ll(ADAPTER_MAC)


def test_reply_to_a_request_byte_for_byte():
    request = (
        bytes.fromhex("03123456")
        + tlv(OPT_CLIENTID, CLIENT_DUID)
        + tlv(OPT_SERVERID, SERVER_DUID)
        + tlv(OPT_IA_NA, struct.pack("!III", 7, 3600, 5400) + tlv(5, OTHER + bytes(8)))
        + tlv(OPT_ORO, struct.pack("!HH", 23, 24))
    )
    expected = (
        bytes.fromhex("07123456")
        + tlv(OPT_CLIENTID, CLIENT_DUID)
        + tlv(OPT_SERVERID, SERVER_DUID)
        + tlv(
            OPT_IA_NA,
            struct.pack("!III", 7, 7200, 11520) + tlv(5, OURS + struct.pack("!II", 14400, 86400)),
        )
        + tlv(OPT_DNS_SERVERS, DNS)
    )
    srv = server()
    assert srv.handle(request, 5.0) == expected  # the address asked for (OTHER) gets ours
    assert srv.events() == [Leased6(CLIENT_DUID, 7, "fd00:99::23", 86400, False)]


def test_no_address_yet_advertise_byte_for_byte():
    expected = (
        bytes.fromhex("02abcdef")
        + tlv(OPT_CLIENTID, CLIENT_DUID)
        + tlv(OPT_SERVERID, SERVER_DUID)
        + tlv(OPT_STATUS_CODE, b"\x00\x02no address")
        + tlv(OPT_IA_NA, struct.pack("!III", 1, 0, 0) + tlv(OPT_STATUS_CODE, b"\x00\x02no address"))
    )
    assert server(None).handle(SOLICIT_BYTES, 0.0) == expected


def test_codec_round_trip_and_fields():
    value = ia_value(OPT_IA_NA, 9, 10, 20, [(OPT_IAADDR, iaaddr_value(OURS, 30, 40))])
    data = build_dhcp6(
        RENEW, 0x010203, [(OPT_CLIENTID, CLIENT_DUID), (OPT_IA_NA, value), (OPT_ORO, b"\0\x17")]
    )
    msg = parse_dhcp6(data)
    assert (msg.msg_type, msg.xid, msg.client_id, msg.server_id, msg.oro) == (
        RENEW,
        0x010203,
        CLIENT_DUID,
        None,
        (23,),
    )
    (ia,) = msg.ias
    assert (ia.code, ia.iaid, ia.t1, ia.t2, ia.status) == (OPT_IA_NA, 9, 10, 20, None)
    assert [(a.address, a.preferred, a.valid) for a in ia.addresses] == [(OURS, 30, 40)]
    assert build_dhcp6(msg.msg_type, msg.xid, msg.options) == data
    ta = parse_dhcp6(build_dhcp6(SOLICIT, 1, [(OPT_IA_TA, ia_value(OPT_IA_TA, 5))])).ias[0]
    assert (ta.code, ta.iaid, ta.t1, ta.t2) == (OPT_IA_TA, 5, 0, 0)
    prefix = iaprefix_value(bytes(16), 56, 1, 2)
    pd = parse_dhcp6(
        build_dhcp6(
            SOLICIT, 1, [(OPT_IA_PD, ia_value(OPT_IA_PD, 6, 0, 0, [(OPT_IAPREFIX, prefix)]))]
        )
    )
    assert pd.ias[0].addresses[0].prefix_len == 56


def test_config():
    assert (CONFIG.t1, CONFIG.t2) == (7200, 11520)
    assert Dhcp6Config(ADAPTER_MAC, (), 100, 100).t2 == 80
    for bad in (
        dict(server_mac=b"\0" * 5, dns=()),
        dict(server_mac=ADAPTER_MAC, dns=(b"\0" * 4,)),
        dict(server_mac=ADAPTER_MAC, dns=(DNS,) * 9),
        dict(server_mac=ADAPTER_MAC, dns=(), preferred_lifetime=0),
        dict(server_mac=ADAPTER_MAC, dns=(), preferred_lifetime=20, valid_lifetime=10),
        dict(server_mac=ADAPTER_MAC, dns=(), valid_lifetime=0xFFFFFFFF),
    ):
        with pytest.raises(ValueError):
            Dhcp6Config(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        server().set_address(b"\0" * 4)
    with pytest.raises(ValueError):
        duid_ll(b"\0" * 4)


# --- RFC 8415 16: which messages the server discards -----------------------------------------

# case: (message, reason of the Ignored6, or None when it is answered)
NO_CLIENT = None
VALIDATION = {
    "solicit": (client(SOLICIT, ia_na()), None),
    "solicit with our server id": (
        client(SOLICIT, ia_na(), server_id=SERVER_DUID),
        "SOLICIT with a server id",
    ),
    "solicit without client id": (
        client(SOLICIT, ia_na(), duid=NO_CLIENT),
        "SOLICIT without a client id",
    ),
    "request": (client(REQUEST, ia_na(), server_id=SERVER_DUID), None),
    "request without server id": (client(REQUEST, ia_na()), "REQUEST without a server id"),
    "request to another server": (client(REQUEST, ia_na(), server_id=OTHER_DUID), "other server"),
    "request without client id": (
        client(REQUEST, ia_na(), duid=NO_CLIENT, server_id=SERVER_DUID),
        "REQUEST without a client id",
    ),
    "renew": (client(RENEW, ia_na(1, OURS), server_id=SERVER_DUID), None),
    "renew without server id": (client(RENEW, ia_na(1, OURS)), "RENEW without a server id"),
    "renew to another server": (
        client(RENEW, ia_na(1, OURS), server_id=OTHER_DUID),
        "other server",
    ),
    "rebind": (client(REBIND, ia_na(1, OURS)), None),
    "rebind with a server id": (
        client(REBIND, ia_na(1, OURS), server_id=SERVER_DUID),
        "REBIND with a server id",
    ),
    "confirm": (client(CONFIRM, ia_na(1, OURS)), None),
    "confirm with a server id": (
        client(CONFIRM, ia_na(1, OURS), server_id=SERVER_DUID),
        "CONFIRM with a server id",
    ),
    "confirm naming no address": (client(CONFIRM, ia_na(1)), "CONFIRM names no address"),
    "release": (client(RELEASE, ia_na(1, OURS), server_id=SERVER_DUID), None),
    "release without server id": (client(RELEASE, ia_na(1, OURS)), "RELEASE without a server id"),
    "decline to another server": (
        client(DECLINE, ia_na(1, OURS), server_id=OTHER_DUID),
        "other server",
    ),
    "information-request": (client(INFORMATION_REQUEST), None),
    "information-request with our server id": (
        client(INFORMATION_REQUEST, server_id=SERVER_DUID),
        None,
    ),
    "information-request without client id": (client(INFORMATION_REQUEST, duid=NO_CLIENT), None),
    "information-request to another server": (
        client(INFORMATION_REQUEST, server_id=OTHER_DUID),
        "other server",
    ),
    "information-request with an IA": (
        client(INFORMATION_REQUEST, ia_na()),
        "INFORMATION-REQUEST with an IA",
    ),
    "advertise (a server's)": (
        client(ADVERTISE, server_id=OTHER_DUID),
        "message type ADVERTISE is not for a server",
    ),
    "reply (a server's)": (
        client(REPLY, server_id=OTHER_DUID),
        "message type REPLY is not for a server",
    ),
    "reconfigure": (client(RECONFIGURE), "message type RECONFIGURE is not for a server"),
    "relay-forw": (
        bytes([RELAY_FORW, 0]) + bytes(32),
        "message type RELAY-FORW is not for a server",
    ),
    "type 0": (b"\0\0\0\0", "message type 0 is not for a server"),
    "type 14": (b"\x0e\0\0\0garbage", "message type 14 is not for a server"),
    "type 200": (b"\xc8\0\0\0", "message type 200 is not for a server"),
}


@pytest.mark.parametrize("case", sorted(VALIDATION))
def test_validation_table(case):
    data, reason = VALIDATION[case]
    srv = server()
    reply = srv.handle(data, 0.0)
    events = srv.events()
    if reason is None:
        assert reply is not None
        msg = parse_dhcp6(reply)
        assert msg.xid == 0xABCDEF and msg.server_id == SERVER_DUID
        assert msg.client_id == parse_dhcp6(data).client_id  # echoed, or absent with it
        assert not any(isinstance(e, Ignored6) for e in events)
    else:
        assert reply is None and events == [Ignored6(reason)]


# --- ISC dhclient -6's own messages (tests/vectors/dhcp6, made by capture.sh) ----------------

FULL_ORO = (23, 24, 39, 31)  # DNS servers, domain list, FQDN, SNTP: Debian's request line
# name: (message type, option codes in order, the Option Request option)
CAPTURES = {
    "dhclient_solicit_bare": (SOLICIT, [1, 6, 8, 3], (23, 24)),  # -cf /dev/null
    "dhclient_solicit": (SOLICIT, [1, 6, 8, 3], FULL_ORO),
    "dhclient_solicit_rapid_commit": (SOLICIT, [1, 6, 8, 14, 3], FULL_ORO),
    "dhclient_request": (REQUEST, [1, 2, 6, 8, 3], FULL_ORO),
    "dhclient_renew": (RENEW, [1, 2, 6, 8, 3], FULL_ORO),
    "dhclient_rebind": (REBIND, [1, 6, 8, 3], FULL_ORO),
    "dhclient_confirm": (CONFIRM, [1, 6, 8, 3], FULL_ORO),
    "dhclient_release": (RELEASE, [1, 2, 6, 8, 3], FULL_ORO),
    "dhclient_decline": (DECLINE, [1, 2, 6, 8, 3], FULL_ORO),
    "dhclient_information_request": (INFORMATION_REQUEST, [1, 6, 8], FULL_ORO),
}
SESSION = ("dhclient_solicit", "dhclient_request", "dhclient_renew", "dhclient_rebind")


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_capture_parses_and_rebuilds_byte_for_byte(name):
    data = vector(name)
    msg = parse_dhcp6(data)
    kind, codes, oro = CAPTURES[name]
    assert (msg.msg_type, [c for c, _ in msg.options], msg.oro) == (kind, codes, oro)
    assert build_dhcp6(msg.msg_type, msg.xid, msg.options) == data


def test_what_dhclient_sends():
    msgs = {name: parse_dhcp6(vector(name)) for name in CAPTURES}
    for name, msg in msgs.items():
        duid = msg.client_id
        assert duid is not None and duid.endswith(DEVICE_MAC), name
        # DUID-LLT (type 1, Ethernet, a time) when stateful; DUID-LL with -S
        want = 3 if name == "dhclient_information_request" else 1
        assert (int.from_bytes(duid[:2], "big"), len(duid)) == (want, 10 if want == 3 else 14)
        assert not msg.rapid_commit or name == "dhclient_solicit_rapid_commit"
        if name == "dhclient_information_request":
            assert msg.ias == ()
            continue
        (ia,) = msg.ias  # one IA_NA; never an IA_TA or IA_PD
        assert (ia.code, ia.iaid) == (OPT_IA_NA, int.from_bytes(DEVICE_MAC[2:], "big"))
        hints = [(a.address, a.preferred, a.valid) for a in ia.addresses]
        if name.startswith("dhclient_solicit"):
            assert (ia.t1, ia.t2, hints) == (3600, 5400, [])  # asks for no address
        elif name in SESSION:
            assert (ia.t1, ia.t2, hints) == (3600, 5400, [(OURS, 7200, 7500)])
        else:  # CONFIRM, RELEASE, DECLINE: the address alone
            assert (ia.t1, ia.t2, hints) == (0, 0, [(OURS, 0, 0)])
    same = {msgs[n].client_id for n in (*SESSION, "dhclient_confirm", "dhclient_release")}
    assert len(same) == 1  # one DUID kept in the lease file through the session
    dnsmasq = msgs["dhclient_request"].server_id
    assert dnsmasq is not None and dnsmasq[:2] == b"\0\x01"  # dnsmasq's DUID-LLT


@pytest.mark.parametrize(
    "name", ["dhclient_request", "dhclient_renew", "dhclient_release", "dhclient_decline"]
)
def test_dhclients_messages_to_dnsmasq_are_for_another_server(name):
    srv = server()
    assert srv.handle(vector(name), 0.0) is None
    assert srv.events() == [Ignored6("other server")]


def test_a_dhclient_session_through_our_server():
    srv, t = server(), 0.0
    solicit = parse_dhcp6(vector("dhclient_solicit"))
    duid, iaid = solicit.client_id, solicit.ias[0].iaid
    advertise = answer(srv, vector("dhclient_solicit"))
    assert (advertise.msg_type, advertise.xid, advertise.client_id) == (
        ADVERTISE,
        solicit.xid,
        duid,
    )
    assert advertise.first(OPT_PREFERENCE) == b"\xff" and advertise.oro == ()
    assert [(a.address, a.preferred, a.valid) for a in advertise.ias[0].addresses] == [
        (OURS, 14400, 86400)
    ]
    for name, renewal in (("dhclient_request", False), ("dhclient_renew", True)):
        t += 1.0
        reply = answer(srv, with_server_id(vector(name), SERVER_DUID), t)
        assert reply.msg_type == REPLY and reply.first(OPT_DNS_SERVERS) == DNS
        assert srv.events() == [Leased6(duid, iaid, "fd00:99::23", 86400, renewal)]
    reply = answer(srv, vector("dhclient_rebind"), t + 1)  # REBIND carries no server id
    assert srv.events() == [Leased6(duid, iaid, "fd00:99::23", 86400, True)]
    assert answer(srv, vector("dhclient_confirm"), t + 2).status == STATUS_SUCCESS
    assert srv.events() == [Confirmed6(duid, ("fd00:99::23",), True)]
    reply = answer(srv, with_server_id(vector("dhclient_release"), SERVER_DUID), t + 3)
    assert (reply.status, reply.ias) == (STATUS_SUCCESS, ())
    assert srv.events() == [Released6(duid, iaid, "fd00:99::23")] and not srv.bound
    # The later runs had lease files of their own: new DUIDs, which may now have it.
    rapid = answer(srv, vector("dhclient_solicit_rapid_commit"), t + 4)
    assert rapid.msg_type == REPLY and rapid.rapid_commit
    assert [type(e) for e in srv.events()] == [Leased6]
    # dhclient -S sent DUID-LL, not the DUID-LLT of the bound lease: answered all the same.
    info = answer(srv, vector("dhclient_information_request"), t + 5)
    assert info.first(OPT_DNS_SERVERS) == DNS and info.ias == () and srv.bound


def test_a_dhclient_decline_ends_the_lease():
    srv = server()
    decline = parse_dhcp6(vector("dhclient_decline"))
    bind(srv, 0.0, duid=decline.client_id)
    reply = answer(srv, with_server_id(vector("dhclient_decline"), SERVER_DUID), 1.0)
    assert (reply.msg_type, reply.status, reply.xid) == (REPLY, STATUS_SUCCESS, decline.xid)
    assert srv.events() == [Declined6(decline.client_id, decline.ias[0].iaid, "fd00:99::23")]


def test_dnsmasq_answers_read_by_our_codec():
    for name, kind in (("dnsmasq_advertise", ADVERTISE), ("dnsmasq_reply_request", REPLY)):
        msg = parse_dhcp6(vector(name))
        assert msg.msg_type == kind and msg.first(OPT_DNS_SERVERS) == DNS
        (ia,) = msg.ias
        assert (ia.t1, ia.t2) == (60, 105)  # dnsmasq: 0.5 and 0.875 of its 120 s lease
        assert [(a.address, a.preferred, a.valid) for a in ia.addresses] == [(OURS, 120, 120)]
        assert msg.status == STATUS_SUCCESS
        assert build_dhcp6(msg.msg_type, msg.xid, msg.options) == vector(name)


def _boundaries(data: bytes) -> set[int]:
    """The lengths at which data ends between two top-level options (a shorter message)."""
    out, pos = {4}, 4
    while pos < len(data):
        pos += 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.add(pos)
    return out


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_truncated_at_every_length(name):
    data = vector(name)
    whole = parse_dhcp6(data)
    ends = _boundaries(data)
    for n in range(len(data)):
        if n in ends:  # a whole message with fewer options
            cut = parse_dhcp6(data[:n])
            assert cut.options == whole.options[: len(cut.options)]
        else:
            with pytest.raises(CodecError):
                parse_dhcp6(data[:n])
            with pytest.raises(CodecError):
                server().handle(data[:n], 0.0)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(buf)) if buf else 0
        action = rng.random()
        if action < 0.45:
            if buf:
                buf[pos] = rng.randrange(256)
        elif action < 0.6:
            if buf:
                buf[pos] ^= 1 << rng.randrange(8)
        elif action < 0.75:
            del buf[pos : pos + rng.randint(1, 8)]
        elif action < 0.9:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:  # a length field made to lie
            buf[pos : pos + 2] = rng.choice([b"\0\0", b"\xff\xff", b"\0\x18", b"\0\x0c"])
    return bytes(buf)


def test_ten_thousand_mutations_of_the_captures():
    rng = random.Random(8415)
    seeds = [vector(n) for n in sorted(CAPTURES)]
    seeds += [with_server_id(s, SERVER_DUID) for s in seeds if parse_dhcp6(s).server_id]
    accepted = 0
    srv = server()
    for i in range(10_000):
        if i % 500 == 0:
            srv = server(OURS if i % 1000 else None)
        data = _mutate(rng, rng.choice(seeds))
        _check(srv, data, float(i))
        try:
            parse_dhcp6(data)
            accepted += 1
        except CodecError:
            pass
    assert 1000 < accepted < 9000  # both paths were exercised


# --- the messages, one by one ------------------------------------------------------------


def test_rapid_commit_is_honoured_with_a_committed_reply():
    srv = server()
    msg = answer(srv, client(SOLICIT, ia_na(3), (OPT_RAPID_COMMIT, b"")), 1.0)
    assert msg.msg_type == REPLY and msg.rapid_commit
    assert msg.ias[0].addresses[0].address == OURS and msg.first(OPT_DNS_SERVERS) == DNS
    assert srv.events() == [Leased6(CLIENT_DUID, 3, "fd00:99::23", 86400, False)]
    assert srv.bound and srv.client_duid == CLIENT_DUID

    off = server(config=Dhcp6Config(ADAPTER_MAC, (DNS,), rapid_commit=False))
    msg = answer(off, client(SOLICIT, ia_na(3), (OPT_RAPID_COMMIT, b"")))
    assert msg.msg_type == ADVERTISE and not msg.rapid_commit and off.events() == []
    nothing = server(None)  # nothing to commit: an ADVERTISE saying so
    msg = answer(nothing, client(SOLICIT, ia_na(3), (OPT_RAPID_COMMIT, b"")))
    assert (msg.msg_type, msg.status, statuses(msg)) == (ADVERTISE, STATUS_NO_ADDRS_AVAIL, [2])


def test_without_an_address_nothing_is_given():
    srv = server(None)
    msg = answer(srv, client(SOLICIT, ia_na()))
    assert msg.status == STATUS_NO_ADDRS_AVAIL and statuses(msg) == [STATUS_NO_ADDRS_AVAIL]
    assert msg.first(OPT_DNS_SERVERS) is None and msg.first(OPT_PREFERENCE) is None
    for kind, server_id in ((REQUEST, SERVER_DUID), (RENEW, SERVER_DUID), (REBIND, None)):
        msg = answer(srv, client(kind, ia_na(1, OTHER), server_id=server_id))
        assert msg.msg_type == REPLY and statuses(msg) == [STATUS_NO_ADDRS_AVAIL]
        zeroed = [(a.address, a.preferred, a.valid) for a in msg.ias[0].addresses]
        assert zeroed == ([] if kind == REQUEST else [(OTHER, 0, 0)])
        assert msg.first(OPT_DNS_SERVERS) == DNS
    assert srv.events() == [] and not srv.bound
    srv.set_address(OURS)  # the adapter decided: the next SOLICIT gets it
    assert answer(srv, client(SOLICIT, ia_na())).ias[0].addresses[0].address == OURS


def test_one_address_per_device_other_ias_are_told_no():
    srv = server()
    data = client(
        REQUEST,
        ia_na(1, OTHER),
        (OPT_IA_TA, ia_value(OPT_IA_TA, 2)),
        ia_na(3),
        (OPT_IA_PD, ia_value(OPT_IA_PD, 4)),
        server_id=SERVER_DUID,
    )
    msg = answer(srv, data)
    assert [(ia.code, ia.iaid) for ia in msg.ias] == [(3, 1), (4, 2), (3, 3), (25, 4)]
    assert statuses(msg) == [
        None,
        STATUS_NO_ADDRS_AVAIL,
        STATUS_NO_ADDRS_AVAIL,
        STATUS_NO_PREFIX_AVAIL,
    ]
    assert [a.address for a in msg.ias[0].addresses] == [OURS]  # not OTHER, which it asked for
    assert (msg.ias[0].t1, msg.ias[0].t2, msg.ias[2].t1, msg.ias[2].t2) == (7200, 11520, 0, 0)
    assert srv.events() == [Leased6(CLIENT_DUID, 1, "fd00:99::23", 86400, False)]
    only_pd = answer(server(), client(SOLICIT, (OPT_IA_PD, ia_value(OPT_IA_PD, 4))))
    assert (only_pd.status, statuses(only_pd)) == (STATUS_NO_ADDRS_AVAIL, [STATUS_NO_PREFIX_AVAIL])


def test_renew_and_rebind_zero_an_address_that_is_not_ours():
    srv = server()
    bind(srv)
    for kind, server_id in ((RENEW, SERVER_DUID), (REBIND, None)):
        msg = answer(srv, client(kind, ia_na(1, OTHER, OURS, OTHER), server_id=server_id), 10.0)
        lifetimes = [(a.address, a.preferred, a.valid) for a in msg.ias[0].addresses]
        assert lifetimes == [(OTHER, 0, 0), (OURS, 14400, 86400)]  # OTHER once, ours last
        assert srv.events() == [Leased6(CLIENT_DUID, 1, "fd00:99::23", 86400, True)]
    # The adapter moves the device to another address: the old one is zeroed at renewal.
    srv.set_address(OTHER)
    msg = answer(srv, client(RENEW, ia_na(1, OURS), server_id=SERVER_DUID), 20.0)
    lifetimes = [(a.address, a.preferred, a.valid) for a in msg.ias[0].addresses]
    assert lifetimes == [(OURS, 0, 0), (OTHER, 14400, 86400)]


def test_confirm():
    srv = server()
    assert answer(srv, client(CONFIRM, ia_na(1, OURS))).status == STATUS_SUCCESS
    assert answer(srv, client(CONFIRM, ia_na(1, OURS, OTHER))).status == STATUS_NOT_ON_LINK
    assert answer(server(None), client(CONFIRM, ia_na(1, OURS))).status == STATUS_NOT_ON_LINK
    assert srv.events() == [
        Confirmed6(CLIENT_DUID, ("fd00:99::23",), True),
        Confirmed6(CLIENT_DUID, ("fd00:99::23", "fd00:99::24"), False),
    ]
    assert not srv.bound  # a CONFIRM is no lease


@pytest.mark.parametrize("kind,event", [(RELEASE, Released6), (DECLINE, Declined6)])
def test_release_and_decline_end_the_lease(kind, event):
    srv = server()
    bind(srv)
    msg = answer(srv, client(kind, ia_na(1, OURS), server_id=SERVER_DUID), 5.0)
    assert (msg.msg_type, msg.status, msg.ias) == (REPLY, STATUS_SUCCESS, ())
    assert srv.events() == [event(CLIENT_DUID, 1, "fd00:99::23")]
    assert not srv.bound
    msg = answer(srv, client(kind, ia_na(1, OURS), server_id=SERVER_DUID), 6.0)  # again
    assert (msg.status, statuses(msg)) == (STATUS_SUCCESS, [STATUS_NO_BINDING])
    assert srv.events() == []
    bind(srv, 7.0, duid=OTHER_DUID)  # now another DUID may have it


def test_release_names_the_address_the_client_holds():
    srv = server(OTHER)
    bind(srv)  # the client holds OTHER
    srv.set_address(OURS)  # the adapter moved it: OURS from its next RENEW on
    msg = answer(srv, client(RELEASE, ia_na(1, OURS), server_id=SERVER_DUID), 1.0)
    assert statuses(msg) == [STATUS_NO_BINDING] and srv.events() == [] and srv.bound
    msg = answer(srv, client(DECLINE, ia_na(1, OTHER), server_id=SERVER_DUID), 2.0)
    assert msg.ias == () and srv.events() == [Declined6(CLIENT_DUID, 1, "fd00:99::24")]
    assert not srv.bound


def test_information_request_gets_dns_only():
    srv = server(None)
    msg = answer(srv, client(INFORMATION_REQUEST, (OPT_ORO, b"\0\x17\0\x18")))
    assert [code for code, _ in msg.options] == [OPT_CLIENTID, OPT_SERVERID, OPT_DNS_SERVERS]
    assert msg.first(OPT_DNS_SERVERS) == DNS and msg.msg_type == REPLY
    msg = answer(srv, client(INFORMATION_REQUEST, duid=None))
    assert msg.client_id is None and msg.first(OPT_DNS_SERVERS) == DNS
    assert srv.events() == [Informed6(CLIENT_DUID), Informed6(None)]
    no_dns = server(config=Dhcp6Config(ADAPTER_MAC, ()))
    assert [c for c, _ in answer(no_dns, client(INFORMATION_REQUEST)).options] == [1, 2]


def test_one_client_other_duids_are_ignored_while_it_is_bound():
    srv = server()
    bind(srv, 0.0)
    for data in (
        client(SOLICIT, ia_na(), duid=OTHER_DUID),
        client(REQUEST, ia_na(), duid=OTHER_DUID, server_id=SERVER_DUID),
        client(CONFIRM, ia_na(1, OURS), duid=OTHER_DUID),
        client(RELEASE, ia_na(1, OURS), duid=OTHER_DUID, server_id=SERVER_DUID),
    ):
        assert srv.handle(data, 1.0) is None
        assert srv.events() == [Ignored6("other client")]
    assert srv.bound and srv.client_duid == CLIENT_DUID
    # An INFORMATION-REQUEST touches no lease: any DUID, or none, gets the DNS servers.
    for duid in (OTHER_DUID, None):
        assert answer(srv, client(INFORMATION_REQUEST, duid=duid), 1.0).first(23) == DNS
    assert srv.events() == [Informed6(OTHER_DUID), Informed6(None)]
    bind(srv, 86400.0 + 1.0, duid=OTHER_DUID)  # the first lease expired: the next DUID has it


def test_an_unbound_client_can_be_replaced():
    srv = server()
    answer(srv, client(SOLICIT, ia_na()))  # advertised, never requested
    bind(srv, 1.0, duid=OTHER_DUID)


def test_events_drain():
    srv = server()
    srv.handle(client(SOLICIT, ia_na(), server_id=SERVER_DUID), 0.0)
    assert srv.events() == [Ignored6("SOLICIT with a server id")]
    assert srv.events() == []


# --- bounds: the budget and the reply size ---------------------------------------------------


def test_reply_budget():
    srv = server()
    solicit = client(SOLICIT, ia_na())
    assert all(srv.handle(solicit, 0.0) is not None for _ in range(REPLY_BUDGET))
    srv.events()
    assert srv.handle(solicit, 0.5) is None and srv.refused == 1
    assert srv.events() == [Ignored6("reply budget spent")]
    srv.handle(client(SOLICIT, ia_na(), server_id=SERVER_DUID), 0.5)  # ignored: costs nothing
    assert srv.handle(solicit, 1.0) is not None  # one a second after the burst
    assert srv.handle(solicit, 1.0) is None and srv.refused == 2
    assert all(srv.handle(solicit, 100.0 + i / 100) is not None for i in range(REPLY_BUDGET))
    # A replay of dhclient's retransmissions (1, 2, 4, ... s apart) is never refused.
    srv = server(None)
    t = 0.0
    for step in (1, 2, 4, 8, 16, 32, 64, 120, 120):
        t += step
        assert srv.handle(solicit, t) is not None


def test_reply_size_is_bounded_whatever_the_request():
    duid = b"\x00\x02" + bytes(128)  # the longest DUID, 130 bytes
    many = [OTHER[:15] + bytes([i]) for i in range(40)]
    ias = [ia_na(i, *many) for i in range(MAX_OPTIONS - 2)]
    data = client(RENEW, *ias, duid=duid, server_id=SERVER_DUID)
    config = Dhcp6Config(ADAPTER_MAC, (DNS,) * 8)
    reply = server(config=config).handle(data, 0.0)
    assert reply is not None and len(reply) <= REPLY_MAX <= 1232  # one IPv6 minimum MTU
    msg = parse_dhcp6(reply)
    assert len(msg.ias) == MAX_IAS
    assert [len(ia.addresses) for ia in msg.ias] == [MAX_ZEROED + 1] + [MAX_ZEROED] * (MAX_IAS - 1)
    # The ordinary case: a minimal SOLICIT and the ADVERTISE it gets.
    assert (len(SOLICIT_BYTES), len(ADVERTISE_BYTES)) == (40, 101)


# --- malformed input ---------------------------------------------------------------------------


def _ia_raw(body: bytes) -> bytes:
    return bytes.fromhex("01000001") + tlv(OPT_CLIENTID, CLIENT_DUID) + tlv(OPT_IA_NA, body)


MALFORMED = {
    "empty": b"",
    "three bytes": b"\x01\0\0",
    "option header cut": bytes.fromhex("01000001000100"),
    "option past the end": bytes.fromhex("010000010001000a0003000102"),
    "option past the end by one": bytes.fromhex("01000001000800030000"),
    "IA_NA of 11 bytes": _ia_raw(bytes(11)),
    "IA_TA of 3 bytes": bytes.fromhex("01000001") + tlv(OPT_IA_TA, bytes(3)),
    "IA_PD of 11 bytes": bytes.fromhex("01000001") + tlv(OPT_IA_PD, bytes(11)),
    "IAADDR of 23 bytes": _ia_raw(bytes(12) + tlv(OPT_IAADDR, bytes(23))),
    "option inside an IA past its end": _ia_raw(bytes(12) + bytes.fromhex("00050030") + bytes(24)),
    "option inside an IAADDR cut": _ia_raw(bytes(12) + tlv(OPT_IAADDR, bytes(24) + b"\0\x0d\0")),
    "status inside an IA of 1 byte": _ia_raw(bytes(12) + tlv(OPT_STATUS_CODE, b"\0")),
    "IAPREFIX of 24 bytes": bytes.fromhex("01000001")
    + tlv(OPT_IA_PD, bytes(12) + tlv(26, bytes(24))),
    "IAPREFIX length 129": bytes.fromhex("01000001")
    + tlv(OPT_IA_PD, bytes(12) + tlv(26, bytes(8) + b"\x81" + bytes(16))),
    "65 options": bytes.fromhex("01000001") + tlv(OPT_ELAPSED_TIME, b"\0\0") * 65,
    "65 options in an IA": _ia_raw(bytes(12) + tlv(99, b"") * 65),
    "65 options in an IAADDR": _ia_raw(bytes(12) + tlv(OPT_IAADDR, bytes(24) + tlv(99, b"") * 65)),
    "client id twice": client(SOLICIT, (OPT_CLIENTID, CLIENT_DUID)),
    "server id twice": client(REQUEST, (OPT_SERVERID, SERVER_DUID), server_id=SERVER_DUID),
    "DUID of 2 bytes": client(SOLICIT, duid=b"\0\x03"),
    "DUID of 131 bytes": client(SOLICIT, duid=bytes(131)),
    "ORO of odd length": client(SOLICIT, (OPT_ORO, b"\0\x17\0")),
    "elapsed time of 3 bytes": client(SOLICIT, (OPT_ELAPSED_TIME, b"\0\0\0")),
    "rapid commit with a value": client(SOLICIT, (OPT_RAPID_COMMIT, b"\0")),
    "preference of 2 bytes": client(SOLICIT, (OPT_PREFERENCE, b"\0\0")),
    "status of 1 byte": client(SOLICIT, (OPT_STATUS_CODE, b"\0")),
    "DNS list of 15 bytes": client(SOLICIT, (OPT_DNS_SERVERS, bytes(15))),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_raises_codec_error(case):
    srv = server()
    with pytest.raises(CodecError):
        srv.handle(MALFORMED[case], 0.0)
    assert srv.events() == []


def test_limits_are_exactly_at_64_options():
    data = bytes.fromhex("01000001") + tlv(OPT_CLIENTID, CLIENT_DUID) + tlv(99, b"") * 63
    assert len(parse_dhcp6(data).options) == MAX_OPTIONS
    assert parse_dhcp6(_ia_raw(bytes(12) + tlv(99, b"") * 64)).ias[0].addresses == ()
    assert parse_dhcp6(client(SOLICIT, duid=bytes(130))).client_id == bytes(130)
    with pytest.raises(CodecError):
        build_dhcp6(SOLICIT, 1 << 24)
    with pytest.raises(CodecError):
        build_dhcp6(SOLICIT, 1, [(99, bytes(70000))])
    assert status_value(STATUS_NO_BINDING, "x") == b"\0\x03x"


def _check(srv: Dhcp6Server, data: bytes, now: float) -> None:
    """Only CodecError, or a reply that parses, echoes the xid and is within REPLY_MAX."""
    try:
        reply = srv.handle(data, now)
    except CodecError:
        return
    srv.events()
    if reply is not None:
        assert len(reply) <= REPLY_MAX
        msg = parse_dhcp6(reply)
        assert msg.msg_type in (ADVERTISE, REPLY) and reply[1:4] == data[1:4]
        assert msg.server_id == SERVER_DUID


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    _check(server(), data, 0.0)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([SOLICIT, REQUEST, RENEW, REBIND, CONFIRM, RELEASE, DECLINE, 11]),
    st.binary(max_size=200),
)
def test_arbitrary_options_after_a_valid_head(kind, tail):
    data = (
        client(kind, server_id=SERVER_DUID if kind in (REQUEST, RENEW, RELEASE, DECLINE) else None)
        + tail
    )
    srv = server()
    bind(srv)
    _check(srv, data, 1.0)


# --- the real dhclient -6 against Dhcp6Server (netns) ---------------------------------------

CLONE_NEWNET = 0x4000_0000
_libc = ctypes.CDLL(None, use_errno=True)
REQUEST_LINE = "request dhcp6.name-servers, dhcp6.domain-search, dhcp6.fqdn, dhcp6.sntp-servers;\n"
SCRIPT = """#!/bin/sh
# dhclient -sf: record the call's environment, and set the address as Debian's
# dhclient-script does; nothing else (no resolv.conf).
env | sort >"{dir}/env.$(date +%s%N).$reason"
echo "$reason" >>"{dir}/reasons"
case "$reason" in
    BOUND6|RENEW6|REBIND6)
        [ -z "$new_ip6_address" ] || ip -6 addr replace "$new_ip6_address" dev "$interface" \\
            scope global valid_lft "$new_max_life" preferred_lft "$new_preferred_life" ;;
    EXPIRE6|RELEASE6|STOP6)
        [ -z "$old_ip6_address" ] || ip -6 addr del "$old_ip6_address" dev "$interface" ;;
esac
exit 0
"""


class PacketServer(threading.Thread):
    """A Dhcp6Server behind an AF_PACKET socket on our end of the veth. The socket is made
    in the adapter's namespace by this thread (setns moves only the calling thread); each
    datagram to port 547 goes to `srv`, and each reply back from link_local(ADAPTER_MAC)
    port 547 to the datagram's source, Ethernet to its MAC, as the adapter will send it."""

    def __init__(self, ns: str, ifname: str, srv: Dhcp6Server) -> None:
        super().__init__(daemon=True)
        self.ns, self.ifname, self.srv = ns, ifname, srv
        self.received: list[bytes] = []  # the client's payloads
        self.sources: list[tuple[bytes, bytes, int]] = []  # (MAC, IPv6, port) of each
        self.times: list[float] = []  # when each arrived (time.monotonic)
        self.events: list[object] = []
        self.errors: list[BaseException] = []
        self._quit = threading.Event()
        self._ready = threading.Event()

    def __enter__(self) -> PacketServer:
        self.start()
        assert self._ready.wait(5) and not self.errors, self.errors
        return self

    def __exit__(self, *exc: object) -> None:
        self._quit.set()
        self.join(5)

    def types(self) -> list[int]:
        return [p[0] for p in self.received]

    def run(self) -> None:
        try:
            fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6)) as sock:
                sock.bind((self.ifname, ETH_P_IPV6))
                self._ready.set()
                while not self._quit.is_set():
                    if select.select([sock], [], [], 0.05)[0]:
                        frame, where = sock.recvfrom(65535)
                        if where[2] != socket.PACKET_OUTGOING:
                            self._answer(sock, frame)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
            self._ready.set()

    def _answer(self, sock: socket.socket, frame: bytes) -> None:
        try:
            sport, dport, payload = parse_udp6(frame[14:])
        except CodecError:
            return  # ND, MLD: not ours
        if dport != 547:
            return
        src = frame[22:38]
        self.received.append(payload)
        self.sources.append((frame[6:12], src, sport))
        self.times.append(time.monotonic())
        reply = self.srv.handle(payload, self.times[-1])
        self.events.extend(self.srv.events())
        if reply is not None:
            packet = build_udp6(link_local(ADAPTER_MAC), src, 547, sport, reply)
            sock.send(eth_header(frame[6:12], ADAPTER_MAC, ETH_P_IPV6) + packet)


class Device:
    """The device's namespace, and ISC dhclient -6 in it with its files under `tmp`."""

    def __init__(self, ns: str, ifname: str, tmp: Path) -> None:
        self.ns, self.ifname, self.tmp = ns, ifname, tmp
        self.script = tmp / "script"
        self.script.write_text(SCRIPT.format(dir=tmp))
        self.script.chmod(0o755)
        self.conf = tmp / "dhclient.conf"
        self.conf.write_text(REQUEST_LINE)
        self.leases = tmp / "dhclient6.leases"
        self.pidfile = tmp / "dhclient6.pid"

    def dhclient(
        self, *args: str, wait: bool = True
    ) -> subprocess.CompletedProcess | subprocess.Popen:
        cmd = [
            "ip", "netns", "exec", self.ns, "dhclient", "-6", "-v", "-cf", str(self.conf),
            "-pf", str(self.pidfile), "-lf", str(self.leases), "-sf", str(self.script),
            *args, self.ifname,
        ]  # fmt: skip
        if wait:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def reasons(self) -> list[str]:
        path = self.tmp / "reasons"
        return path.read_text().split() if path.exists() else []

    def env(self, reason: str) -> dict[str, str]:
        """The environment of the script's last call for `reason`."""
        path = sorted(self.tmp.glob(f"env.*.{reason}"))[-1]
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    def addresses(self) -> str:
        return subprocess.run(
            ["ip", "-n", self.ns, "-6", "addr", "show", "dev", self.ifname, "scope", "global"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def stop(self) -> None:
        """End the dhclient the pid file names (one daemonized by -1 lives on otherwise)."""
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def wait_until(what: str, probe, within: float = 20.0):
    deadline = time.monotonic() + within
    while not (result := probe()):
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        time.sleep(0.05)
    return result


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


@pytest.fixture
def netns_link(tmp_path) -> Iterator[tuple[str, Device]]:
    """Namespaces ntmatest-d6-{a,d}-<pid> joined by a veth: ours (IPv6 off on our end, so
    its kernel stays out) and the device's, whose link-local address is out of DAD."""
    ours, dev = f"ntmatest-d6-a-{os.getpid()}", f"ntmatest-d6-d-{os.getpid()}"
    device = None
    try:
        run("ip", "netns", "add", ours)
        run("ip", "netns", "add", dev)
        run(
            "ip", "-n", ours, "link", "add", "d6a", "address", ADAPTER_MAC.hex(":"), "type",
            "veth", "peer", "name", "d6d", "address", DEVICE_MAC.hex(":"), "netns", dev,
        )  # fmt: skip
        run("ip", "netns", "exec", ours, "sysctl", "-qw", "net.ipv6.conf.d6a.disable_ipv6=1")
        run("ip", "-n", ours, "link", "set", "d6a", "up")
        run("ip", "-n", dev, "link", "set", "lo", "up")
        run("ip", "-n", dev, "link", "set", "d6d", "up")
        device = Device(dev, "d6d", tmp_path)

        def link_local_ready() -> bool:
            out = subprocess.run(
                ["ip", "-n", dev, "-6", "addr", "show", "dev", "d6d", "scope", "link"],
                capture_output=True,
                text=True,
            ).stdout
            return "inet6" in out and "tentative" not in out

        wait_until("link-local address out of DAD", link_local_ready, 10)
        yield ours, device
    finally:
        if device is not None:
            device.stop()
        subprocess.run(["ip", "netns", "del", dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", ours], capture_output=True)


@pytest.mark.netns
def test_dhclient_gets_the_address_and_dns_renews_and_releases(netns_link):
    ours, device = netns_link
    config = Dhcp6Config(ADAPTER_MAC, (DNS,), preferred_lifetime=4, valid_lifetime=30)
    with PacketServer(ours, "d6a", server(OURS, config)) as packets:
        done = device.dhclient("-1")
        assert done.returncode == 0, done.stdout + done.stderr  # bound, then daemonized
        assert "fd00:99::23/128 scope global" in device.addresses()
        bound = device.env("BOUND6")
        assert bound["new_ip6_address"] == "fd00:99::23"
        assert bound["new_dhcp6_name_servers"] == "fd00:99::1"
        server_id = bytes(int(b, 16) for b in bound["new_dhcp6_server_id"].split(":"))
        assert server_id == SERVER_DUID  # dhclient prints it as 0:3:0:1:2:0:0:0:0:1
        assert "option dhcp6.name-servers fd00:99::1;" in device.leases.read_text()
        assert packets.types()[:2] == [SOLICIT, REQUEST]
        assert packets.times[1] - packets.times[0] < 0.5  # preference 255: no 1 s wait
        leased = [e for e in packets.events if isinstance(e, Leased6)]
        assert leased[0].renewal is False and leased[0].address == "fd00:99::23"
        duid = leased[0].duid
        mac, src, port = packets.sources[0]
        assert (mac, src, port) == (DEVICE_MAC, link_local(DEVICE_MAC), 546)

        wait_until("RENEW at T1 (2 s)", lambda: "RENEW6" in device.reasons(), 15)
        assert RENEW in packets.types()
        renewed = [e for e in packets.events if isinstance(e, Leased6) and e.renewal]
        assert renewed and renewed[0].duid == duid

        released = device.dhclient("-r")
        assert released.returncode == 0, released.stdout + released.stderr
        assert packets.types()[-1] == RELEASE
        assert Released6(duid, leased[0].iaid, "fd00:99::23") in packets.events
        assert "fd00:99::23" not in device.addresses()  # RELEASE6: the script took it away
        assert not packets.srv.bound
        assert not [e for e in packets.events if isinstance(e, Ignored6)]
    assert not packets.errors, packets.errors
    print(f"dhclient -6 sent {[p.hex() for p in packets.received]}")


@pytest.mark.netns
def test_dhclient_rapid_commit_is_one_exchange(netns_link):
    ours, device = netns_link
    device.conf.write_text(REQUEST_LINE + "send dhcp6.rapid-commit;\n")
    with PacketServer(ours, "d6a", server()) as packets:
        done = device.dhclient("-1")
        assert done.returncode == 0, done.stdout + done.stderr
        assert packets.types() == [SOLICIT] and parse_dhcp6(packets.received[0]).rapid_commit
        assert "fd00:99::23/128" in device.addresses()
        assert device.env("BOUND6")["new_dhcp6_name_servers"] == "fd00:99::1"
    assert not packets.errors, packets.errors


@pytest.mark.netns
def test_dhclient_waits_out_no_address_yet(netns_link):
    ours, device = netns_link
    with PacketServer(ours, "d6a", server(None)) as packets:
        client_proc = device.dhclient("-1", wait=False)
        try:
            wait_until(
                "a SOLICIT answered NoAddrsAvail", lambda: packets.types().count(SOLICIT) >= 1
            )
            time.sleep(0.2)
            assert device.reasons() == ["PREINIT6"]
            packets.srv.set_address(OURS)  # the adapter decides: the next retransmission gets it
            assert client_proc.wait(30) == 0, client_proc.stdout.read()  # type: ignore[union-attr]
        finally:
            client_proc.kill()
            client_proc.wait(5)
        assert packets.types().count(SOLICIT) >= 2 and "fd00:99::23/128" in device.addresses()
    assert not packets.errors, packets.errors


@pytest.mark.netns
def test_dhclient_stateless_gets_dns(netns_link):
    ours, device = netns_link
    with PacketServer(ours, "d6a", server(None)) as packets:
        done = device.dhclient("-S", "-1")
        assert done.returncode == 0, done.stdout + done.stderr
        # dhclient 4.4 runs its script with reason RENEW6 (not INFORM6) for this REPLY
        wait_until("the script's call", lambda: "RENEW6" in device.reasons(), 10)
        assert device.env("RENEW6")["new_dhcp6_name_servers"] == "fd00:99::1"
        assert packets.types() == [INFORMATION_REQUEST]
        assert [type(e) for e in packets.events] == [Informed6]
        assert device.addresses() == ""
    assert not packets.errors, packets.errors
