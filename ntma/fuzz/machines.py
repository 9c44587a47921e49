"""Targets for the receive(datagram, addr, now) of the three sans-IO machines.

Each machine is set up as in a running network (the DC with mn and cn registered, the
node registered and directed to expect cn's Tunnel Request, the RS with both ends of a
tunnel bound) and reused for RESET_EVERY inputs, so inputs also meet the state earlier
ones left. A crash is reported with the earlier inputs it needs (the runner drops the
others), and `--repro` feeds them all to a fresh machine.

Two kinds of input per machine: `*.receive` takes the datagram as it arrives (mostly
exercising the header checks, since a mutated sealed packet fails authentication), and
`*.sealed` takes [selector][type][body] and seals the body under that type with a key
the machine knows, as an authenticated but hostile peer would. The machine contract
says receive() never raises, so `rejects` is empty: any exception is a crash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import cache
from hashlib import sha256

from ..dc.coordinator import Coordinator
from ..dc.store import NodeStore
from ..proto.buffer import CodecError, Endpoint
from ..proto.crypto import SignalBox
from ..proto.messages import (
    Direction,
    Message,
    MsgType,
    Register,
    RegisterAck,
    RelayBind,
    Role,
    Route,
    RouteDirection,
    Status,
    encode_body,
    message_type,
    sendable_endpoint,
    sendable_endpoints,
)
from ..proto.node import NodeSignalling
from ..proto.packet import SIG_HEADER, VERSION, open_message, wrap_envelope
from ..relay.relay import Relay
from . import seeds
from .registry import check, target

RESET_EVERY = 64
MAX_DATAGRAM = 65_507  # the largest UDP payload over IPv4
MAX_REPLIES = 8  # datagrams one input may make a machine send (no amplification)
STRANGER_ENDPOINT = ("203.0.113.9", 4444)


def _counter_random() -> Callable[[int], bytes]:
    """Deterministic randomness, so a reproducer replays the same bytes."""
    state = [0]

    def random_bytes(n: int) -> bytes:
        state[0] += 1
        return sha256(state[0].to_bytes(8, "big")).digest()[:n].ljust(n, b"\1")

    return random_bytes


class _Fixture:
    """Builds a machine with `make`, hands it out RESET_EVERY times, then builds anew; keeps
    the inputs fed since, so a crash that needs the state they left can be reproduced."""

    def __init__(self, make: Callable[[], object]) -> None:
        self._make, self._machine, self._uses = make, None, 0
        self.history: list[bytes] = []

    def get(self, data: bytes) -> object:
        if self._machine is None or self._uses >= RESET_EVERY:
            self._machine, self._uses, self.history = self._make(), 0, []
        self._uses += 1
        self.history.append(data)
        return self._machine

    def reset(self) -> None:  # after a crash the state is suspect
        self._machine = None


def _seal(body: bytes, msg_type: int, sender: str, receiver: str) -> bytes:
    """A sealed packet of any type and body, as a peer holding `sender`'s key can make."""
    header = SIG_HEADER.pack(VERSION, msg_type, 0, seeds.key(sender).public, seeds.NONCE)
    return header + _box(sender, receiver).seal(seeds.NONCE, body, header)


@cache
def _box(sender: str, receiver: str) -> SignalBox:
    return SignalBox(seeds.key(sender), seeds.key(receiver).public)


def _sealed_input(selector: int, msg: Message) -> bytes:
    return bytes((selector, message_type(msg))) + encode_body(msg)


def _check_out(out: list[tuple[bytes, Endpoint]]) -> None:
    check(len(out) <= MAX_REPLIES, f"{len(out)} datagrams for one input")
    for datagram, addr in out:
        check(isinstance(datagram, bytes) and sendable_endpoint(addr), f"sends to {addr}")


