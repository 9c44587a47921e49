"""ndp: Neighbor Discovery read and written, checked four ways: byte vectors (the builders'
decoded by tcpdump -vv, "[icmp6 sum ok]"), frames the Linux kernel sent (tests/vectors/ndp,
made by capture.sh there), a table of the RFC 4861 validation rules each broken once, and
property tests (only CodecError, whatever the input). The tests marked netns hand frames
built here to a real kernel in a namespace and check what it made of them: a SLAAC address
and a default route from build_ra, a neighbour entry from build_na, a defended address.
Run those under `flock /tmp/ntma-netns.lock` (the machine is shared)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntma.proto.buffer import CodecError
from ntma.proto.ether import eth_header
from ntma.proto.ether6 import build_ipv6
from ntma.proto.ndp import (
    ALL_NODES,
    ALL_ROUTERS,
    NA_OVERRIDE,
    NA_ROUTER,
    NA_SOLICITED,
    ND_NA,
    ND_NS,
    ND_RA,
    ND_RS,
    RA_MANAGED,
    RA_OTHER,
    UNSPECIFIED,
    NdMessage,
    build_na,
    build_ra,
    interface_id,
    link_local,
    multicast_mac,
    parse_nd,
    solicited_node,
)
from tests.test_ether6 import ref_checksum

VECTORS = Path(__file__).parent / "vectors" / "ndp"
ADAPTER_MAC = bytes.fromhex("020000000001")  # the `a` end of capture.sh, and ours here
GN_MAC = bytes.fromhex("02005e10000b")  # the kernel's end (`b`)


def ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def vector(name: str) -> bytes:
    """A whole captured Ethernet frame."""
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().replace("\n", ""))


def nd_packet(src: bytes, dst: bytes, body: bytes, hop_limit: int = 255, checksum=True) -> bytes:
    """An IPv6 packet carrying ND message body, its checksum set by the reference sum."""
    if checksum:
        zeroed = body[:2] + b"\0\0" + body[4:]
        body = body[:2] + ref_checksum(src, dst, 58, zeroed).to_bytes(2, "big") + body[4:]
    return build_ipv6(src, dst, 58, body, hop_limit=hop_limit)


def lla(kind: int, mac: bytes) -> bytes:
    return bytes([kind, 1]) + mac


def ns_body(target: bytes, options: bytes = b"") -> bytes:
    return struct.pack("!BBH4x16s", ND_NS, 0, 0, target) + options


def ns_frame(src_mac: bytes, src: bytes, target: bytes) -> bytes:
    """An NS for target as a whole frame: to its solicited-node group, with our SLLA unless
    src is the unspecified address (DAD)."""
    options = b"" if src == UNSPECIFIED else lla(1, src_mac)
    dst = solicited_node(target)
    packet = nd_packet(src, dst, ns_body(target, options))
    return eth_header(multicast_mac(dst), src_mac, 0x86DD) + packet


def ra_options(packet: bytes) -> list[tuple[int, bytes]]:
    """(type, data after type and length) of each option of an RA: a walk of its own."""
    out, pos = [], 40 + 16
    while pos < len(packet):
        size = packet[pos + 1] * 8
        out.append((packet[pos], packet[pos + 2 : pos + size]))
        pos += size
    return out


# --- addresses -----------------------------------------------------------------------------


def test_constants():
    assert (ND_RS, ND_RA, ND_NS, ND_NA) == (133, 134, 135, 136)
    assert (ip6("ff02::1"), ip6("ff02::2"), ip6("::")) == (ALL_NODES, ALL_ROUTERS, UNSPECIFIED)


def test_link_local_is_the_modified_eui64():
    assert link_local(bytes.fromhex("001122334455")) == ip6("fe80::211:22ff:fe33:4455")
    assert link_local(ADAPTER_MAC) == ip6("fe80::ff:fe00:1")  # the U/L bit flips back to 0
    assert interface_id(GN_MAC) == bytes.fromhex("00005efffe10000b")
    # The kernel's own: its RS came from the address it made from its MAC.
    assert link_local(GN_MAC) == parse_nd(vector("linux_rs")[14:]).src


def test_solicited_node_and_multicast_mac():
    assert solicited_node(ip6("fd00:99::1234:5678")) == ip6("ff02::1:ff34:5678")
    assert multicast_mac(ip6("ff02::1:ff34:5678")) == bytes.fromhex("3333ff345678")
    assert multicast_mac(ALL_NODES) == bytes.fromhex("333300000001")
    dad = vector("linux_ns_dad")  # the kernel's DAD NS went to these, MAC and address
    assert dad[24 + 14 : 40 + 14] == solicited_node(link_local(GN_MAC))
    assert dad[:6] == multicast_mac(solicited_node(link_local(GN_MAC)))


# --- what the Linux kernel sends (captured by capture.sh) ----------------------------------


def test_captured_router_solicitation():
    frame = vector("linux_rs")
    assert parse_nd(frame[14:]) == NdMessage(
        ND_RS, link_local(GN_MAC), ALL_ROUTERS, None, GN_MAC, 0
    )
    assert frame[:6] == multicast_mac(ALL_ROUTERS)


def test_captured_dad_solicitation_has_a_nonce_and_no_source_lladdr():
    frame = vector("linux_ns_dad")
    target = link_local(GN_MAC)
    assert parse_nd(frame[14:]) == NdMessage(
        ND_NS, UNSPECIFIED, solicited_node(target), target, None, 0
    )
    assert frame[14 + 40 + 24] == 14  # the enhanced-DAD Nonce option (RFC 7527): ignored


def test_captured_resolution_solicitation_comes_from_the_pinging_address():
    frame = vector("linux_ns_resolve")
    target = ip6("fd00:99::99")
    assert parse_nd(frame[14:]) == NdMessage(
        ND_NS, ip6("fd00:99::b"), solicited_node(target), target, GN_MAC, 0
    )


def test_captured_neighbor_advertisement():
    frame = vector("linux_na")
    me = ip6("fd00:99::a")
    assert parse_nd(frame[14:]) == NdMessage(
        ND_NA, me, ip6("fd00:99::b"), me, ADAPTER_MAC, NA_SOLICITED | NA_OVERRIDE
    )
    assert frame[:6] == GN_MAC


def test_captured_frames_with_ethernet_padding_still_parse():
    for name in ("linux_rs", "linux_ns_dad", "linux_ns_resolve", "linux_na"):
        packet = vector(name)[14:]
        assert parse_nd(packet + bytes(18)) == parse_nd(packet)


# --- the builders --------------------------------------------------------------------------

# tcpdump 4.99 -vv: "fe80::ff:fe00:1 > ff02::1: [icmp6 sum ok] ICMP6, router advertisement,
# length 136; hop limit 64, Flags [other stateful], router lifetime 1800s; source
# link-address 02:00:00:00:00:01; mtu 1400; prefix info fd00:99::/64, Flags [onlink, auto],
# valid time 86400s, pref. time 14400s; prefix info fd00:98::/48, Flags [onlink] (same
# times); rdnss lifetime 600s, addr: fd00:99::53 addr: fd00:99::54"
RA_VECTOR = (
    "33330000000102000000000186dd6000000000883afffe80000000000000000000fffe000001ff02000000"
    "000000000000000000000186008abd40400708000000000000000001010200000000010501000000000578"
    "030440c0000151800000384000000000fd00009900000000000000000000000003043080000151800000"
    "384000000000fd0000980000000000000000000000001905000000000258fd00009900000000000000000"
    "0000053fd000099000000000000000000000054"
)
# "fd00:99::1 > fd00:99::b: [icmp6 sum ok] ICMP6, neighbor advertisement, length 32, tgt is
# fd00:99::1, Flags [router, solicited, override]; destination link-address 02:00:00:00:00:01"
NA_VECTOR = (
    "02005e10000b02000000000186dd6000000000203afffd000099000000000000000000000001fd0000990000"
    "0000000000000000000b88009ac7e0000000fd0000990000000000000000000000010201020000000001"
)


def _ra(**kw) -> bytes:
    args = {"prefix": ip6("fd00:99::"), "router_lifetime": 1800, "mtu": 1400}
    return build_ra(ADAPTER_MAC, multicast_mac(ALL_NODES), ALL_NODES, **(args | kw))


def test_build_ra_vector():
    frame = _ra(
        on_link=((ip6("fd00:98::"), 48),),
        rdnss=(ip6("fd00:99::53"), ip6("fd00:99::54")),
        other=True,
    )
    assert frame.hex() == RA_VECTOR
    assert parse_nd(frame[14:]) == NdMessage(
        ND_RA, link_local(ADAPTER_MAC), ALL_NODES, None, ADAPTER_MAC, RA_OTHER
    )


def test_build_na_vector():
    frame = build_na(
        ADAPTER_MAC, GN_MAC, ip6("fd00:99::b"), ip6("fd00:99::1"), solicited=True, router=True
    )
    assert frame.hex() == NA_VECTOR
    assert parse_nd(frame[14:]) == NdMessage(
        ND_NA,
        ip6("fd00:99::1"),
        ip6("fd00:99::b"),
        ip6("fd00:99::1"),
        ADAPTER_MAC,
        NA_ROUTER | NA_SOLICITED | NA_OVERRIDE,
    )


def test_build_na_for_dad_goes_to_all_nodes():
    target = ip6("fd00:99::77")
    frame = build_na(
        ADAPTER_MAC, multicast_mac(ALL_NODES), ALL_NODES, target, solicited=False, router=False
    )
    assert frame[:12] == multicast_mac(ALL_NODES) + ADAPTER_MAC and frame[14 + 7] == 255
    assert parse_nd(frame[14:]).flags == NA_OVERRIDE
    with pytest.raises(ValueError):
        build_na(
            ADAPTER_MAC, multicast_mac(ALL_NODES), ALL_NODES, target, solicited=True, router=False
        )


def test_build_ra_fields_and_options():
    frame = _ra(
        prefix=ip6("fd00:99::dead:beef"),  # host bits are cleared
        autonomous=False,
        managed=True,
        router_lifetime=0,
        mtu=1280,
        valid_lifetime=7200,
        preferred_lifetime=3600,
    )
    packet = frame[14:]
    assert frame[12:14] == b"\x86\xdd" and packet[7] == 255
    assert (
        packet[40:44] == b"\x86\0" + packet[42:44]
        and ref_checksum(packet[8:24], packet[24:40], 58, packet[40:]) == 0
    )
    assert packet[44:56] == bytes([64, RA_MANAGED, 0, 0]) + bytes(8)  # lifetime 0: no router
    assert ra_options(packet) == [
        (1, ADAPTER_MAC),
        (5, bytes(2) + (1280).to_bytes(4, "big")),
        (3, bytes([64, 0x80]) + struct.pack("!III", 7200, 3600, 0) + ip6("fd00:99::")),
    ]
    assert parse_nd(packet).flags == RA_MANAGED


@pytest.mark.parametrize(
    "bad",
    [
        {"mtu": 1279},
        {"router_lifetime": 65536},
        {"router_lifetime": -1},
        {"preferred_lifetime": 90000},
        {"prefix_len": 129},
        {"prefix": bytes(4)},
    ],
)
def test_build_ra_refuses_what_a_host_would_drop(bad):
    with pytest.raises(ValueError):
        _ra(**bad)


@given(
    prefix=st.binary(min_size=16, max_size=16),
    prefix_len=st.integers(0, 128),
    on_link=st.lists(
        st.tuples(st.binary(min_size=16, max_size=16), st.integers(0, 128)), max_size=3
    ),
    rdnss=st.lists(st.binary(min_size=16, max_size=16), max_size=4),
    lifetime=st.integers(0, 0xFFFF),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_build_ra_always_parses_and_walks(prefix, prefix_len, on_link, rdnss, lifetime, flags):
    managed, other, autonomous = flags
    frame = _ra(
        prefix=prefix,
        prefix_len=prefix_len,
        on_link=tuple(on_link),
        rdnss=tuple(rdnss),
        router_lifetime=lifetime,
        managed=managed,
        other=other,
        autonomous=autonomous,
    )
    msg = parse_nd(frame[14:])
    assert msg.flags == (RA_MANAGED if managed else 0) | (RA_OTHER if other else 0)
    options = ra_options(frame[14:])
    assert [kind for kind, _ in options] == [1, 5, 3] + [3] * len(on_link) + [25] * bool(rdnss)
    pios = options[2 : 3 + len(on_link)]
    for (_, data), (pfx, length) in zip(pios, [(prefix, prefix_len), *on_link], strict=True):
        net = ipaddress.IPv6Network((int.from_bytes(pfx, "big"), length), strict=False)
        assert data[0] == length and data[14:] == net.network_address.packed
    if rdnss:
        assert options[-1][1][6:] == b"".join(rdnss)


@given(
    target=st.binary(min_size=16, max_size=16).filter(lambda t: t[0] != 0xFF),
    dst=st.binary(min_size=16, max_size=16).filter(lambda t: t[0] != 0xFF),
    solicited=st.booleans(),
    router=st.booleans(),
    override=st.booleans(),
)
def test_build_na_round_trips(target, dst, solicited, router, override):
    frame = build_na(
        ADAPTER_MAC, GN_MAC, dst, target, solicited=solicited, router=router, override=override
    )
    flags = (NA_ROUTER * router) | (NA_SOLICITED * solicited) | (NA_OVERRIDE * override)
    assert parse_nd(frame[14:]) == NdMessage(ND_NA, target, dst, target, ADAPTER_MAC, flags)


# --- the validation rules, each broken once ------------------------------------------------

GN_LL = link_local(GN_MAC)
GN_GLOBAL = ip6("fd00:99::b")
TARGET = ip6("fd00:99::1")
RS = nd_packet(GN_LL, ALL_ROUTERS, bytes([ND_RS, 0, 0, 0]) + bytes(4) + lla(1, GN_MAC))
NS = nd_packet(GN_GLOBAL, solicited_node(TARGET), ns_body(TARGET, lla(1, GN_MAC)))
NA_BODY = struct.pack("!BBHB3x16s", ND_NA, 0, 0, NA_SOLICITED, TARGET) + lla(2, ADAPTER_MAC)
NA = nd_packet(TARGET, GN_GLOBAL, NA_BODY)
RA = _ra()[14:]


def _with(packet: bytes, at: int, value: bytes, checksum: bool = True) -> bytes:
    """packet with bytes at `at` replaced (checksum fixed unless told not to)."""
    out = packet[:at] + value + packet[at + len(value) :]
    return nd_packet(out[8:24], out[24:40], out[40:], out[7], checksum) if checksum else out


def _resized(packet: bytes, body: bytes) -> bytes:
    return nd_packet(packet[8:24], packet[24:40], body, packet[7])


# (packet, what is wrong with it, what parse_nd's CodecError says)
REFUSED = [
    (b"", "empty", "not an IPv6"),
    (RS[:47], "cut inside the RS", "payload length"),
    (_with(RS, 0, b"\x40", checksum=False), "version 4", "not an IPv6"),
    (RS[:-1], "payload length past the end", "payload length"),
    (_with(RS, 6, b"\x00", checksum=False), "hop-by-hop in front", "extension headers"),
    (_with(RS, 7, b"\xfe"), "hop limit 254: it was routed", "hop limit"),
    (_with(NS, 40 + 8, b"\x00", checksum=False), "bad checksum", "checksum"),
    (_with(NS, 40 + 1, b"\x01"), "code 1", "code"),
    (_with(NS, 40, b"\x80"), "an echo request", "type 128"),
    (_with(NS, 40, b"\x89"), "a redirect (not handled)", "type 137"),
    (_resized(NS, NS[40:60]), "NS shorter than 24", "too short"),
    (_resized(RA, RA[40:52]), "RA shorter than 16", "too short"),
    (_resized(RS, RS[40:44]), "RS shorter than 8", "too short"),
    (_resized(RS, RS[40:48] + b"\x01\x00" + bytes(6)), "option length 0", "length 0"),
    (_resized(RS, RS[40:48] + b"\x01\x02" + GN_MAC), "option past the end", "past the"),
    (_resized(RS, RS[40:] + b"\x0e"), "one byte after the options", "cut off"),
    (_resized(RS, RS[40:48] + b"\x01\x02" + GN_MAC + bytes(8)), "SLLA of 16 bytes", "Ethernet"),
    (_with(NS, 40 + 8, b"\xff"), "NS for a multicast target", "multicast NS/NA target"),
    (_with(NA, 40 + 8, b"\xff"), "NA for a multicast target", "multicast NS/NA target"),
    (_with(NA, 24, ALL_NODES), "solicited NA to all-nodes", "solicited NA"),
    (_with(NS, 8, ALL_NODES), "multicast source", "multicast source"),
    (_with(RA, 8, GN_GLOBAL), "RA from a global address", "link-local"),
    (_with(RA, 8, ip6("fec0::1")), "RA from a site-local address", "link-local"),
    (nd_packet(UNSPECIFIED, TARGET, ns_body(TARGET)), "DAD NS to a unicast address", "DAD"),
    (_with(NS, 8, UNSPECIFIED), "DAD NS with a source link-layer option", "unspecified"),
    (_with(RS, 8, UNSPECIFIED), "RS from :: with a source link-layer option", "unspecified"),
]


@pytest.mark.parametrize(("packet", "why", "says"), REFUSED, ids=[r[1] for r in REFUSED])
def test_parse_nd_refuses(packet, why, says):
    with pytest.raises(CodecError, match=says):
        parse_nd(packet)


def test_parse_nd_accepts_the_bases_and_the_allowed_variants():
    assert parse_nd(RS).lladdr == GN_MAC and parse_nd(NS).target == TARGET
    assert parse_nd(NA).flags == NA_SOLICITED and parse_nd(RA).type == ND_RA
    dad = _with(_resized(NS, NS[40:64]), 8, UNSPECIFIED)
    assert parse_nd(dad) == NdMessage(ND_NS, UNSPECIFIED, solicited_node(TARGET), TARGET, None, 0)
    assert parse_nd(_resized(RS, RS[40:48])).lladdr is None  # RS from :: without the option
    assert parse_nd(_with(_resized(RS, RS[40:48]), 8, UNSPECIFIED)).src == UNSPECIFIED
    twice = _resized(RS, RS[40:] + lla(1, ADAPTER_MAC))
    assert parse_nd(twice).lladdr == GN_MAC  # the first of two counts, as in Linux
    unknown = _resized(NS, NS[40:] + b"\x0e\x01" + bytes(6) + b"\xc8\x02" + bytes(14))
    assert parse_nd(unknown).lladdr == GN_MAC  # nonce and an unknown option: ignored
    tlla_in_ns = _resized(NS, NS[40:64] + lla(2, ADAPTER_MAC))
    assert parse_nd(tlla_in_ns).lladdr is None  # the other link-layer option: not ours
    reserved = _with(NA, 40 + 4, b"\x7f\xff\xff\xff")  # reserved bits set: ignored
    assert parse_nd(reserved).flags == NA_SOLICITED | NA_OVERRIDE
    unsolicited = _with(_with(NA, 40 + 4, b"\x20"), 24, ALL_NODES)
    assert parse_nd(unsolicited).flags == NA_OVERRIDE  # to all-nodes, as DAD answers go
    assert parse_nd(_with(RA, 8, ip6("febf::1"))).type == ND_RA  # fe80::/10 is link-local


SEEDS = [RS, NS, NA, RA] + [vector(n)[14:] for n in ("linux_rs", "linux_ns_dad", "linux_na")]


def _check(packet: bytes) -> None:
    """parse_nd raises CodecError or returns a message of the shape it says."""
    try:
        msg = parse_nd(packet)
    except CodecError:
        return
    assert msg.type in (ND_RS, ND_RA, ND_NS, ND_NA)
    assert len(msg.src) == len(msg.dst) == 16
    assert (msg.target is None) == (msg.type in (ND_RS, ND_RA))
    assert msg.lladdr is None or len(msg.lladdr) == 6


@given(st.binary(max_size=200))
def test_parse_nd_on_any_bytes_raises_only_codec_error(data):
    _check(data)
    _check(build_ipv6(GN_LL, ALL_NODES, 58, data, hop_limit=255))
    _check(nd_packet(GN_LL, ALL_NODES, data) if len(data) >= 4 else data)


@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 40),
    fix=st.booleans(),
)
def test_parse_nd_on_mutated_messages_raises_only_codec_error(seed, edits, cut, fix):
    packet = bytearray(seed)
    for at, value in edits:
        packet[at % len(packet)] = value
    packet = bytes(packet[: max(0, len(packet) - cut)])
    if fix and len(packet) >= 44:
        body = packet[40:]
        packet = packet[:40] + nd_packet(packet[8:24], packet[24:40], body)[40:]
    _check(packet)


# --- a real kernel on the other end (netns) ------------------------------------------------

AGENT = r"""
import json, select, socket, sys, time
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
sock.bind((sys.argv[1], 0))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if "send" in cmd:
        sock.send(bytes.fromhex(cmd["send"]))
        print(json.dumps({"sent": True}), flush=True)
        continue
    deadline, found = time.monotonic() + cmd["within"], None
    while found is None and select.select([sock], [], [], max(0, deadline - time.monotonic()))[0]:
        frame, (_, _, pkttype, _, _) = sock.recvfrom(65535)
        if pkttype == socket.PACKET_OUTGOING or len(frame) < 14 + 40 + 8 or frame[20] != 58:
            continue
        if frame[54] == cmd["type"] and cmd.get("target") in (None, frame[62:78].hex()):
            found = frame.hex()
    print(json.dumps({"frame": found}), flush=True)
