"""Targets for the receive() of the three v2 sans-IO machines: the DC (main and probe
port), the node (mn) and the RS.

Each machine starts in the state the fuzz world's run left it in (world.py: both nodes
registered, a relayed tunnel between them, both ends bound at the RS), replayed from that
run's recorded inputs, and is reused for RESET_EVERY inputs, so inputs also meet the state
earlier ones left; its clock moves TICK_S per input and JUMP_S every JUMP_EVERY inputs, so
timers fire. A crash is reported with the earlier inputs it needs (the runner drops the
others), and `--repro` feeds them all to a fresh machine.

Two kinds of input per machine, each `[selector][rest]`:
- `*.receive`: rest is a datagram as it arrives; the selector picks its source (and the
  DC's port). Seeds: every datagram the world sent to that machine, and fresh SIGNALs
  under the world's session keys (so a fresh fixture opens them).
- `*.sealed`: rest is a body sealed, as an authenticated but hostile peer would, in one of
  the machine's live sessions (a SIGNAL at a fresh counter, from the session's endpoint or
  a stranger's), or with selector & 0x60 == 0x60, carried as the body of a real
  HANDSHAKE_INIT from a key the machine knows (through the RS for the node with & 0x10).

Properties after each input: receive() raises nothing (`rejects` is empty); at most
MAX_REPLIES datagrams out; every destination passes fields_v2.check_endpoint; nothing sent
to the input's source, unless it is a confirmed session endpoint, is larger than the
input; a Direction the DC sends names only endpoints the DC knows for that peer.
"""

from __future__ import annotations

from collections.abc import Callable

from ..dc.coordinator import Coordinator
from ..proto.buffer import CodecError, Endpoint
from ..proto.envelope import wrap
from ..proto.fields_v2 import check_endpoint
from ..proto.handshake import T_SIGNAL
from ..proto.initiate import Indexes, Initiations
from ..proto.messages_v2 import REPLY_MAX, MsgType, decode, encode
from ..proto.node import NodeSignalling
from ..proto.session import Keypair
from ..relay.relay import Relay
from . import seeds
from .registry import check, target
from .world import (
    DC_EP,
    DC_PROBE,
    EPOCH,
    NODES,
    RS_EP,
    STRANGER,
    World,
    counter_keys,
    counter_random,
    key,
    world,
)

RESET_EVERY = 64
TICK_S = 0.06  # more than the 50 ms flood interval per key (4.3 step 6)
JUMP_EVERY, JUMP_S = 16, 20.0
MAX_DATAGRAM = 1500  # longer inputs are refused by size before anything is read
MAX_REPLIES = 8  # datagrams one input may make a machine send (no amplification)
FRESH_COUNTER = 1000  # sealed inputs use counters from here: above all the world used
MN_OUT, MN_PROBE_OUT = NODES["mn"][1], NODES["mn"][2]
CN_OUT, CN_PROBE_OUT = NODES["cn"][1], NODES["cn"][2]
DC_SOURCES = [MN_OUT, CN_OUT, MN_PROBE_OUT, CN_PROBE_OUT, STRANGER]
NODE_SOURCES = [DC_EP, RS_EP, CN_OUT, STRANGER]
RS_SOURCES = [MN_OUT, CN_OUT, STRANGER]
NODE_IN_SMOKE = True  # off while a crash the node's targets found waits for its fix


class _Fixture:
    """A world machine replayed fresh every RESET_EVERY inputs, its clock, its counters
    for sealing, and the inputs fed since it was made (for reproducers)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.machine: object = None
        self.uses = 0
        self.history: list[bytes] = []
        self.now = 0.0
        self.counter = FRESH_COUNTER
        self.known: set[Endpoint] = set()  # endpoints the machine has learnt (the DC's)
        self._inits: dict[str, Initiations] = {}

    def get(self, data: bytes) -> object:
        if self.machine is None or self.uses >= RESET_EVERY:
            self.machine = World.replay(world().calls[self.name], self.name)
            self.uses, self.history, self.now = 0, [], world().now
            self.counter, self._inits, self.known = FRESH_COUNTER, {}, set()
        self.uses += 1
        self.now = round(self.now + TICK_S + (JUMP_S if self.uses % JUMP_EVERY == 0 else 0), 6)
        self.history.append(data)
        return self.machine

    def reset(self) -> None:  # after a crash (or for --repro) the state starts again
        self.machine = None

    def next_counter(self) -> int:
        self.counter += 1
        return self.counter

    def init(self, initiator: str, responder: bytes, body: bytes, min_size: int) -> bytes:
        """A real HANDSHAKE_INIT from `initiator`'s key with any body (fresh timestamps)."""
        inits = self._inits.get(initiator)
        if inits is None:
            salt = f"fuzz-{self.name}-{initiator}"
            inits = Initiations(key(initiator), Indexes(counter_random(salt)), counter_keys(salt))
            self._inits[initiator] = inits
        pending = inits.start(responder, body, min_size, self.now, EPOCH + self.now)
        inits.forget(pending)
        return pending.datagram


