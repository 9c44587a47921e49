"""Fuzz targets of the IPv6 codecs and the adapter's IPv6 on the GN link (issue 13): ND,
the ND responder, the DHCPv6 server. Registered on import, as codecs.py's."""

from __future__ import annotations

import contextlib

from ..proto import ndp
from ..proto.buffer import CodecError
from ..proto.dhcp6 import REPLY_MAX as DHCP6_REPLY_MAX
from ..proto.dhcp6 import Dhcp6Config, Dhcp6Server
from ..proto.dhcp6_codec import ADVERTISE, REPLY, parse_dhcp6
from ..proto.ether6 import pseudo_checksum
from ..proto.gnlink6 import answer_nd
from . import seeds, seeds6
from .codecs import _link  # the GN link with IPv6, as classify_frame's target has it
from .registry import check, target

# --- DHCPv6 ----------------------------------------------------------------------------------

_DHCP6_CONFIG = Dhcp6Config(seeds.ADAPTER_MAC, (bytes.fromhex("fd000099" + "00" * 11 + "01"),))


@target("dhcp6.handle", seeds6.dhcp6_payloads)
def fuzz_dhcp6_handle(data: bytes) -> None:
    """A bound server's receive path: a reply is an ADVERTISE/REPLY that parses, echoes the
    transaction id, carries our server id and is within REPLY_MAX."""
    server = Dhcp6Server(_DHCP6_CONFIG)
    server.set_address(seeds6.DHCP6_ADDRESS)
    server.handle(seeds6.dhcp6_request(), 0.0)
    reply = server.handle(data, 1.0)
    server.events()
    if reply is not None:
        check(len(reply) <= DHCP6_REPLY_MAX, "reply over REPLY_MAX")
        msg = parse_dhcp6(reply)
        check(msg.msg_type in (ADVERTISE, REPLY) and reply[1:4] == data[1:4], "bad reply")
        check(msg.server_id == server.duid, "reply without our server id")


# --- the GN link ----------------------------------------------------------------------------


@target("gnlink6.answer_nd", seeds6.ipv6_frames)
def fuzz_answer_nd(data: bytes) -> None:
    """Replies are NAs from our MAC, no larger than the frame answered; an RA only by timer.
    A fresh link each time: learning (an address per device) is part of what is fuzzed."""
    outcome = answer_nd(data, _link())
    for reply in outcome.replies:
        check(reply[6:12] == seeds.ADAPTER_MAC and len(reply) <= max(len(data), 78), "bad NA")
        check(ndp.parse_nd(reply[14:]).type == ndp.ND_NA, "not an NA")


# --- Neighbor Discovery --------------------------------------------------------------------


@target("ndp.parse_nd", seeds6.nd_packets)
def fuzz_parse_nd(data: bytes) -> None:
    """What parse_nd accepts is a whole ND packet (hop limit 255, checksum right) and reads
    as NdMessage says. Each input is also tried with its ICMPv6 checksum made right, so
    mutations reach the rules past the checksum."""
    end = 40 + ((data[4] << 8) | data[5]) if len(data) >= 40 else 0
    if 44 <= end <= len(data):
        body = data[40:42] + b"\0\0" + data[44:end]
        csum = pseudo_checksum(data[8:24], data[24:40], 58, body)
        with contextlib.suppress(CodecError):
            _check_nd(data[:42] + csum.to_bytes(2, "big") + data[44:])
    _check_nd(data)


def _check_nd(data: bytes) -> None:
    msg = ndp.parse_nd(data)
    check(msg.type in (ndp.ND_RS, ndp.ND_RA, ndp.ND_NS, ndp.ND_NA), "unknown type accepted")
    check(len(msg.src) == len(msg.dst) == 16 and data[7] == 255, "bad addresses or hop limit")
    check((msg.target is None) == (msg.type in (ndp.ND_RS, ndp.ND_RA)), "target wrong")
    check(msg.lladdr is None or len(msg.lladdr) == 6, "link-layer address not 6 bytes")
    end = 40 + ((data[4] << 8) | data[5])
    check(pseudo_checksum(msg.src, msg.dst, 58, data[40:end]) == 0, "bad checksum accepted")
