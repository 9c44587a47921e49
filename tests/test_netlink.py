"""The rtnetlink parser: captures from a real kernel (tests/vectors/netlink/), hand-built
messages both families, framing, truncation and junk (it never raises), and the socket's
drain turning ENOBUFS into an overrun."""

from __future__ import annotations

import errno
import socket
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntma.io.netlink import (
    IFA_ADDRESS,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
    OVERRUN,
    OVERRUN_MESSAGE,
    RTA_OIF,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    WATCH_GROUPS,
    NetEvent,
    NetlinkSocket,
    parse_messages,
)

from .netlink_msgs import addr_msg, link_msg, nlmsg, route_msg, rtattr

VECTORS = Path(__file__).parent / "vectors" / "netlink"
V4, V6 = socket.AF_INET, socket.AF_INET6
captured = pytest.mark.skipif(
    sys.byteorder != "little", reason="the captures are in little-endian (x86-64) byte order"
)


def vector(name: str) -> list[bytes]:
    return [bytes.fromhex(line) for line in (VECTORS / f"{name}.hex").read_text().split()]


def events_of(datagrams: list[bytes]) -> list[NetEvent]:
    out: list[NetEvent] = []
    for datagram in datagrams:
        events, bad = parse_messages(datagram)
        assert bad == 0
        out += events
    return out


# -- captures from the kernel ------------------------------------------------------------


@captured
def test_every_captured_notice_parses_to_one_event():
    for path in sorted(VECTORS.glob("*.hex")):
        for datagram in vector(path.stem):
            events, bad = parse_messages(datagram)
            assert (len(events), bad) == (1, 0), path.name


@captured
def test_captured_link_notices_carry_index_and_name():
    assert events_of(vector("link_add")) == [
        NetEvent("link", "new", 2, socket.AF_UNSPEC, ifname="nw1"),
        NetEvent("link", "new", 3, socket.AF_UNSPEC, ifname="nw0"),
    ]
    gone = [e for e in events_of(vector("link_del")) if e.kind == "link" and e.action == "del"]
    assert {(e.ifindex, e.ifname) for e in gone} == {(2, "nw1"), (3, "nw0")}


@captured
def test_captured_ipv4_address_add_brings_its_routes():
    assert events_of(vector("addr_add_v4")) == [
        NetEvent("addr", "new", 3, V4, "192.0.2.10"),
        NetEvent("route", "new", 3, V4, "192.0.2.10/32", table=255),
        NetEvent("route", "new", 3, V4, "192.0.2.0/24", table=254),
        NetEvent("route", "new", 3, V4, "192.0.2.255/32", table=255),
    ]
    assert events_of(vector("addr_del_v4"))[0] == NetEvent("addr", "del", 3, V4, "192.0.2.10")


@captured
def test_captured_default_routes_have_no_dst_but_a_gateway():
    default = NetEvent("route", "new", 3, V4, "0.0.0.0/0", gateway="192.0.2.1", table=254)
    assert events_of(vector("route_add_default_v4")) == [default]
    assert events_of(vector("route_readd_default_v4")) == [default]  # RTA_PRIORITY skipped
    assert events_of(vector("route_del_default_v4")) == [
        NetEvent("route", "del", 3, V4, "0.0.0.0/0", gateway="192.0.2.1", table=254)
    ]


@captured
def test_captured_ipv6_address_and_route():
    assert NetEvent("addr", "new", 3, V6, "2001:db8::10") in events_of(vector("addr_add_v6"))
    assert events_of(vector("route_add_v6")) == [
        NetEvent("route", "new", 3, V6, "2001:db8:1::/48", gateway="2001:db8::1", table=254)
    ]


@captured
def test_captured_link_down_tells_ipv6_losses_but_not_ipv4_ones():
    events = events_of(vector("link_down"))
    assert events[0] == NetEvent("link", "new", 3, socket.AF_UNSPEC, ifname="nw0")
    assert {e.family for e in events if e.action == "del"} == {V6}  # IPv4 went silently


