"""A small deterministic v2 network for the fuzz harness: a DC, an RS and two nodes (mn and
cn, both behind symmetric NATs, so their tunnel is relayed), wired in memory like
tests/sim.py, with fixed keys and seeded randomness.

`World.build()` runs it: both nodes register (REGISTER inits, REGISTER_ACKs, KEEPALIVE,
UPDATE, PROBE through the probe port), mn asks for cn (DIRECTION_REQUEST, ROUTE_DIRECTION),
both open RS sessions and bind (RS_HELLO, RELAY_BIND), and the tunnel's handshake goes
through the RS in RELAY_ENVELOPEs, then mn's confirming DATA. Every datagram is kept in
`sent` (source, destination, bytes), and every call made on each machine in `calls`, so
`World.replay(name)` makes that machine again, in the same state, without the others:
machines are deterministic given their inputs (randomness and keys are injected). The
fuzz targets start from such a replayed machine, which costs a few X25519, not a run.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from hashlib import sha256

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..dc.coordinator import Coordinator
from ..dc.store import NodeStore
from ..proto.buffer import Endpoint
from ..proto.crypto import StaticKey
from ..proto.node import NodeSignalling
from ..relay.relay import Relay

EPOCH = 1_700_000_000.0  # wall clock at now=0 for every machine
ZONE = "ntm.example"
POOL = "10.99.0.0/16"
DC_EP: Endpoint = ("198.51.100.10", 7400)
DC_PROBE: Endpoint = ("198.51.100.10", 7401)
RS_EP: Endpoint = ("198.51.100.60", 7500)
STRANGER: Endpoint = ("203.0.113.9", 4444)
NODES = {  # name: (inside, outside toward everyone, outside toward the probe port)
    "mn": (("10.10.1.2", 7401), ("198.51.100.41", 7401), ("198.51.100.41", 40001)),
    "cn": (("10.10.2.2", 7401), ("198.51.100.31", 7401), ("198.51.100.31", 40002)),
}
STEP = 0.05


@cache
def key(name: str) -> StaticKey:
    """A fixed X25519 key per role name ("dc", "rs", "mn", "cn", "stranger")."""
    return StaticKey.from_private(
        X25519PrivateKey.from_private_bytes(sha256(name.encode()).digest())
    )


def counter_random(salt: str) -> Callable[[int], bytes]:
    """Deterministic randomness, so a replayed machine and a reproducer see the same bytes."""
    state = [0]

    def random_bytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            state[0] += 1
            out += sha256(f"{salt}/{state[0]}".encode()).digest()
        return out[:n]

    return random_bytes


def counter_keys(salt: str) -> Callable[[], X25519PrivateKey]:
    """Deterministic ephemeral keys (X25519 takes any 32 bytes as a private key)."""
    state = [0]

    def generate() -> X25519PrivateKey:
        state[0] += 1
        return X25519PrivateKey.from_private_bytes(sha256(f"{salt}/e{state[0]}".encode()).digest())

    return generate


def make_dc() -> Coordinator:
    return Coordinator(
        static=key("dc"),
        store=NodeStore(":memory:", ipaddress.IPv4Network(POOL)),
        zone=ZONE,
        admission={f"{n}.{ZONE}": key(n).public for n in NODES},
        keepalive_s=15,
        keepalive_misses=3,
        random_bytes=counter_random("dc"),
        generate_key=counter_keys("dc"),
        epoch_offset=EPOCH,
        probe_endpoint=DC_PROBE,
        relays=[(RS_EP, key("rs").public)],
    )


def make_relay() -> Relay:
    return Relay(
        static=key("rs"),
        dc_public=key("dc").public,
        idle_timeout=60.0,
        random_bytes=counter_random("rs"),
        generate_key=counter_keys("rs"),
        epoch_offset=EPOCH,
    )


def make_node(name: str) -> NodeSignalling:
    inside = NODES[name][0]
    return NodeSignalling(
        fqdn=f"{name}.{ZONE}",
        static=key(name),
        dc_public=key("dc").public,
        dc_endpoint=DC_EP,
        local_endpoints=lambda: [inside],
        random_bytes=counter_random(name),
        generate_key=counter_keys(name),
        epoch_offset=EPOCH,
    )


MAKERS: dict[str, Callable[[], object]] = {
    "dc": make_dc,
    "rs": make_relay,
    "mn": lambda: make_node("mn"),
    "cn": lambda: make_node("cn"),
}

Call = tuple  # (method name, *arguments)


def apply(machine: object, call: Call) -> list[tuple[bytes, Endpoint, bool]]:
    """Make one recorded call on a machine; the datagrams it sent as (bytes, destination,
    from the DC's probe port)."""
    getattr(machine, call[0])(*call[1:])
    out = [(d, to, False) for d, to in machine.datagrams_to_send()]  # type: ignore[attr-defined]
    if isinstance(machine, Coordinator):
        out += [(d, to, True) for d, to in machine.probe_datagrams_to_send()]
    machine.events()  # type: ignore[attr-defined]
    return out


@dataclass
class World:
    machines: dict[str, object] = field(default_factory=dict)
    calls: dict[str, list[Call]] = field(default_factory=dict)
    sent: list[tuple[Endpoint, Endpoint, bytes]] = field(default_factory=list)
    now: float = 0.0

    @classmethod
    def build(cls) -> World:
        world = cls()
        for name, make in MAKERS.items():
            world.machines[name] = make()
            world.calls[name] = []
        for name in NODES:
            world.call(name, "start", 0.0)
        world.run(1.0)
        world.call("mn", "request_direction", f"cn.{ZONE}", world.now)
        world.run(2.0)
        return world

    @staticmethod
    def replay(calls: list[Call], name: str) -> object:
        machine = MAKERS[name]()
        for call in calls:
            apply(machine, call)
        return machine

    # --- the network ------------------------------------------------------------------

    def call(self, name: str, *call: object) -> None:
        self.calls[name].append(call)
        queue = deque((name, out) for out in apply(self.machines[name], call))
        while queue:
            sender, (datagram, dst, from_probe) = queue.popleft()
            src = self._source_of(sender, dst, from_probe)
            self.sent.append((src, dst, datagram))
            target = self._target_of(dst)
            if target is None:
                continue
            receiver, method = target
            inbound = (method, datagram, src, self.now)
            self.calls[receiver].append(inbound)
            queue.extend((receiver, out) for out in apply(self.machines[receiver], inbound))

    @staticmethod
    def _source_of(name: str, dst: Endpoint, from_probe: bool) -> Endpoint:
        if name == "dc":
            return DC_PROBE if from_probe else DC_EP
        if name == "rs":
            return RS_EP
        _, outside, probe_outside = NODES[name]
        return probe_outside if dst == DC_PROBE else outside

    @staticmethod
    def _target_of(dst: Endpoint) -> tuple[str, str] | None:
        if dst == DC_EP:
            return "dc", "receive"
        if dst == DC_PROBE:
            return "dc", "receive_probe"
        if dst == RS_EP:
            return "rs", "receive"
        for name, (_, outside, probe_outside) in NODES.items():
            if dst in (outside, probe_outside):
                return name, "receive"
        return None

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            for name in self.machines:
                self.call(name, "handle_timer", self.now)
            self.now = round(self.now + STEP, 6)


@cache
def world() -> World:
    """The one world every target and seed starts from (built once per process)."""
    return World.build()
