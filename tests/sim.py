"""A DC, a Relay Server and nodes wired over an in-memory 'network' (sans-IO tests,
aioquic style), protocol v2. NATs are modelled by each node's outside endpoint (what others
see) and, for a symmetric NAT, a different outside endpoint toward the DC's probe port.

`Net(fake_tunnels=True)` gives every node a RecordingHandshakes instead of part B's
Handshakes: Directions, relay confirmations and tunnel inits are recorded, no tunnel is
built, so the DC/RS/session scenarios run on their own. With real Handshakes, DATA
datagrams go to the node's data path (`open_data` on its TunnelTable, as the receive
stage does): key confirmation and roaming happen as in a deployment.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections import Counter
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntma.dc.admission import SubZone
from ntma.dc.coordinator import Coordinator
from ntma.dc.store import NodeStore
from ntma.proto.buffer import CodecError, Endpoint
from ntma.proto.crypto import StaticKey
from ntma.proto.handshake import T_DATA
from ntma.proto.node import NodeSignalling
from ntma.proto.tunnel import open_data
from ntma.relay.relay import Relay

DC_EP: Endpoint = ("198.51.100.10", 7400)
DC_PROBE: Endpoint = ("198.51.100.10", 7401)
DC_EP6: Endpoint = ("2001:db8::10", 7400)  # the DC's IPv6 address (dual-stack nodes)
DC_PROBE6: Endpoint = ("2001:db8::10", 7401)
DC_FILTER: Endpoint = ("198.51.100.10", 7402)  # the filter port (Net(filter_port=True))
DC_FILTER6: Endpoint = ("2001:db8::10", 7402)
RS_EP: Endpoint = ("198.51.100.60", 7500)
ZONE = "ntm.example"
EPOCH = 1_700_000_000.0


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def keys_from(seed: int) -> Callable[[], X25519PrivateKey]:
    """Deterministic ephemeral keys: X25519 takes any 32 bytes as a private key."""
    counter = itertools.count(seed)
    return lambda: X25519PrivateKey.from_private_bytes(next(counter).to_bytes(32, "big"))


class RecordingHandshakes:
    """Part B's interface, recording what the node's signalling hands it."""

    def __init__(self, wire, tunnels, generate_key, relays=None) -> None:
        self.wire, self.tunnels, self.relays = wire, tunnels, relays
        self.directions: list = []
        self.relay_bound: list[tuple[bytes, int]] = []
        self.inits: list = []
        self.closed: list[tuple[bytes, int]] = []
        self.forgotten: list[tuple[bytes, int]] = []  # what Handshakes reports dropped

    def on_direction(self, direction, now, again=False):
        self.directions.append(direction)
        if direction.relay is not None and self.relays is not None:  # as Handshakes binds
            self.relays.bind(direction.relay, direction.dc_id, direction.tunnel_id, now)

    def on_init(self, datagram, addr, now, relay):
        self.inits.append((datagram, addr, relay))

    def on_established(self, pending, remote_index, body, keys, addr, now, relay):
        self.wire.release(pending.sender_index)

    def resend(self, pending, now):
        pass

    def on_expired(self, pending, now):
        pass

    def on_relay_bound(self, dc_id, tunnel_id, now):
        self.relay_bound.append((dc_id, tunnel_id))

    def on_signal(self, tunnel, payload, addr, now):
        pass

    def close(self, dc_id, tunnel_id, now, reason=""):
        self.closed.append((dc_id, tunnel_id))

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass


class Net:
    """Delivers datagrams between endpoints; `drop(datagram, src, dst)` can discard them.
    `sent` records every datagram as (source, destination, bytes)."""

    def __init__(
        self,
        *,
        relays: bool = True,
        fake_tunnels: bool = False,
        seed: int = 1,
        filtering: bool = False,
        grant_lifetime_s: float = 3600.0,
        admission: dict[str, str] | None = None,
        subzones: tuple[tuple[str, str, int], ...] = (),  # (suffix, owner node, max_names)
        pool6: str | None = None,  # the DC's IPv6 VIP pool
        filter_port: bool = False,  # the DC sends unasked PROBE_ACKs from DC_FILTER(6)
        firewalled6: tuple[str, ...] = (),  # nodes whose IPv6 hears only what it sent to
    ) -> None:
        self.dc_key = StaticKey.generate()
        self.rs_key = StaticKey.generate()
        self.keys = {name: StaticKey.generate() for name in ("mn", "cn", "xn")}
        self.store = NodeStore(
            ":memory:",
            ipaddress.IPv4Network("10.99.0.0/16"),
            ipaddress.IPv6Network(pool6) if pool6 else None,
        )
        self._seed = seed
        self.grant_lifetime_s = grant_lifetime_s
        self.extra_admission = admission or {}  # name -> the sim node whose key it is
        self.subzones = subzones
        self.relays = relays
        self.fake_tunnels = fake_tunnels
        self.filter_port = filter_port
        self.firewalled6 = set(firewalled6)
        self.dc = self.make_dc()
        self.relay = Relay(
            static=self.rs_key,
            dc_public=self.dc_key.public,
            idle_timeout=60,
            random_bytes=seeded(seed + 1000),
            epoch_offset=EPOCH,
        )
        self.nodes: dict[str, NodeSignalling] = {}
        self.inside: dict[str, Endpoint] = {}
        self.outside: dict[str, Endpoint] = {}
        self.probe_outside: dict[str, Endpoint] = {}
        self.outside6: dict[str, Endpoint] = {}  # a dual-stack node's public IPv6 endpoint
        self.drop: Callable[[bytes, Endpoint, Endpoint], bool] = lambda d, s, t: False
        self.now = 0.0
        self.events: dict[str, list] = {}
        self.dc_events: list = []
        self.sent: list[tuple[Endpoint, Endpoint, bytes]] = []
        self.data_drops: dict[str, Counter] = {}
        # filtering=True: a NATed node (outside != inside) hears only from endpoints it has
        # sent to, as a home router's conntrack lets in replies only.
        self.filtering = filtering
        self.opened: dict[str, set[Endpoint]] = {}
        self.nat_dropped: Counter[str] = Counter()

    def make_dc(self) -> Coordinator:
        self._seed += 1
        return Coordinator(
            static=self.dc_key,
            store=self.store,
            zone=ZONE,
            admission={f"{n}.{ZONE}": self.keys[n].public for n in ("mn", "cn")}
            | {name: self.keys[n].public for name, n in self.extra_admission.items()},
            subzones=[SubZone(z, self.keys[owner].public, n) for z, owner, n in self.subzones],
            keepalive_s=5,
            keepalive_misses=3,
            random_bytes=seeded(self._seed),
            epoch_offset=EPOCH,
            probe_endpoint=DC_PROBE,
            filter_port=self.filter_port,
            relays=[(RS_EP, self.rs_key.public)] if self.relays else [],
            grant_lifetime_s=self.grant_lifetime_s,
        )

    def add_node(
        self,
        name: str,
        inside: Endpoint,
        outside: Endpoint | None = None,
        probe_outside: Endpoint | None = None,
        fqdn: str | None = None,
        outside6: Endpoint | None = None,
    ) -> NodeSignalling:
        self.inside[name] = inside
        self.outside[name] = outside or inside
        if probe_outside is not None:
            self.probe_outside[name] = probe_outside
        if outside6 is not None:
            self.outside6[name] = outside6
        node = NodeSignalling(
            fqdn=fqdn or f"{name}.{ZONE}",
            static=self.keys[name],
            dc_public=self.dc_key.public,
            dc_endpoint=DC_EP,
            local_endpoints=lambda name=name: [self.inside[name]]
            + ([self.outside6[name]] if name in self.outside6 else []),
            epoch_offset=EPOCH,
            make_handshakes=RecordingHandshakes if self.fake_tunnels else None,
            dc_other_endpoint=DC_EP6 if outside6 is not None else None,
        )
        self.nodes[name] = node
        self.events[name] = []
        self.data_drops[name] = Counter()
        self.opened[name] = set()
        return node

    def move(
        self,
        name: str,
        inside: Endpoint,
        outside: Endpoint | None = None,
        probe_outside: Endpoint | None = None,
    ) -> None:
        """The node changes networks: new addresses, a NAT that has opened nothing yet."""
        self.inside[name] = inside
        self.outside[name] = outside or inside
        self.probe_outside.pop(name, None)
        if probe_outside is not None:
            self.probe_outside[name] = probe_outside
        self.opened[name] = set()

    def restart(self, name: str) -> NodeSignalling:
        """The node's process dies and starts again: same key and name, nothing else kept
        (a new boot_id, no sessions, no tunnels)."""
        node = self.add_node(
            name, self.inside[name], self.outside[name], self.probe_outside.get(name)
        )
        node.start(self.now)
        return node

    def natted(self, name: str) -> bool:
        return self.outside[name] != self.inside[name]

    def handshakes(self, name: str) -> RecordingHandshakes:
        return self.nodes[name].handshakes  # type: ignore[return-value]

    def _to_node(self, datagram: bytes, src: Endpoint, target: Endpoint) -> None:
        self.sent.append((src, target, datagram))
        if self.drop(datagram, src, target):
            return
        for name, node in self.nodes.items():
            if target not in (
                self.outside[name], self.probe_outside.get(name), self.outside6.get(name)
            ):
                continue
            v6 = target == self.outside6.get(name)
            firewalled = name in self.firewalled6 if v6 else self.filtering and self.natted(name)
            if firewalled and src not in self.opened[name]:
                self.nat_dropped[name] += 1
                continue
            if datagram[1:2] == bytes([T_DATA]):  # the data path's, as the stages sort it
                self.data_in(name, datagram, src)
            else:
                node.receive(datagram, src, self.now)

    def data_in(self, name: str, datagram: bytes, src: Endpoint) -> None:
        """What the receive stage does with DATA: open it on the node's tunnel table (key
        confirmation, roaming); what it cannot open is counted in `data_drops`."""
        try:
            open_data(self.nodes[name].tunnels, datagram, src, self.now)
        except (CodecError, LookupError) as exc:
            self.data_drops[name][type(exc).__name__] += 1

    def deliver(self, datagrams, source_name: str) -> None:
        for datagram, target in datagrams:
            self.opened.setdefault(source_name, set()).add(target)
            src = self.outside[source_name]
            if target == DC_PROBE:
                src = self.probe_outside.get(source_name, src)
            elif target == DC_PROBE6 and source_name in self.outside6:
                src = self.outside6[source_name]
            elif ":" in target[0]:  # IPv6: from the node's IPv6 address (unreachable without)
                if source_name not in self.outside6:
                    continue
                src = self.outside6[source_name]
            self.inject(datagram, src, target)

    def inject(self, datagram: bytes, src: Endpoint, target: Endpoint) -> None:
        """One datagram from `src` (anyone's, or a stranger's) into the network."""
        self.sent.append((src, target, datagram))
        if self.drop(datagram, src, target):
            return
        if target in (DC_EP, DC_EP6):
            self.dc.receive(datagram, src, self.now)
        elif target in (DC_PROBE, DC_PROBE6):
            self.dc.receive_probe(datagram, src, self.now)
            for reply, to in self.dc.probe_datagrams_to_send():
                self._to_node(reply, target, to)
            for reply, to in self.dc.filter_datagrams_to_send():
                self._to_node(reply, DC_FILTER6 if ":" in to[0] else DC_FILTER, to)
        elif target in (DC_FILTER, DC_FILTER6):
            self.dc.receive_filter(datagram, src, self.now)
        elif target == RS_EP:
            self.relay.receive(datagram, src, self.now)
            for forwarded, to in self.relay.datagrams_to_send():
                self._to_node(forwarded, RS_EP, to)
        else:
            self._to_node(datagram, src, target)

    def step(self) -> bool:
        moved = False
        for name, node in self.nodes.items():
            node.handle_timer(self.now)
            out = node.datagrams_to_send()
            self.events[name].extend(node.events())
            moved |= bool(out)
            self.deliver(out, name)
        self.dc.handle_timer(self.now)
        self.relay.handle_timer(self.now)
        for datagram, to in self.relay.datagrams_to_send():
            self._to_node(datagram, RS_EP, to)
        out = self.dc.datagrams_to_send()
        self.dc_events.extend(self.dc.events())
        moved |= bool(out)
        for datagram, target in out:
            self._to_node(datagram, DC_EP, target)
        return moved

    def run(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end:
            for _ in range(20):
                if not self.step():
                    break
            self.now += step
