"""A DHCPv6 server for exactly one device behind the adapter (RFC 8415, sans-IO).

Devices configure their IPv6 address by SLAAC from the adapter's Router Advertisements;
this server is for the ones that also run a stateful client (`dhclient -6`): it hands out
the one address the adapter decided for the device (`set_address`) in an IA_NA, and the
DNS servers (option 23, RFC 3646), statelessly too (INFORMATION-REQUEST). The adapter's
Ethernet stage hands `Dhcp6Server.handle()` the UDP payload of a datagram from the
device's port 546 to port 547 (sent to ff02::1:2, or to the adapter's link-local address)
with `now` (seconds, any monotonic origin), and sends the returned payload back from its
link-local address port 547 to the datagram's source address port 546, Ethernet to the
device's MAC. No sockets, no clocks.

Rules:
- Server Identifier: DUID-LL (type 3) of the adapter's MAC. Every reply echoes the
  transaction id and the client's Client Identifier and carries ours.
- Validation, RFC 8415 16: SOLICIT, CONFIRM and REBIND carrying a Server Identifier are
  ignored; REQUEST, RENEW, RELEASE and DECLINE need ours; an INFORMATION-REQUEST may carry
  ours, and no IA. All but INFORMATION-REQUEST need a Client Identifier. Relay messages
  (no relays here), messages that servers send and unknown types are ignored.
- One client: the first DUID given the address is `client_duid`; while its lease is valid
  every other DUID is ignored (the adapter keys servers by MAC already), but in an
  INFORMATION-REQUEST, which touches no lease: `dhclient -6 -S` sends DUID-LL where the
  stateful dhclient of the same device sent DUID-LLT. A release, decline or expiry frees
  the server for the next DUID that asks.
- One address: the first IA_NA of a message gets it (an address asked for in it does not
  matter), with T1 = 0.5 and T2 = 0.8 of the preferred lifetime; further IA_NAs, IA_TAs
  and IA_PDs are answered inside the IA with NoAddrsAvail / NoPrefixAvail, so the client
  stops waiting for them. In RENEW and REBIND an address that is not ours comes back with
  lifetimes 0 (RFC 8415 18.3.4, 18.3.5) beside ours.
- SOLICIT with Rapid Commit gets a committed REPLY (the client can have no other address
  from us, and no other server serves this link); otherwise an ADVERTISE with Preference
  255, so the client requests at once instead of collecting advertisements for a second.
- No address set: SOLICIT gets an ADVERTISE with status NoAddrsAvail at the top and in
  each IA (RFC 8415 18.3.9 asks for one: the client logs why and keeps soliciting, and
  gets the address on a later try); REQUEST/RENEW/REBIND get their IAs with NoAddrsAvail.
- CONFIRM: Success when every address in it is ours, NotOnLink otherwise; one naming no
  address gets no reply (18.3.3). RELEASE and DECLINE: Success, NoBinding inside an IA
  that does not hold the client's leased address.
- Malformed input raises CodecError and nothing else; a well-formed message that gets no
  reply produces None and an `Ignored6` event.

Amplification: a reply is larger than the request that asked for it (a 34-byte SOLICIT
gets about 100 bytes), so it is bounded: replies go to one device's own link only (the
caller hands in only that device's frames and answers to its MAC), to one DUID once one
is bound, at most REPLY_BUDGET replies in a burst and 1 a second after (`refused` counts
the rest), and no reply is over REPLY_MAX bytes: at most MAX_IAS IAs are answered and
MAX_ZEROED addresses of each echoed with lifetimes 0; the caller may rate-limit more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .dhcp6_codec import (
    ADVERTISE,
    CONFIRM,
    DECLINE,
    DUID_MAX,
    INFINITY,
    INFORMATION_REQUEST,
    OPT_CLIENTID,
    OPT_DNS_SERVERS,
    OPT_IA_NA,
    OPT_IA_PD,
    OPT_IAADDR,
    OPT_PREFERENCE,
    OPT_RAPID_COMMIT,
    OPT_SERVERID,
    OPT_STATUS_CODE,
    REBIND,
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
    TYPE_NAMES,
    Dhcp6Message,
    Ia,
    build_dhcp6,
    duid_ll,
    ia_value,
    iaaddr_value,
    parse_dhcp6,
    status_value,
)
from .ether6 import ip6_text
from .gate import TokenBucket

MAX_IAS = 4  # IA options answered in one message; the rest get nothing
MAX_ZEROED = 4  # foreign addresses of one IA echoed with lifetimes 0 (RENEW/REBIND)
MAX_DNS = 8
REPLY_BUDGET = 10  # replies in a burst, refilled at one a second
REPLY_RATE = 1.0

_MESSAGES = {  # status messages for the user, kept short: they count toward REPLY_MAX
    STATUS_NO_ADDRS_AVAIL: "no address",
    STATUS_NO_PREFIX_AVAIL: "no prefix",
    STATUS_NO_BINDING: "no binding",
    STATUS_NOT_ON_LINK: "not on link",
    STATUS_SUCCESS: "",
}
_STATUS_MAX = 4 + 2 + max(len(m) for m in _MESSAGES.values())
_IAADDR_LEN = 4 + 24
#: The largest reply: header, the client's DUID, ours, rapid commit or preference, a
#: status, MAX_IAS IAs each with MAX_ZEROED + 1 addresses and a status, the DNS servers.
REPLY_MAX = (
    4
    + (4 + DUID_MAX)
    + (4 + 10)
    + (4 + 1)
    + _STATUS_MAX
    + MAX_IAS * (4 + 12 + (MAX_ZEROED + 1) * _IAADDR_LEN + _STATUS_MAX)
    + (4 + 16 * MAX_DNS)
)

# Per message type: the Client Identifier is required; the Server Identifier is
# "required" (and ours), "forbidden", or "optional" (ours if present). RFC 8415 16.
_RULES = {
    SOLICIT: (True, "forbidden"),
    REQUEST: (True, "required"),
    CONFIRM: (True, "forbidden"),
    RENEW: (True, "required"),
    REBIND: (True, "forbidden"),
    RELEASE: (True, "required"),
    DECLINE: (True, "required"),
    INFORMATION_REQUEST: (False, "optional"),
}


@dataclass(frozen=True)
class Dhcp6Config:
    """What the adapter tells one device through DHCPv6."""

    server_mac: bytes
    """The adapter's MAC on the device's link: the server DUID is DUID-LL of it."""
    dns: tuple[bytes, ...]
    """DNS servers (16 bytes each) for option 23: the adapter's address."""
    preferred_lifetime: int = 14400
    """Preferred lifetime of the address, seconds; T1 and T2 are 0.5 and 0.8 of it."""
    valid_lifetime: int = 86400
    """Valid lifetime of the address (the lease), seconds."""
    rapid_commit: bool = True
    """Answer a SOLICIT that asks for Rapid Commit with a committed REPLY."""

    def __post_init__(self) -> None:
        if len(self.server_mac) != 6:
            raise ValueError("server_mac must be 6 bytes")
        if len(self.dns) > MAX_DNS or any(len(a) != 16 for a in self.dns):
            raise ValueError(f"dns must be at most {MAX_DNS} addresses of 16 bytes")
        if not 1 <= self.preferred_lifetime <= self.valid_lifetime < INFINITY:
            raise ValueError("lifetimes must be 1 <= preferred <= valid < 0xFFFFFFFF")

    @property
    def t1(self) -> int:
        return self.preferred_lifetime // 2

    @property
    def t2(self) -> int:
        return self.preferred_lifetime * 4 // 5