@captured
def test_captures_joined_in_one_datagram_parse_the_same():
    datagrams = [d for p in sorted(VECTORS.glob("*.hex")) for d in vector(p.stem)]
    assert parse_messages(b"".join(datagrams)) == (events_of(datagrams), 0)


# -- hand-built messages -------------------------------------------------------------------

HAND_BUILT = [
    (link_msg(7, "wlan0"), NetEvent("link", "new", 7, 0, ifname="wlan0")),
    (link_msg(7, None, RTM_DELLINK), NetEvent("link", "del", 7, 0)),
    (addr_msg(7, "10.1.2.3"), NetEvent("addr", "new", 7, V4, "10.1.2.3")),
    (addr_msg(7, "10.1.2.3", kind=RTM_DELADDR), NetEvent("addr", "del", 7, V4, "10.1.2.3")),
    (addr_msg(7, "10.0.0.1", 32, peer="10.0.0.2"), NetEvent("addr", "new", 7, V4, "10.0.0.1")),
    (addr_msg(7, "2001:db8::7", 64), NetEvent("addr", "new", 7, V6, "2001:db8::7")),
    (
        route_msg(V4, None, 0, 7, "10.1.2.1"),
        NetEvent("route", "new", 7, V4, "0.0.0.0/0", gateway="10.1.2.1", table=254),
    ),
    (
        route_msg(V6, "2001:db8::", 32, 7, kind=RTM_DELROUTE),
        NetEvent("route", "del", 7, V6, "2001:db8::/32", table=254),
    ),
    (  # a table number above 255 is only in RTA_TABLE
        route_msg(V4, "10.9.0.0", 16, 7, table=1000),
        NetEvent("route", "new", 7, V4, "10.9.0.0/16", table=1000),
    ),
    (  # no RTA_OIF (a blackhole or multipath route): interface 0
        route_msg(V4, "10.8.0.0", 16),
        NetEvent("route", "new", 0, V4, "10.8.0.0/16", table=254),
    ),
    (nlmsg(NLMSG_OVERRUN, b""), OVERRUN),
]


@pytest.mark.parametrize("data,event", HAND_BUILT)
def test_hand_built_message(data: bytes, event: NetEvent):
    assert parse_messages(data) == ([event], 0)


def test_hand_built_messages_in_one_datagram():
    data = b"".join(d for d, _ in HAND_BUILT)
    assert parse_messages(data) == ([e for _, e in HAND_BUILT], 0)


def test_replies_and_unknown_types_are_ignored_not_bad():
    quiet = [
        nlmsg(NLMSG_DONE, struct.pack("=i", 0)),
        nlmsg(NLMSG_NOOP, b""),
        nlmsg(NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + bytes(16)),
        nlmsg(68, bytes(20)),  # RTM_NEWNEIGH: a group we did not join
    ]
    assert parse_messages(b"".join(quiet) + link_msg(2)) == (
        [NetEvent("link", "new", 2, 0, ifname="eth0")],
        0,
    )


def test_the_reader_s_overrun_message_is_an_overrun_event():
    assert parse_messages(OVERRUN_MESSAGE) == ([OVERRUN], 0)


def test_attribute_flags_bits_are_masked():
    body = struct.pack("=BBBBBBBBI", V4, 8, 0, 0, 254, 4, 0, 1, 0)
    body += rtattr(1 | 0x4000, bytes([10, 0, 0, 0])) + rtattr(RTA_OIF, struct.pack("=I", 3))
    assert parse_messages(nlmsg(24, body))[0] == [
        NetEvent("route", "new", 3, V4, "10.0.0.0/8", table=254)
    ]


# -- malformed input: skipped, counted, never raised -------------------------------------

GOOD = link_msg(2, "eth1")
GOOD_EVENT = NetEvent("link", "new", 2, 0, ifname="eth1")