def _seal(fixture: _Fixture, keypair: Keypair, body: bytes) -> bytes:
    """A SIGNAL to the holder of keypair, as its peer would seal it, at a fresh counter."""
    counter = fixture.next_counter()
    return seeds.seal_transport(keypair.receive_key, T_SIGNAL, keypair.local_index, counter, body)


def _check_out(
    out: list[tuple[bytes, Endpoint]], source: Endpoint, size: int, confirmed: set[Endpoint]
) -> None:
    check(len(out) <= MAX_REPLIES, f"{len(out)} datagrams for one input")
    for datagram, to in out:
        _check_destination(to)
        if to == source and source not in confirmed:
            check(len(datagram) <= size, f"{len(datagram)} bytes to {to} for {size}")


def _check_destination(to: Endpoint) -> None:
    try:
        check_endpoint(to)
    except CodecError:
        check(False, f"sends to {to!r}")


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


# --- the DC ----------------------------------------------------------------------------------

_DC_RAW, _DC_SEALED = _Fixture("dc"), _Fixture("dc")


def _dc_sessions(dc: Coordinator) -> list[tuple[Keypair, Endpoint]]:
    """mn's and cn's sessions while they last (a DEREGISTER ends one)."""
    out = []
    for name in NODES:
        session = dc.sessions.get(key(name).public)
        if session is not None:
            out.append((session.current, session.endpoint))
    return out


def _feed_dc(fixture: _Fixture, dc: Coordinator, datagram: bytes, source: Endpoint, probe: bool):
    _learn(fixture, dc)
    if probe:
        dc.receive_probe(datagram, source, fixture.now)
    else:
        dc.receive(datagram, source, fixture.now)
    out = dc.datagrams_to_send() + dc.probe_datagrams_to_send()
    confirmed = {ep for s in dc.sessions.values() for ep in s.endpoints.values()}
    _check_out(out, source, len(datagram), confirmed)
    _learn(fixture, dc)
    _check_directions(dc, out, fixture.known)
    dc.handle_timer(fixture.now)
    for _, to in dc.datagrams_to_send() + dc.probe_datagrams_to_send():
        _check_destination(to)
    dc.events()


def _learn(fixture: _Fixture, dc: Coordinator) -> None:
    for session in dc.sessions.values():
        fixture.known |= set(session.endpoints.values()) | set(session.local_endpoints)


def _check_directions(dc: Coordinator, out: list[tuple[bytes, Endpoint]], known: set) -> None:
    """A Direction the DC sends names only endpoints it learnt for a node (observed on an
    authenticated packet, or local from an UPDATE; a cached answer may name one it learnt
    before): nothing a node sent can steer another node elsewhere."""
    keypairs = {kp.remote_index: kp for _, kp in dc.table.by_index.values()}
    for datagram, _ in out:
        keypair = keypairs.get(int.from_bytes(datagram[4:8], "big"))
        payload = None if keypair is None else seeds.open_transport(keypair.send_key, datagram)
        if payload is None:
            continue
        direction = getattr(decode(payload), "direction", None)
        if direction is not None:
            endpoints = set(direction.peer_endpoints)
            check(endpoints <= known, f"directs to {sorted(endpoints - known)}")


def _dc_raw_seeds() -> list[bytes]:
    out = []
    for src, dst, datagram in world().sent:
        if dst in (DC_EP, DC_PROBE) and src in DC_SOURCES:
            out.append(
                bytes((DC_SOURCES.index(src) | (0x80 if dst == DC_PROBE else 0),)) + datagram
            )
    dc = World.replay(world().calls["dc"], "dc")
    for keypair, endpoint in _dc_sessions(dc):
        for n, body in enumerate(seeds.captured_bodies()):
            signal = seeds.seal_transport(
                keypair.receive_key, T_SIGNAL, keypair.local_index, 500 + n, body
            )
            out.append(
                bytes((DC_SOURCES.index(endpoint) | (0x80 if body[0] == 0x14 else 0),)) + signal
            )
    return out


def _sealed_seeds() -> list[bytes]:
    bodies = [encode(m) for m in seeds.messages()] + list(seeds.captured_bodies())
    out = [bytes((sel,)) + b for b in bodies for sel in (0, 1)]
    out += [bytes((sel,)) + b for b in bodies[::5] for sel in (0x08, 0x11, 0x60, 0x61, 0x72)]
    return out