@dataclass(frozen=True)
class Leased6:
    """The server gave the address in a REPLY (REQUEST, RENEW, REBIND, rapid SOLICIT)."""

    duid: bytes
    """The client's DUID."""
    iaid: int
    """The IA_NA that holds the address."""
    address: str
    """The address given."""
    valid: int
    """Its valid lifetime in seconds."""
    renewal: bool
    """True for RENEW/REBIND, False for REQUEST or a rapid-commit SOLICIT."""


@dataclass(frozen=True)
class Released6:
    """The client gave its leased address back (RELEASE)."""

    duid: bytes
    iaid: int
    address: str


@dataclass(frozen=True)
class Declined6:
    """The client found the address in use on the link (DECLINE): the lease ends."""

    duid: bytes
    iaid: int
    address: str


@dataclass(frozen=True)
class Confirmed6:
    """The client asked whether its addresses are still on the link (CONFIRM)."""

    duid: bytes
    addresses: tuple[str, ...]
    on_link: bool
    """True: all of them are ours (Success); False: NotOnLink."""


@dataclass(frozen=True)
class Informed6:
    """A stateless client got the DNS servers (INFORMATION-REQUEST)."""

    duid: bytes | None
    """The client's DUID; None when it sent no Client Identifier."""


@dataclass(frozen=True)
class Ignored6:
    """A well-formed message got no reply."""

    reason: str
    """Why, for the log: "other client", "other server", "reply budget spent", ..."""


Event = Leased6 | Released6 | Declined6 | Confirmed6 | Informed6 | Ignored6


def _status(code: int) -> tuple[int, bytes]:
    return (OPT_STATUS_CODE, status_value(code, _MESSAGES[code]))


