"""A DHCP server for exactly one client, the adapter's general node (sans-IO).

RFC 2131 / RFC 2132. The adapter's Ethernet stages hand `DhcpServer.handle()` the
BOOTP payload of a UDP datagram (client port 68 -> server port 67) together with
`now` (seconds, any monotonic origin) and wrap the returned `DhcpReply` into
UDP/IPv4/Ethernet themselves (source server_ip:67, destination dst_ip:68 and
dst_mac). No sockets, no clocks.

Rules:
- There is one address to give: the VIP set with `set_address()`. The first client
  (keyed on chaddr) becomes `client_mac`; while it is bound, every other MAC is
  ignored. An unbound client (never acknowledged, released, declined, NAKed or
  expired) may be replaced by the next MAC that asks.
- Replies copy xid, flags, giaddr and chaddr; hops and secs are 0; siaddr is 0
  because there is no boot (TFTP) server behind the adapter.
- Reply addressing follows RFC 2131 4.1 for a server without relay agents: NAK
  broadcast; ciaddr set -> unicast to ciaddr and chaddr; broadcast flag -> broadcast;
  otherwise unicast to yiaddr and chaddr (the caller must not ARP for it).
- Relay agents are not supported: giaddr is copied but not used for addressing.
- A message whose chaddr is not the frame's source MAC (when the caller gives it) speaks
  for another device: ignored, with a `Spoofed` event.
- Malformed input raises CodecError and nothing else; well-formed messages that
  are not for us produce None and an `Ignored` event.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from .buffer import CodecError
from .dhcp_codec import (
    ACK,
    BOOTREPLY,
    BOOTREQUEST,
    BROADCAST_IP,
    BROADCAST_MAC,
    DECLINE,
    DISCOVER,
    INFINITE_LEASE,
    INFORM,
    NAK,
    OFFER,
    OPT_BROADCAST,
    OPT_CLIENT_ID,
    OPT_DNS,
    OPT_DOMAIN,
    OPT_LEASE_TIME,
    OPT_MTU,
    OPT_ROUTER,
    OPT_SERVER_ID,
    OPT_SUBNET_MASK,
    OPT_T1,
    OPT_T2,
    RELEASE,
    REQUEST,
    TYPE_NAMES,
    ZERO_IP,
    DhcpMessage,
    build_dhcp,
    parse_dhcp,
)

# --- server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DhcpConfig:
    """What the adapter tells its general node through DHCP."""

    server_ip: str
    """The adapter's address on the GN link; also the router and the DNS server."""
    prefix_len: int
    """Netmask of the VIP pool, e.g. 16."""
    lease_time: int = 3600
    """Lease in seconds; 0xFFFFFFFF means infinite (no T1/T2 then)."""
    mtu: int = 1400
    """Interface MTU for the GN (option 26) that fits the tunnel."""
    domain: str | None = None
    """Domain name (option 15), sent when set."""

    def __post_init__(self) -> None:
        ipaddress.IPv4Address(self.server_ip)  # ValueError if not IPv4
        if not 0 <= self.prefix_len <= 32:
            raise ValueError(f"prefix_len {self.prefix_len} not in 0..32")
        if not 1 <= self.lease_time <= INFINITE_LEASE:
            raise ValueError(f"lease_time {self.lease_time} out of range")
        if not 68 <= self.mtu <= 0xFFFF:
            raise ValueError(f"mtu {self.mtu} not in 68..65535")
        if self.domain is not None and not 0 < len(self.domain.encode("ascii")) <= 255:
            raise ValueError("domain must be 1..255 ASCII characters")


@dataclass(frozen=True)
class DhcpReply:
    """A message for the Ethernet stage to send from server_ip:67 to dst_ip:68."""

    payload: bytes
    """The BOOTP message."""
    dst_mac: bytes
    """Ethernet destination: the client's chaddr or ff:ff:ff:ff:ff:ff."""
    dst_ip: str
    """IPv4 destination: 255.255.255.255, ciaddr or yiaddr (RFC 2131 4.1)."""
    kind: str
    """One of "OFFER", "ACK", "NAK"."""


@dataclass(frozen=True)
class Leased:
    """The server acknowledged a lease (DHCPACK to a REQUEST)."""

    mac: bytes
    """The client's MAC (chaddr)."""
    ip: str
    """The leased address (the VIP)."""
    lease_time: int
    """Lease length in seconds."""
    renewal: bool
    """True for a RENEWING/REBINDING request (ciaddr set), False for SELECTING/INIT-REBOOT."""


@dataclass(frozen=True)
class Released:
    """The client gave its lease back (DHCPRELEASE)."""

    mac: bytes
    """The client's MAC."""
    ip: str
    """The released address (ciaddr of the RELEASE)."""


