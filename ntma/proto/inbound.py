"""A device's inbound rule (sans-IO): which packets from NTM peers reach a device behind the
adapter (docs/protocol.md 5.1, issue 12).

Rules are written "tcp/80", "udp/5353", "tcp/8000-8100" or "icmp". No rule (None) means
open, as NTMobile's end-to-end model intends. With a rule list, a packet from a peer passes
when a rule names its protocol and destination port, or when it answers something the
device started:
- TCP: a segment without SYN, or a SYN-ACK (the handshake the device opened); only a
  connection *opened* from outside (SYN without ACK) needs a rule. Stateless, like
  `iptables -p tcp ! --syn`: a stray ACK reaches the device, whose stack answers RST.
- UDP: a reply to a flow the device sent (peer VIP and ports reversed), remembered for
  UDP_FLOW_IDLE_S in a table of at most UDP_FLOWS_MAX flows per device (oldest evicted).
- ICMP: echo replies and errors always; echo requests need "icmp" (ICMPv6 alike).
Anything else (another protocol, or an IPv6 packet with extension headers) needs no rule
only when the list is None. IPv4 and IPv6 alike; the flow key holds the peer's address.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17
_PROTOS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP}
UDP_FLOWS_MAX = 1024
UDP_FLOW_IDLE_S = 180.0
_TCP_SYN, _TCP_ACK = 0x02, 0x10
_ICMP_ECHO_REQUEST = 8
_ICMP6_ECHO_REQUEST = 128
_PROTO_ICMPV6 = 58


def _layout(packet: bytes | memoryview) -> tuple[int, int, slice, slice]:
    """(protocol, transport offset, source slice, destination slice); offset 0: unusable."""
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        proto = packet[6]
        return (PROTO_ICMP if proto == _PROTO_ICMPV6 else proto), 40, _SRC6, _DST6
    if len(packet) < 20:
        return 0, 0, _SRC4, _DST4
    return packet[9], (packet[0] & 0x0F) * 4, _SRC4, _DST4


_SRC4, _DST4, _SRC6, _DST6 = slice(12, 16), slice(16, 20), slice(8, 24), slice(24, 40)


@dataclass(frozen=True)
class InboundRule:
    proto: int
    low: int = 0
    high: int = 0xFFFF

    def matches(self, proto: int, port: int) -> bool:
        return proto == self.proto and self.low <= port <= self.high


def parse_rule(text: str) -> InboundRule:
    """ "tcp/80" -> InboundRule; ValueError with what is wrong."""
    proto_text, _, ports = text.strip().lower().partition("/")
    proto = _PROTOS.get(proto_text)
    if proto is None:
        raise ValueError(f"unknown protocol {proto_text!r} in {text!r} (tcp, udp or icmp)")
    if proto == PROTO_ICMP:
        if ports:
            raise ValueError(f"icmp takes no port: {text!r}")
        return InboundRule(proto)
    low_text, _, high_text = ports.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if high_text else low
    except ValueError:
        raise ValueError(f"no port in {text!r} (write tcp/80 or tcp/8000-8100)") from None
    if not 1 <= low <= high <= 0xFFFF:
        raise ValueError(f"port range out of 1..65535 in {text!r}")
    return InboundRule(proto, low, high)


class InboundFilter:
    """One device's rule list and the UDP flows it started."""

    def __init__(self, rules: tuple[InboundRule, ...]) -> None:
        self.rules = rules
        self._udp: OrderedDict[bytes, float] = OrderedDict()  # flow key -> last sent

    def note_outbound(self, packet: bytes | memoryview, now: float) -> None:
        """A packet the device sends to a peer: a UDP one opens its reply path."""
        proto, l4, _, dst = _layout(packet)
        if proto != PROTO_UDP or len(packet) < l4 + 4:
            return
        # key: peer VIP, device port, peer port (as a reply will carry them reversed)
        key = bytes(packet[dst]) + bytes(packet[l4 : l4 + 2]) + bytes(packet[l4 + 2 : l4 + 4])
        self._udp[key] = now
        self._udp.move_to_end(key)
        if len(self._udp) > UDP_FLOWS_MAX:
            self._udp.popitem(last=False)

    def allows(self, packet: bytes | memoryview, now: float) -> bool:
        """A packet from a peer to the device: may it pass?"""
        proto, l4, src, _ = _layout(packet)
        if l4 == 0:
            return False
        if proto == PROTO_ICMP:
            if len(packet) > l4 and packet[l4] not in (_ICMP_ECHO_REQUEST, _ICMP6_ECHO_REQUEST):
                return True  # echo replies and errors about the device's own packets
            return any(rule.proto == PROTO_ICMP for rule in self.rules)
        if proto not in (PROTO_TCP, PROTO_UDP) or len(packet) < l4 + 4:
            return False
        dport = (packet[l4 + 2] << 8) | packet[l4 + 3]
        if any(rule.matches(proto, dport) for rule in self.rules):
            return True
        if proto == PROTO_TCP:
            if len(packet) < l4 + 14:
                return False
            flags = packet[l4 + 13]
            return not flags & _TCP_SYN or bool(flags & _TCP_ACK)
        key = bytes(packet[src]) + bytes(packet[l4 + 2 : l4 + 4]) + bytes(packet[l4 : l4 + 2])
        seen = self._udp.get(key)
        if seen is None:
            return False
        if now - seen > UDP_FLOW_IDLE_S:
            del self._udp[key]
            return False
        return True