class Dhcp6Server:
    """The single-device DHCPv6 server; see the module docstring for the rules."""

    def __init__(self, config: Dhcp6Config) -> None:
        self.config = config
        self.duid = duid_ll(config.server_mac)
        self.client_duid: bytes | None = None
        self.refused = 0  # replies the budget refused
        self._address: bytes | None = None
        self._leased: bytes | None = None  # the address client_duid was last given
        self._lease_end: float | None = None  # None: no lease (never, released, declined)
        self._clock = float("-inf")  # latest `now` seen
        self._budget = TokenBucket(REPLY_RATE, REPLY_BUDGET, float("-inf"))  # full at first
        self._events: list[Event] = []
        self._handlers: dict[int, Callable[[Dhcp6Message, float], bytes | None]] = {
            SOLICIT: self._on_solicit,
            REQUEST: self._on_request,
            CONFIRM: self._on_confirm,
            RENEW: self._on_renew,
            REBIND: self._on_renew,
            RELEASE: self._on_release,
            DECLINE: self._on_release,
            INFORMATION_REQUEST: self._on_information_request,
        }

    # --- public API -------------------------------------------------------------------

    @property
    def address(self) -> bytes | None:
        """The address handed out, or None before the adapter decided one."""
        return self._address

    @property
    def bound(self) -> bool:
        """client_duid holds a valid lease, as of the latest `now` given to this server."""
        return self._lease_end is not None and self._clock <= self._lease_end

    def set_address(self, address: bytes | None) -> None:
        """The address to hand out (16 bytes); a lease on another one ends at the client's
        next RENEW/REBIND, which gets it with lifetimes 0 beside the new one."""
        if address is not None and len(address) != 16:
            raise ValueError("an IPv6 address is 16 bytes")
        self._address = address

    def events(self) -> list[Event]:
        """Drain the events produced since the last call."""
        events, self._events = self._events, []
        return events

    def handle(self, payload: bytes, now: float) -> bytes | None:
        """One message from the client port: the reply's UDP payload, or None;
        CodecError if malformed."""
        self._clock = max(self._clock, now)
        msg = parse_dhcp6(payload)
        handler = self._handlers.get(msg.msg_type)
        if handler is None:
            name = TYPE_NAMES.get(msg.msg_type, str(msg.msg_type))
            return self._ignore(f"message type {name} is not for a server")
        problem = self._invalid(msg)
        if problem is not None:
            return self._ignore(problem)
        if self._other_client(msg):
            return self._ignore("other client")
        if self._budget.empty(self._clock):
            self.refused += 1
            return self._ignore("reply budget spent")
        reply = handler(msg, now)
        if reply is not None:
            self._budget.take(self._clock)
        return reply

    # --- per message type -------------------------------------------------------------

    def _on_solicit(self, msg: Dhcp6Message, now: float) -> bytes:
        ias, given = self._answer_ias(msg, zero_foreign=False)
        if given is None:  # nothing to assign: only the status (RFC 8415 18.3.9)
            return self._reply(ADVERTISE, msg, [_status(STATUS_NO_ADDRS_AVAIL), *ias])
        if msg.rapid_commit and self.config.rapid_commit:
            self._commit(msg, given, now, renewal=False)
            return self._reply(REPLY, msg, [(OPT_RAPID_COMMIT, b""), *ias, *self._dns()])
        return self._reply(ADVERTISE, msg, [(OPT_PREFERENCE, b"\xff"), *ias, *self._dns()])

    def _on_request(self, msg: Dhcp6Message, now: float) -> bytes:
        return self._assign(msg, now, zero_foreign=False)

    def _on_renew(self, msg: Dhcp6Message, now: float) -> bytes:
        """RENEW and REBIND."""
        return self._assign(msg, now, zero_foreign=True)

    def _on_confirm(self, msg: Dhcp6Message, now: float) -> bytes | None:
        addresses = [a.address for ia in msg.ias if ia.code != OPT_IA_PD for a in ia.addresses]
        if not addresses:
            return self._ignore("CONFIRM names no address")
        on_link = all(a == self._address for a in addresses)
        assert msg.client_id is not None  # _invalid checked
        texts = tuple(ip6_text(a) for a in addresses[:MAX_ZEROED])
        self._events.append(Confirmed6(msg.client_id, texts, on_link))
        return self._reply(REPLY, msg, [_status(STATUS_SUCCESS if on_link else STATUS_NOT_ON_LINK)])

    def _on_release(self, msg: Dhcp6Message, now: float) -> bytes:
        """RELEASE and DECLINE: the address last given to the client, named in an IA_NA,
        ends the lease (not the one set since, which it does not hold yet)."""
        assert msg.client_id is not None  # _invalid checked
        leased = self._leased if msg.client_id == self.client_duid and self.bound else None
        event = Released6 if msg.msg_type == RELEASE else Declined6
        options = [_status(STATUS_SUCCESS)]
        for ia in msg.ias[:MAX_IAS]:
            holds = ia.code == OPT_IA_NA and any(a.address == leased for a in ia.addresses)
            if leased is not None and holds:
                self._events.append(event(msg.client_id, ia.iaid, ip6_text(leased)))
                self._lease_end, leased = None, None
                continue
            options.append((ia.code, self._ia(ia, [_status(STATUS_NO_BINDING)])))
        return self._reply(REPLY, msg, options)

    def _on_information_request(self, msg: Dhcp6Message, now: float) -> bytes | None:
        if msg.ias:
            return self._ignore("INFORMATION-REQUEST with an IA")
        self._events.append(Informed6(msg.client_id))
        return self._reply(REPLY, msg, self._dns())

    # --- helpers ----------------------------------------------------------------------

    def _ignore(self, reason: str) -> None:
        self._events.append(Ignored6(reason))
        return None

    def _other_client(self, msg: Dhcp6Message) -> bool:
        """A DUID other than the bound one, in a message that could touch the lease."""
        if msg.msg_type == INFORMATION_REQUEST or not self.bound:
            return False
        return msg.client_id is not None and msg.client_id != self.client_duid

    def _invalid(self, msg: Dhcp6Message) -> str | None:
        """Why RFC 8415 16 says to discard msg, or None."""
        needs_client, server_rule = _RULES[msg.msg_type]
        name = TYPE_NAMES[msg.msg_type]
        if needs_client and msg.client_id is None:
            return f"{name} without a client id"
        if msg.server_id is None:
            return f"{name} without a server id" if server_rule == "required" else None
        if server_rule == "forbidden":
            return f"{name} with a server id"
        return "other server" if msg.server_id != self.duid else None

    def _assign(self, msg: Dhcp6Message, now: float, *, zero_foreign: bool) -> bytes:
        ias, given = self._answer_ias(msg, zero_foreign=zero_foreign)
        if given is not None:
            self._commit(msg, given, now, renewal=zero_foreign)
        return self._reply(REPLY, msg, [*ias, *self._dns()])

    def _answer_ias(self, msg: Dhcp6Message, *, zero_foreign: bool) -> tuple[list, int | None]:
        """The IA options of a reply, and the IAID given our address (None: none was)."""
        config, ours, given = self.config, self._address, None
        out: list[tuple[int, bytes]] = []
        for ia in msg.ias[:MAX_IAS]:
            inner: list[tuple[int, bytes]] = []
            if ia.code == OPT_IA_NA and zero_foreign:
                foreign = dict.fromkeys(a.address for a in ia.addresses if a.address != ours)
                for address in list(foreign)[:MAX_ZEROED]:
                    inner.append((OPT_IAADDR, iaaddr_value(address, 0, 0)))
            if ia.code == OPT_IA_NA and ours is not None and given is None:
                lifetimes = (config.preferred_lifetime, config.valid_lifetime)
                inner.append((OPT_IAADDR, iaaddr_value(ours, *lifetimes)))
                out.append((ia.code, self._ia(ia, inner, config.t1, config.t2)))
                given = ia.iaid
                continue
            status = STATUS_NO_PREFIX_AVAIL if ia.code == OPT_IA_PD else STATUS_NO_ADDRS_AVAIL
            out.append((ia.code, self._ia(ia, [*inner, _status(status)])))
        return out, given

    @staticmethod
    def _ia(ia: Ia, inner: list[tuple[int, bytes]], t1: int = 0, t2: int = 0) -> bytes:
        return ia_value(ia.code, ia.iaid, t1, t2, inner)

    def _commit(self, msg: Dhcp6Message, iaid: int, now: float, *, renewal: bool) -> None:
        assert msg.client_id is not None and self._address is not None
        self.client_duid, self._leased = msg.client_id, self._address
        self._lease_end = now + self.config.valid_lifetime
        address, valid = ip6_text(self._address), self.config.valid_lifetime
        self._events.append(Leased6(msg.client_id, iaid, address, valid, renewal))

    def _dns(self) -> list[tuple[int, bytes]]:
        return [(OPT_DNS_SERVERS, b"".join(self.config.dns))] if self.config.dns else []

    def _reply(self, kind: int, msg: Dhcp6Message, options: list[tuple[int, bytes]]) -> bytes:
        head = [] if msg.client_id is None else [(OPT_CLIENTID, msg.client_id)]
        return build_dhcp6(kind, msg.xid, [*head, (OPT_SERVERID, self.duid), *options])