@dataclass(frozen=True)
class Declined:
    """The client found the address in use on the link (DHCPDECLINE)."""

    mac: bytes
    """The client's MAC."""
    ip: str
    """The declined address (option 50, or ciaddr when absent)."""


@dataclass(frozen=True)
class Informed:
    """A client with a configured address asked for parameters only (DHCPINFORM)."""

    mac: bytes
    """The client's MAC."""
    ip: str
    """The client's own address (ciaddr)."""


@dataclass(frozen=True)
class Spoofed:
    """A message whose chaddr is not the MAC that sent the frame: ignored."""

    chaddr: bytes
    src_mac: bytes


@dataclass(frozen=True)
class Ignored:
    """A well-formed message got no reply."""

    reason: str
    """Why, for the log: "other client", "no address yet", "other server", ..."""


Event = Leased | Released | Declined | Informed | Spoofed | Ignored


def subnet_mask(prefix_len: int) -> bytes:
    return ipaddress.IPv4Network(f"0.0.0.0/{prefix_len}").netmask.packed


def _packed(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def reply_destination(request: DhcpMessage, kind: int, yiaddr: str) -> tuple[bytes, str]:
    """(dst_mac, dst_ip) for a reply, RFC 2131 4.1 without relay agents."""
    if kind == NAK:
        return BROADCAST_MAC, BROADCAST_IP
    if request.ciaddr != ZERO_IP:
        return request.chaddr, request.ciaddr
    if request.broadcast or yiaddr == ZERO_IP:
        return BROADCAST_MAC, BROADCAST_IP
    return request.chaddr, yiaddr


class DhcpServer:
    """The single-client DHCP server; see the module docstring for the rules."""

    def __init__(self, config: DhcpConfig) -> None:
        self.config = config
        self.client_mac: bytes | None = None
        self.client_id: bytes | None = None  # option 61 of client_mac, recorded only
        self._vip: str | None = None
        self._lease_end: float | None = None  # None: no lease (never, released, declined)
        self._clock = float("-inf")  # latest `now` seen
        self._events: list[Event] = []
        self._handlers: dict[int, Callable[[DhcpMessage, float], DhcpReply | None]] = {
            DISCOVER: self._on_discover,
            REQUEST: self._on_request,
            DECLINE: self._on_decline,
            RELEASE: self._on_release,
            INFORM: self._on_inform,
        }

    # --- public API -------------------------------------------------------------------

    @property
    def address(self) -> str | None:
        """The VIP handed out, or None before the adapter is registered."""
        return self._vip

    @property
    def bound(self) -> bool:
        """The GN holds a valid lease, as of the latest `now` given to this server."""
        return self._lease_end is not None and self._clock <= self._lease_end

    @property
    def lease_end(self) -> float | None:
        """When the lease given ends (`now`'s clock; inf: infinite), None without one."""
        return self._lease_end

    def set_address(self, vip: str | None) -> None:
        """The VIP to hand out; a lease on another address ends at the GN's next request."""
        self._vip = None if vip is None else str(ipaddress.IPv4Address(vip))

    def lease_expired(self, now: float) -> bool:
        """True once a lease was given and `now` is past its end (until the next lease)."""
        self._observe(now)
        return self._lease_end is not None and now > self._lease_end

    def events(self) -> list[Event]:
        """Drain the events produced since the last call."""
        events, self._events = self._events, []
        return events

    def handle(self, payload: bytes, now: float, src_mac: bytes | None = None) -> DhcpReply | None:
        """One message from the client port; CodecError if malformed. `src_mac` is the
        frame's source: a message whose chaddr differs speaks for another device, so it
        is ignored (it could release or take that device's lease, issue 10)."""
        self._observe(now)
        msg = parse_dhcp(payload)
        if msg.op != BOOTREQUEST:
            raise CodecError("BOOTREPLY sent to the server port")
        if src_mac is not None and msg.chaddr != src_mac:
            self._events.append(Spoofed(msg.chaddr, src_mac))
            return None
        handler = self._handlers.get(msg.message_type)
        if handler is None:
            return self._ignore(f"unsupported message type {msg.message_type}")
        if not self._adopt(msg):
            return self._ignore("other client")
        return handler(msg, now)

    # --- per message type -------------------------------------------------------------

    def _on_discover(self, msg: DhcpMessage, now: float) -> DhcpReply | None:
        if self._vip is None:
            return self._ignore("no address yet")
        return self._reply(msg, OFFER, self._vip)

    def _on_request(self, msg: DhcpMessage, now: float) -> DhcpReply | None:
        vip = self._vip
        if vip is None:
            return self._ignore("no address yet")
        server_id, requested = msg.server_id, msg.requested_ip
        if server_id is not None:  # SELECTING
            if server_id != self.config.server_ip:
                return self._ignore("other server")
            wanted = requested if requested is not None else msg.ciaddr
            return self._ack_or_nak(msg, vip, wanted, now, renewal=False)
        if requested is not None:  # INIT-REBOOT
            return self._ack_or_nak(msg, vip, requested, now, renewal=False)
        if msg.ciaddr != ZERO_IP:  # RENEWING (unicast) or REBINDING (broadcast)
            return self._ack_or_nak(msg, vip, msg.ciaddr, now, renewal=True)
        return self._ignore("request names no address")

    def _on_decline(self, msg: DhcpMessage, now: float) -> None:
        if not self._for_us(msg):
            return self._ignore("other server")
        ip = msg.requested_ip or msg.ciaddr
        self._unbind()
        self._events.append(Declined(msg.chaddr, ip))
        return None

    def _on_release(self, msg: DhcpMessage, now: float) -> None:
        if not self._for_us(msg):
            return self._ignore("other server")
        if self._lease_end is None:
            return self._ignore("no lease to release")
        self._unbind()
        self._events.append(Released(msg.chaddr, msg.ciaddr))
        return None

    def _on_inform(self, msg: DhcpMessage, now: float) -> DhcpReply:
        self._events.append(Informed(msg.chaddr, msg.ciaddr))
        return self._reply(msg, ACK, ZERO_IP, lease=False)

    # --- helpers ----------------------------------------------------------------------

    def _observe(self, now: float) -> None:
        self._clock = max(self._clock, now)

    def _ignore(self, reason: str) -> None:
        self._events.append(Ignored(reason))
        return None

    def _adopt(self, msg: DhcpMessage) -> bool:
        """Make msg's sender our client unless another client is bound."""
        if msg.chaddr != self.client_mac:
            if self.client_mac is not None and self.bound:
                return False
            self.client_mac, self.client_id = msg.chaddr, None
            self._unbind()
        client_id = msg.options.get(OPT_CLIENT_ID)
        if client_id is not None:
            self.client_id = client_id
        return True

    def _for_us(self, msg: DhcpMessage) -> bool:
        server_id = msg.server_id
        return server_id is None or server_id == self.config.server_ip

    def _unbind(self) -> None:
        self._lease_end = None

    def _ack_or_nak(
        self, msg: DhcpMessage, vip: str, wanted: str, now: float, *, renewal: bool
    ) -> DhcpReply:
        if wanted != vip:
            self._unbind()
            return self._reply(msg, NAK, ZERO_IP)
        lease_time = self.config.lease_time
        self._lease_end = float("inf") if lease_time == INFINITE_LEASE else now + lease_time
        self._events.append(Leased(msg.chaddr, vip, lease_time, renewal))
        return self._reply(msg, ACK, vip)

    def _reply(self, msg: DhcpMessage, kind: int, yiaddr: str, *, lease: bool = True) -> DhcpReply:
        if kind == NAK:
            options = [(OPT_SERVER_ID, _packed(self.config.server_ip))]
        else:
            own = yiaddr if yiaddr != ZERO_IP else msg.ciaddr
            options = self._reply_options(msg.param_request_list, own, lease)
        payload = build_dhcp(
            op=BOOTREPLY,
            message_type=kind,
            xid=msg.xid,
            chaddr=msg.chaddr,
            flags=msg.flags,
            giaddr=msg.giaddr,
            ciaddr=msg.ciaddr if kind == ACK else ZERO_IP,
            yiaddr=yiaddr,
            options=options,
        )
        dst_mac, dst_ip = reply_destination(msg, kind, yiaddr)
        return DhcpReply(payload, dst_mac, dst_ip, TYPE_NAMES[kind])

    def _reply_options(self, requested: bytes, own: str, lease: bool) -> list[tuple[int, bytes]]:
        """53 (added by build_dhcp), 54, lease times, then parameters in the client's order."""
        config = self.config
        server = _packed(config.server_ip)
        head = [(OPT_SERVER_ID, server)]
        if lease:
            head.append((OPT_LEASE_TIME, config.lease_time.to_bytes(4, "big")))
            if config.lease_time != INFINITE_LEASE:
                head.append((OPT_T1, (config.lease_time // 2).to_bytes(4, "big")))
                head.append((OPT_T2, (config.lease_time * 7 // 8).to_bytes(4, "big")))
        params = {
            OPT_SUBNET_MASK: subnet_mask(config.prefix_len),
            OPT_ROUTER: server,
            OPT_DNS: server,
            OPT_MTU: config.mtu.to_bytes(2, "big"),
        }
        if config.domain is not None:
            params[OPT_DOMAIN] = config.domain.encode("ascii")
        always = list(params)
        if own != ZERO_IP:  # only when asked for: the client's subnet broadcast address
            net = ipaddress.IPv4Network(f"{own}/{config.prefix_len}", strict=False)
            params[OPT_BROADCAST] = net.broadcast_address.packed
        order = [code for code in dict.fromkeys(requested) if code in params]
        order += [code for code in always if code not in order]
        return head + [(code, params[code]) for code in order]