"""


# Listens on rtnetlink's RTNLGRP_ND_USEROPT (20) in the kernel's namespace, where the kernel
# hands up RA options for daemons, RDNSS among them (RFC 8106 5.3.1): prints each datagram
# until one holds an RDNSS option (after nlmsghdr and nduseroptmsg, 16 bytes each).
ND_USEROPT = r"""
import select, socket, sys, time
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
sock.bind((0, 0))
sock.setsockopt(270, 1, 20)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_ND_USEROPT
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[1])
while select.select([sock], [], [], max(0, deadline - time.monotonic()))[0]:
    datagram = sock.recv(65535)
    print(datagram.hex(), flush=True)
    if datagram[32:33] == bytes([25]):
        break
"""


class Agent:
    """An AF_PACKET socket on our end of the veth, in the adapter's namespace: it sends the
    frames given and hands back (unparsed) the first ICMPv6 ND frame of a type received since
    it opened, so parse_nd is what is tested."""

    def __init__(self, ns: str, ifname: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", AGENT, ifname],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._ask(None) == {"ready": True}

    def _ask(self, cmd: dict | None) -> dict:
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line, "the packet agent died"
        return json.loads(line)

    def send(self, frame: bytes) -> None:
        assert self._ask({"send": frame.hex()}) == {"sent": True}

    def expect(self, nd_type: int, target: bytes | None = None, within: float = 5.0) -> bytes:
        got = self._ask({"type": nd_type, "target": target and target.hex(), "within": within})
        assert got["frame"] is not None, f"no ND type {nd_type} within {within} s"
        return bytes.fromhex(got["frame"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@dataclass
class Link:
    ours: str  # the adapter's namespace: IPv6 off on its end, so its kernel stays out of ND
    kernel: str  # the GN's namespace: a host, as a GN is
    agent: Agent

    def sh(self, *args: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.kernel, *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


@pytest.fixture
def link() -> Iterator[Link]:
    ours, kernel = f"ntmatest-nd-a-{os.getpid()}", f"ntmatest-nd-b-{os.getpid()}"
    agent = None
    try:
        run("ip", "netns", "add", ours)
        run("ip", "netns", "add", kernel)
        run(
            "ip",
            "-n",
            ours,
            "link",
            "add",
            "nd0",
            "address",
            ADAPTER_MAC.hex(":"),
            "type",
            "veth",
            "peer",
            "name",
            "nd1",
            "address",
            GN_MAC.hex(":"),
            "netns",
            kernel,
        )
        run("ip", "netns", "exec", ours, "sysctl", "-qw", "net.ipv6.conf.nd0.disable_ipv6=1")
        # Set, not assumed: a new namespace copies the root's values when
        # net.core.devconf_inherit_init_net says so, and a forwarding one ignores RAs.
        for sysctl in ("forwarding=0", "accept_ra=1", "autoconf=1"):
            run("ip", "netns", "exec", kernel, "sysctl", "-qw", f"net.ipv6.conf.nd1.{sysctl}")
        run("ip", "-n", ours, "link", "set", "nd0", "up")
        agent = Agent(ours, "nd0")
        run("ip", "-n", kernel, "link", "set", "nd1", "up")
        yield Link(ours, kernel, agent)
    finally:
        if agent is not None:
            agent.stop()
        subprocess.run(["ip", "netns", "del", ours], capture_output=True)
        subprocess.run(["ip", "netns", "del", kernel], capture_output=True)


def wait_for(what: str, probe: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not probe():
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        time.sleep(0.05)


@pytest.mark.netns
def test_kernel_does_slaac_from_build_ra_and_routes_by_its_lifetime(link):
    rs = parse_nd(link.agent.expect(ND_RS, within=10)[14:])  # the kernel asks first
    assert (rs.src, rs.dst, rs.lladdr) == (link_local(GN_MAC), ALL_ROUTERS, GN_MAC)
    slaac = str(ipaddress.IPv6Address(ip6("fd00:99::")[:8] + interface_id(GN_MAC)))

    def ra(lifetime: int) -> bytes:
        return _ra(router_lifetime=lifetime, rdnss=(ip6("fd00:99::53"),), mtu=1400)

    def address() -> str:
        return link.sh("ip", "-6", "addr", "show", "dev", "nd1", "scope", "global")

    def default() -> str:
        return link.sh("ip", "-6", "route", "show", "default")

    user_options = subprocess.Popen(  # what the kernel hands up for a resolver daemon
        ["ip", "netns", "exec", link.kernel, sys.executable, "-c", ND_USEROPT, "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert user_options.stdout.readline() == "ready\n"  # type: ignore[union-attr]
    link.agent.send(ra(0))
    wait_for("SLAAC address", lambda: f"{slaac}/64" in address() and "tentative" not in address())
    assert slaac == "fd00:99::5eff:fe10:b"
    handed_up = [bytes.fromhex(d) for d in user_options.communicate(timeout=10)[0].split()]
    assert {int.from_bytes(d[4:6], "little") for d in handed_up} == {68}  # RTM_NEWNDUSEROPT
    rdnss = bytes([25, 3, 0, 0]) + (600).to_bytes(4, "big") + ip6("fd00:99::53")
    assert handed_up[-1][32:56] == rdnss, [d.hex() for d in handed_up]
    print(f"handed up to user space: options {[d[32] for d in handed_up]}")
    assert default() == ""  # router lifetime 0: a prefix, but not a router
    assert link.sh("sysctl", "-n", "net.ipv6.conf.nd1.mtu").strip() == "1400"
    assert "fd00:99::/64" in link.sh("ip", "-6", "route", "show", "dev", "nd1")

    link.agent.send(ra(1800))
    wait_for("default route", lambda: "fe80::ff:fe00:1" in default())
    assert re.match(r"default via fe80::ff:fe00:1 dev nd1 proto ra ", default()), default()

    link.agent.send(ra(0))  # "no longer a router": the kernel drops the route at once
    wait_for("the default route to go", lambda: default() == "", within=3)
    assert f"{slaac}/64" in address()


@pytest.mark.netns
def test_kernel_answers_our_ns_with_an_na_parse_nd_accepts(link):
    me, gn = link_local(ADAPTER_MAC), ip6("fd00:99::b")
    link.sh("ip", "-6", "addr", "add", "fd00:99::b/64", "dev", "nd1", "nodad")
    link.agent.send(ns_frame(ADAPTER_MAC, me, gn))
    frame = link.agent.expect(ND_NA, target=gn)
    assert frame[:6] == ADAPTER_MAC  # to the MAC our option gave
    assert parse_nd(frame[14:]) == NdMessage(ND_NA, gn, me, gn, GN_MAC, NA_SOLICITED | NA_OVERRIDE)

    link.agent.send(ns_frame(ADAPTER_MAC, UNSPECIFIED, gn))  # our DAD probe: it defends
    frame = link.agent.expect(ND_NA, target=gn)
    assert frame[:6] == multicast_mac(ALL_NODES)
    assert parse_nd(frame[14:]) == NdMessage(ND_NA, gn, ALL_NODES, gn, GN_MAC, NA_OVERRIDE)


@pytest.mark.netns
def test_build_na_answers_the_kernels_ns_and_it_takes_our_mac(link):
    target = ip6("fd00:99::1")
    link.sh("ip", "-6", "addr", "add", "fd00:99::b/64", "dev", "nd1", "nodad")
    ping = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            link.kernel,
            "ping",
            "-6",
            "-n",
            "-c",
            "1",
            "-W",
            "3",
            "fd00:99::1",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        ns = parse_nd(link.agent.expect(ND_NS, target=target)[14:])
        assert (ns.src, ns.dst, ns.lladdr) == (ip6("fd00:99::b"), solicited_node(target), GN_MAC)
        link.agent.send(
            build_na(ADAPTER_MAC, ns.lladdr, ns.src, target, solicited=True, router=False)
        )

        def neigh() -> str:
            return link.sh("ip", "-6", "neigh", "show", "fd00:99::1", "dev", "nd1")

        wait_for("neighbour entry", lambda: "lladdr" in neigh(), within=3)
        assert re.match(r"fd00:99::1 lladdr 02:00:00:00:00:01 (REACHABLE|STALE|DELAY)", neigh())
    finally:
        ping.kill()
        ping.wait(5)


@pytest.mark.netns
def test_build_na_to_all_nodes_fails_the_kernels_dad(link):
    target = ip6("fd00:99::77")
    link.sh("ip", "-6", "addr", "add", "fd00:99::77/64", "dev", "nd1")  # with DAD
    dad = parse_nd(link.agent.expect(ND_NS, target=target)[14:])
    assert (dad.src, dad.lladdr) == (UNSPECIFIED, None)
    link.agent.send(
        build_na(
            ADAPTER_MAC, multicast_mac(ALL_NODES), ALL_NODES, target, solicited=False, router=False
        )
    )

    def address() -> str:
        return link.sh("ip", "-6", "addr", "show", "dev", "nd1", "to", "fd00:99::77")

    wait_for("dadfailed", lambda: "dadfailed" in address(), within=3)