@target("dc.receive", _dc_raw_seeds, rejects=(), max_input=MAX_DATAGRAM, reset=_DC_RAW.reset)
def fuzz_dc_receive(data: bytes) -> None:
    """Coordinator.receive / receive_probe (selector & 0x80) on raw datagrams from mn's,
    cn's (main or probe mappings) or a stranger's endpoint (selector % 5)."""

    def feed(dc: Coordinator, d: bytes) -> None:
        if len(d) < 2:
            return
        _feed_dc(_DC_RAW, dc, d[1:], DC_SOURCES[d[0] % 5], bool(d[0] & 0x80))

    _guarded(_DC_RAW, feed)(data)


@target("dc.sealed", _sealed_seeds, rejects=(), max_input=MAX_DATAGRAM, reset=_DC_SEALED.reset)
def fuzz_dc_sealed(data: bytes) -> None:
    """A body in mn's or cn's session (selector & 1), from a stranger's endpoint (& 8), on
    the probe port (& 0x10); or (& 0x60 == 0x60) a REGISTER-sized init from their key."""

    def feed(dc: Coordinator, d: bytes) -> None:
        if not d:
            return
        sel, body = d[0], d[1:]
        if sel & 0x60 == 0x60:
            name = ("mn", "cn")[sel & 1]
            datagram = _DC_SEALED.init(name, key("dc").public, body, REPLY_MAX[MsgType.REGISTER])
            source = STRANGER if sel & 0x08 else NODES[name][1]
            _feed_dc(_DC_SEALED, dc, datagram, source, False)
            return
        sessions = _dc_sessions(dc)
        if not sessions:
            return
        keypair, endpoint = sessions[(sel & 1) % len(sessions)]
        source = STRANGER if sel & 0x08 else endpoint
        _feed_dc(_DC_SEALED, dc, _seal(_DC_SEALED, keypair, body), source, bool(sel & 0x10))

    _guarded(_DC_SEALED, feed)(data)


# --- the node ----------------------------------------------------------------------------

_NODE_RAW, _NODE_SEALED = _Fixture("mn"), _Fixture("mn")


def _node_sessions(node: NodeSignalling) -> list[tuple[Keypair, Endpoint]]:
    """mn's DC session, its RS session and its tunnel's keypair."""
    out = [(node.session.ring.current, DC_EP)]
    out += [(s.ring.current, s.endpoint) for s in node.relays.sessions.values()]
    out += [(kp, t.endpoint) for t, kp in node.tunnels.by_index.values()]
    return [(kp, ep) for kp, ep in out if kp is not None]


def _node_confirmed(node: NodeSignalling) -> set[Endpoint]:
    confirmed = {DC_EP} | {s.endpoint for s in node.relays.sessions.values()}
    return confirmed | {t.endpoint for t in node.tunnels}


def _feed_node(fixture: _Fixture, node: NodeSignalling, datagram: bytes, source: Endpoint):
    node.receive(datagram, source, fixture.now)
    _check_out(node.datagrams_to_send(), source, len(datagram), _node_confirmed(node))
    node.handle_timer(fixture.now)
    for _, to in node.datagrams_to_send():
        _check_destination(to)
    node.events()


def _node_raw_seeds() -> list[bytes]:
    out = []
    for src, dst, datagram in world().sent:
        if dst in (MN_OUT, MN_PROBE_OUT) and src in NODE_SOURCES:
            out.append(bytes((NODE_SOURCES.index(src),)) + datagram)
    # cn's tunnel handshakes as if sent straight from cn, not in the RS's envelopes
    out += [bytes((2,)) + d for d in seeds.inits() + seeds.responses()]
    node = World.replay(world().calls["mn"], "mn")
    for keypair, endpoint in _node_sessions(node):
        for n, body in enumerate(seeds.captured_bodies()):
            signal = seeds.seal_transport(
                keypair.receive_key, T_SIGNAL, keypair.local_index, 500 + n, body
            )
            out.append(bytes((NODE_SOURCES.index(endpoint),)) + signal)
    return out


@target(
    "node.receive",
    _node_raw_seeds,
    rejects=(),
    smoke=NODE_IN_SMOKE,
    max_input=MAX_DATAGRAM,
    reset=_NODE_RAW.reset,
)
def fuzz_node_receive(data: bytes) -> None:
    """NodeSignalling.receive on raw datagrams from the DC, the RS, cn or a stranger (% 4)."""

    def feed(node: NodeSignalling, d: bytes) -> None:
        if len(d) < 2:
            return
        _feed_node(_NODE_RAW, node, d[1:], NODE_SOURCES[d[0] % 4])

    _guarded(_NODE_RAW, feed)(data)