def _guarded(fixture: _Fixture, feed: Callable[[object, bytes], None]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        machine = fixture.get(data)
        try:
            feed(machine, data)
        except BaseException as exc:
            exc.fuzz_history = tuple(fixture.history[:-1])  # type: ignore[attr-defined]
            fixture.reset()
            raise

    return run


# --- the DC ------------------------------------------------------------------------------


def _make_dc() -> Coordinator:
    store = NodeStore(":memory:", ipaddress.IPv4Network(seeds.POOL))
    dc = Coordinator(
        static=seeds.key("dc"),
        store=store,
        zone=seeds.ZONE,
        admission={
            "mn.ntm.example": seeds.key("mn").public,
            "cn.ntm.example": seeds.key("cn").public,
        },
        keepalive_s=15,
        keepalive_misses=3,
        random_bytes=_counter_random(),
        epoch_offset=seeds.EPOCH_MS / 1000,
        probe_endpoint=("198.51.100.10", 7401),
        relays=[(seeds.RS_ENDPOINT, seeds.key("rs").public)],
    )
    for name, endpoint, local in (
        ("mn", seeds.MN_ENDPOINT, ("10.10.1.2", 7401)),
        ("cn", seeds.CN_ENDPOINT, seeds.CN_ENDPOINT),
    ):
        # A txid no seed uses, so a seed's Register is new (not answered from the cache).
        register = Register(0xF1F1F1F1, seeds.EPOCH_MS, f"{name}.ntm.example", [local])
        dc.receive(seeds.sealed(register, name, "dc"), endpoint, 0.0)
    dc.datagrams_to_send()
    dc.events()
    return dc


_DC_RAW, _DC_SEALED = _Fixture(_make_dc), _Fixture(_make_dc)
_DC_SENDERS = [
    ("mn", seeds.MN_ENDPOINT),
    ("cn", seeds.CN_ENDPOINT),
    ("stranger", STRANGER_ENDPOINT),
]


def _feed_dc(dc: Coordinator, datagram: bytes, addr: Endpoint, via_probe: bool) -> None:
    if via_probe:
        dc.receive_probe(datagram, addr, 1.0)
    else:
        dc.receive(datagram, addr, 1.0)
    dc.handle_timer(1.0)
    out = dc.datagrams_to_send() + dc.probe_datagrams_to_send()
    _check_out(out)
    for sent, _ in out:
        _check_directions(sent)
    dc.events()


def _check_directions(datagram: bytes) -> None:
    """A Direction the DC sends names only endpoints its receiver may send to (issue 10:
    Register endpoints were copied into Directions unchecked). The receiver is whichever
    of mn and cn the reply is sealed for (the raw target sends cn's packets from mn's
    endpoint too); replies to a stranger carry no Direction."""
    for name in ("mn", "cn"):
        try:
            _, msg = open_message(datagram, lambda _, name=name: _box(name, "dc"))
        except CodecError:
            continue
        direction = getattr(msg, "direction", None)
        if direction is not None:
            endpoints = direction.peer_endpoints
            check(sendable_endpoints(endpoints) == endpoints, f"directs to {endpoints}")
        return


def _dc_seeds() -> list[bytes]:
    return [d for d in seeds.sealed_messages()] + [
        seeds.sealed(m, "cn", "dc") for m in seeds.messages()
    ]


def _dc_sealed_seeds() -> list[bytes]:
    return [_sealed_input(s, m) for m in seeds.messages() for s in (0, 1, 2)] + [
        _sealed_input(4, m) for m in seeds.messages() if message_type(m) == MsgType.PROBE
    ]


@target(
    "dc.receive", _dc_seeds, rejects=(), smoke=False, max_input=MAX_DATAGRAM, reset=_DC_RAW.reset
)
def fuzz_dc_receive(data: bytes) -> None:
    """Coordinator.receive on raw datagrams from mn's endpoint; also on the probe port."""
    _guarded(_DC_RAW, lambda dc, d: _feed_dc(dc, d, seeds.MN_ENDPOINT, bool(d[-1:] == b"\0")))(data)


@target(
    "dc.sealed",
    _dc_sealed_seeds,
    rejects=(),
    smoke=False,
    max_input=MAX_DATAGRAM,
    reset=_DC_SEALED.reset,
)
def fuzz_dc_sealed(data: bytes) -> None:
    """[selector][type][body] sealed by mn, cn or a stranger (selector & 3), probe port if & 4."""

    def feed(dc: Coordinator, d: bytes) -> None:
        if len(d) < 2:
            return
        name, addr = _DC_SENDERS[d[0] % 3]
        _feed_dc(dc, _seal(d[2:], d[1], name, "dc"), addr, bool(d[0] & 4))

    _guarded(_DC_SEALED, feed)(data)


# --- the node ----------------------------------------------------------------------------


def _make_node() -> NodeSignalling:
    node = NodeSignalling(
        fqdn="mn.ntm.example",
        static=seeds.key("mn"),
        dc_public=seeds.key("dc").public,
        dc_endpoint=seeds.DC_ENDPOINT,
        local_endpoints=lambda: [("10.10.1.2", 7401)],
        random_bytes=_counter_random(),
        epoch_offset=seeds.EPOCH_MS / 1000,
    )
    node.start(0.0)
    ((register, _),) = node.datagrams_to_send()
    dc_box = {seeds.key("mn").public: SignalBox(seeds.key("dc"), seeds.key("mn").public)}
    _, msg = open_message(register, dc_box.get)
    ack = RegisterAck(msg.txid, Status.OK, "10.99.0.5", 16, seeds.MN_ENDPOINT, 15)
    node.receive(seeds.sealed(ack, "dc", "mn"), seeds.DC_ENDPOINT, 0.1)
    relay = seeds.directions()[2].relay
    expect_cn = Direction(
        0x11223344,
        Route.PUNCH,
        Role.RESPOND,
        "cn.ntm.example",
        "10.99.0.6",
        seeds.key("cn").public,
        [seeds.CN_ENDPOINT],
        relay,
    )
    node.receive(seeds.sealed(RouteDirection(77, expect_cn), "dc", "mn"), seeds.DC_ENDPOINT, 0.2)
    node.datagrams_to_send()
    node.events()
    return node


_NODE_RAW, _NODE_SEALED = _Fixture(_make_node), _Fixture(_make_node)
_NODE_SENDERS = [("dc", seeds.DC_ENDPOINT), ("cn", seeds.CN_ENDPOINT), ("rs", seeds.RS_ENDPOINT)]


def _feed_node(node: NodeSignalling, datagram: bytes, addr: Endpoint) -> None:
    node.receive(datagram, addr, 1.0)
    _check_out(node.datagrams_to_send())
    node.handle_timer(1.0)
    node.handle_timer(20.0)  # retransmits, fallbacks and rebinds with the state left
    node.datagrams_to_send()
    node.events()


def _node_seeds() -> list[bytes]:
    msgs = seeds.messages()
    out = [seeds.sealed(m, "dc", "mn") for m in msgs] + [seeds.sealed(m, "cn", "mn") for m in msgs]
    return out + [wrap_envelope(0x11223344, seeds.sealed(seeds.tunnel_request(), "cn", "mn"))]


def _node_sealed_seeds() -> list[bytes]:
    return [_sealed_input(s, m) for m in seeds.messages() for s in (0, 1, 2, 5)]


@target(
    "node.receive",
    _node_seeds,
    rejects=(),
    smoke=False,
    max_input=MAX_DATAGRAM,
    reset=_NODE_RAW.reset,
)
def fuzz_node_receive(data: bytes) -> None:
    """NodeSignalling.receive on raw datagrams (from the DC's endpoint)."""
    _guarded(_NODE_RAW, lambda node, d: _feed_node(node, d, seeds.DC_ENDPOINT))(data)


@target(
    "node.sealed",
    _node_sealed_seeds,
    rejects=(),
    smoke=False,
    max_input=MAX_DATAGRAM,
    reset=_NODE_SEALED.reset,
)
def fuzz_node_sealed(data: bytes) -> None:
    """[selector][type][body] sealed by the DC, cn or the RS (selector % 3); & 4: via the relay."""

    def feed(node: NodeSignalling, d: bytes) -> None:
        if len(d) < 2:
            return
        name, addr = _NODE_SENDERS[d[0] % 3]
        datagram = _seal(d[2:], d[1], name, "mn")
        if d[0] & 4:
            datagram = wrap_envelope(0x11223344, datagram)
        _feed_node(node, datagram, addr)

    _guarded(_NODE_SEALED, feed)(data)


# --- the RS ------------------------------------------------------------------------------


def _make_relay() -> Relay:
    relay = Relay(
        static=seeds.key("rs"),
        dc_public=seeds.key("dc").public,
        idle_timeout=60.0,
        random_bytes=_counter_random(),
        epoch_offset=seeds.EPOCH_MS / 1000,
    )
    for name, endpoint in (("mn", seeds.MN_ENDPOINT), ("cn", seeds.CN_ENDPOINT)):
        bind = RelayBind(1, seeds.EPOCH_MS, seeds.grant())
        relay.receive(seeds.sealed(bind, name, "rs"), endpoint, 0.0)
    relay.datagrams_to_send()
    relay.events()
    return relay


_RELAY_RAW, _RELAY_SEALED = _Fixture(_make_relay), _Fixture(_make_relay)
_RELAY_SENDERS = [
    ("mn", seeds.MN_ENDPOINT),
    ("cn", seeds.CN_ENDPOINT),
    ("stranger", STRANGER_ENDPOINT),
]


def _feed_relay(relay: Relay, datagram: bytes, addr: Endpoint) -> None:
    relay.receive(datagram, addr, 1.0)
    _check_out(relay.datagrams_to_send())
    relay.handle_timer(100.0 if datagram[-1:] == b"\xff" else 1.0)
    relay.events()


def _relay_seeds() -> list[bytes]:
    binds = [seeds.sealed(RelayBind(2, seeds.EPOCH_MS, g), "mn", "rs") for g in seeds.grants()]
    return binds + seeds.data_packets() + seeds.envelopes()


@target(
    "rs.receive",
    _relay_seeds,
    rejects=(),
    smoke=False,
    max_input=MAX_DATAGRAM,
    reset=_RELAY_RAW.reset,
)
def fuzz_relay_receive(data: bytes) -> None:
    """Relay.receive on raw datagrams from mn's bound endpoint."""
    _guarded(_RELAY_RAW, lambda relay, d: _feed_relay(relay, d, seeds.MN_ENDPOINT))(data)


@target(
    "rs.sealed",
    lambda: [
        _sealed_input(s, RelayBind(3, seeds.EPOCH_MS, g)) for g in seeds.grants() for s in (0, 1, 2)
    ],
    rejects=(),
    smoke=False,
    max_input=MAX_DATAGRAM,
    reset=_RELAY_SEALED.reset,
)
def fuzz_relay_sealed(data: bytes) -> None:
    """[selector][type][body] sealed by mn, cn or a stranger (selector % 3)."""

    def feed(relay: Relay, d: bytes) -> None:
        if len(d) < 2:
            return
        name, addr = _RELAY_SENDERS[d[0] % 3]
        _feed_relay(relay, _seal(d[2:], d[1], name, "rs"), addr)

    _guarded(_RELAY_SEALED, feed)(data)