@pytest.mark.parametrize(
    "bad_message",
    [
        nlmsg(RTM_NEWLINK, bytes(15)),  # ifinfomsg cut short
        nlmsg(RTM_NEWADDR, bytes(7)),  # ifaddrmsg cut short
        nlmsg(24, bytes(11)),  # rtmsg cut short
        nlmsg(RTM_NEWADDR, struct.pack("=BBBBI", V4, 24, 0, 0, 2) + rtattr(IFA_ADDRESS, b"\1\2")),
        nlmsg(RTM_NEWADDR, struct.pack("=BBBBI", 99, 24, 0, 0, 2) + rtattr(IFA_ADDRESS, bytes(4))),
        nlmsg(24, struct.pack("=BBBBBBBBI", V4, 0, 0, 0, 254, 0, 0, 1, 0) + rtattr(RTA_OIF, b"\1")),
        nlmsg(RTM_NEWLINK, bytes(16) + struct.pack("=HH", 40, IFA_ADDRESS) + bytes(4)),
        nlmsg(RTM_NEWLINK, bytes(16) + struct.pack("=HH", 2, IFA_ADDRESS)),
    ],
)
def test_a_malformed_message_is_skipped_and_the_next_still_parses(bad_message: bytes):
    assert parse_messages(bad_message + GOOD) == ([GOOD_EVENT], 1)


@pytest.mark.parametrize("length", [0, 15, 10_000])
def test_an_impossible_length_ends_the_datagram(length: int):
    broken = struct.pack("=IHHII", length, RTM_NEWLINK, 0, 0, 0) + bytes(16)
    assert parse_messages(GOOD + broken + GOOD) == ([GOOD_EVENT], 1)


def test_every_truncation_of_a_datagram_yields_a_prefix_of_its_events():
    messages = [d for d, _ in HAND_BUILT]
    data = b"".join(messages)
    ends = {sum(map(len, messages[: i + 1])) for i in range(len(messages))}
    full, _ = parse_messages(data)
    for cut in range(len(data) + 1):
        events, bad = parse_messages(data[:cut])
        assert events == full[: len(events)]
        assert bad == (0 if cut in ends or cut == 0 else 1), cut


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_raise(data: bytes):
    events, bad = parse_messages(data)
    assert bad >= 0 and len(events) + bad <= len(data) // 16 + 1


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_mutated_real_datagrams_never_raise(data):
    base = b"".join(d for d, _ in HAND_BUILT)
    blob = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    events, bad = parse_messages(bytes(blob[:cut]) + data.draw(st.binary(max_size=40)))
    assert all(isinstance(e, NetEvent) for e in events) and bad >= 0


# -- the socket ---------------------------------------------------------------------------


class _Sock:
    """Stands in for the kernel's socket: recv answers from a script."""

    def __init__(self, script: list) -> None:
        self.script = script

    def setblocking(self, flag: bool) -> None:
        pass

    def recv(self, size: int) -> bytes:
        step = self.script.pop(0) if self.script else BlockingIOError()
        if isinstance(step, BaseException):
            raise step
        return step


def test_enobufs_is_read_as_an_overrun_and_reading_goes_on():
    script = [GOOD, OSError(errno.ENOBUFS, "No buffer space"), GOOD, BlockingIOError()]
    nl = NetlinkSocket(_Sock(script))  # type: ignore[arg-type]
    batch = nl._drain(64)
    assert batch == [GOOD, OVERRUN_MESSAGE, GOOD] and nl.overruns == 1


def test_other_recv_errors_are_raised():
    nl = NetlinkSocket(_Sock([OSError(errno.EBADF, "bad fd")]))  # type: ignore[arg-type]
    with pytest.raises(OSError):
        nl._drain(64)


def test_the_socket_opens_and_subscribes():
    """Subscribing changes nothing on the host: it only listens."""
    with NetlinkSocket.open().sock as sock:
        assert sock.getsockname()[1] == WATCH_GROUPS
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0