@target(
    "node.sealed",
    _sealed_seeds,
    rejects=(),
    smoke=NODE_IN_SMOKE,
    max_input=MAX_DATAGRAM,
    reset=_NODE_SEALED.reset,
)
def fuzz_node_sealed(data: bytes) -> None:
    """A body in mn's DC, RS or tunnel session (selector % 3), from a stranger (& 8); or
    (& 0x60 == 0x60) a tunnel-sized init from cn's key, through the RS if & 0x10; with
    & 0x80 the node's network changed first (netwatch: re-announce, 7.3)."""

    def feed(node: NodeSignalling, d: bytes) -> None:
        if not d:
            return
        sel, body = d[0], d[1:]
        if sel & 0x80:
            node.network_changed(_NODE_SEALED.now)
        sessions = _node_sessions(node)
        if sel & 0x60 == 0x60:
            datagram = _NODE_SEALED.init(
                "cn", key("mn").public, body, REPLY_MAX[MsgType.TUNNEL_INIT]
            )
            source = STRANGER if sel & 0x08 else CN_OUT
            if sel & 0x10:
                tunnel = next(iter(node.tunnels), None)
                if tunnel is not None:
                    datagram, source = wrap(tunnel.dc_id, tunnel.tunnel_id, datagram), RS_EP
            _feed_node(_NODE_SEALED, node, datagram, source)
            return
        if not sessions:
            return
        keypair, endpoint = sessions[(sel & 7) % len(sessions)]
        source = STRANGER if sel & 0x08 else endpoint
        _feed_node(_NODE_SEALED, node, _seal(_NODE_SEALED, keypair, body), source)

    _guarded(_NODE_SEALED, feed)(data)


# --- the RS ------------------------------------------------------------------------------

_RS_RAW, _RS_SEALED = _Fixture("rs"), _Fixture("rs")


def _rs_sessions(relay: Relay) -> list[tuple[Keypair, Endpoint]]:
    peers = getattr(relay, "_peers", {})
    return [(p.keypair, p.endpoint) for p in peers.values() if p.confirmed]


def _rs_confirmed(relay: Relay) -> set[Endpoint]:
    confirmed = set(getattr(relay, "_at_endpoint", {}))
    for entry in relay.entries.values():
        confirmed |= {ep for ep in entry.bound if ep is not None}
    return confirmed


def _feed_relay(fixture: _Fixture, relay: Relay, datagram: bytes, source: Endpoint):
    relay.receive(datagram, source, fixture.now)
    _check_out(relay.datagrams_to_send(), source, len(datagram), _rs_confirmed(relay))
    relay.handle_timer(fixture.now)
    relay.datagrams_to_send()
    relay.events()


def _rs_raw_seeds() -> list[bytes]:
    out = []
    for src, dst, datagram in world().sent:
        if dst == RS_EP and src in RS_SOURCES:
            out.append(bytes((RS_SOURCES.index(src),)) + datagram)
    relay = World.replay(world().calls["rs"], "rs")
    for keypair, endpoint in _rs_sessions(relay):
        for n, body in enumerate(seeds.captured_bodies()):
            signal = seeds.seal_transport(
                keypair.receive_key, T_SIGNAL, keypair.local_index, 500 + n, body
            )
            out.append(bytes((RS_SOURCES.index(endpoint),)) + signal)
    return out


@target("rs.receive", _rs_raw_seeds, rejects=(), max_input=MAX_DATAGRAM, reset=_RS_RAW.reset)
def fuzz_relay_receive(data: bytes) -> None:
    """Relay.receive on raw datagrams from mn's, cn's or a stranger's endpoint (% 3)."""

    def feed(relay: Relay, d: bytes) -> None:
        if len(d) < 2:
            return
        _feed_relay(_RS_RAW, relay, d[1:], RS_SOURCES[d[0] % 3])

    _guarded(_RS_RAW, feed)(data)


@target("rs.sealed", _sealed_seeds, rejects=(), max_input=MAX_DATAGRAM, reset=_RS_SEALED.reset)
def fuzz_relay_sealed(data: bytes) -> None:
    """A body in mn's or cn's RS session (selector & 1), from a stranger (& 8); or (& 0x60
    == 0x60) an RS_HELLO-sized init from mn's, cn's or a stranger's key (% 3)."""

    def feed(relay: Relay, d: bytes) -> None:
        if not d:
            return
        sel, body = d[0], d[1:]
        if sel & 0x60 == 0x60:
            name = ("mn", "cn", "stranger")[sel % 3]
            datagram = _RS_SEALED.init(name, key("rs").public, body, REPLY_MAX[MsgType.RS_HELLO])
            source = STRANGER if sel & 0x08 else RS_SOURCES[sel % 3]
            _feed_relay(_RS_SEALED, relay, datagram, source)
            return
        sessions = _rs_sessions(relay)
        if not sessions:
            return
        keypair, endpoint = sessions[(sel & 1) % len(sessions)]
        source = STRANGER if sel & 0x08 else endpoint
        _feed_relay(_RS_SEALED, relay, _seal(_RS_SEALED, keypair, body), source)

    _guarded(_RS_SEALED, feed)(data)
