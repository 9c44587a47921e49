"""A DC, a Relay Server and nodes wired over an in-memory 'network' (sans-IO tests,
aioquic style). NATs are modelled by each node's outside endpoint (what others see)
and, for a symmetric NAT, a different outside endpoint toward the DC's probe port."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ntma.dc.coordinator import Coordinator
from ntma.dc.store import NodeStore
from ntma.proto.buffer import Endpoint
from ntma.proto.crypto import StaticKey
from ntma.proto.node import NodeSignalling
from ntma.relay.relay import Relay

DC_EP: Endpoint = ("198.51.100.10", 7400)
DC_PROBE: Endpoint = ("198.51.100.10", 7401)
RS_EP: Endpoint = ("198.51.100.60", 7500)
ZONE = "ntm.example"
EPOCH = 1_700_000_000.0


class Net:
    """Delivers datagrams between endpoints; `drop(datagram, src, dst)` can discard them."""

    def __init__(self, *, relays: bool = True) -> None:
        self.dc_key = StaticKey.generate()
        self.rs_key = StaticKey.generate()
        self.keys = {name: StaticKey.generate() for name in ("mn", "cn", "xn")}
        self.store = NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16"))
        self.dc = self.make_dc(relays=relays)
        self.relay = Relay(
            static=self.rs_key, dc_public=self.dc_key.public, idle_timeout=60, epoch_offset=EPOCH
        )
        self.nodes: dict[str, NodeSignalling] = {}
        self.inside: dict[str, Endpoint] = {}
        self.outside: dict[str, Endpoint] = {}
        self.probe_outside: dict[str, Endpoint] = {}
        self.drop: Callable[[bytes, Endpoint, Endpoint], bool] = lambda d, s, t: False
        self.now = 0.0
        self.events: dict[str, list] = {}

    def make_dc(self, *, relays: bool = True) -> Coordinator:
        return Coordinator(
            static=self.dc_key,
            store=self.store,
            zone=ZONE,
            admission={f"{n}.{ZONE}": self.keys[n].public for n in ("mn", "cn")},
            keepalive_s=5,
            keepalive_misses=3,
            epoch_offset=EPOCH,
            probe_endpoint=DC_PROBE,
            relays=[(RS_EP, self.rs_key.public)] if relays else [],
        )

    def add_node(
        self,
        name: str,
        inside: Endpoint,
        outside: Endpoint | None = None,
        probe_outside: Endpoint | None = None,
    ) -> None:
        self.inside[name] = inside
        self.outside[name] = outside or inside
        if probe_outside is not None:
            self.probe_outside[name] = probe_outside
        self.nodes[name] = NodeSignalling(
            fqdn=f"{name}.{ZONE}",
            static=self.keys[name],
            dc_public=self.dc_key.public,
            dc_endpoint=DC_EP,
            local_endpoints=lambda ep=inside: [ep],
            epoch_offset=EPOCH,
        )
        self.events[name] = []

    def _to_node(self, datagram: bytes, src: Endpoint, target: Endpoint) -> None:
        if self.drop(datagram, src, target):
            return
        for name in self.nodes:
            if target in (self.outside[name], self.probe_outside.get(name)):
                self.nodes[name].receive(datagram, src, self.now)

    def _deliver(self, datagrams, source_name: str) -> None:
        for datagram, target in datagrams:
            src = self.outside[source_name]
            if target == DC_PROBE:
                src = self.probe_outside.get(source_name, src)
            if self.drop(datagram, src, target):
                continue
            if target == DC_EP:
                self.dc.receive(datagram, src, self.now)
            elif target == DC_PROBE:
                self.dc.receive_probe(datagram, src, self.now)
                for reply, to in self.dc.probe_datagrams_to_send():
                    self._to_node(reply, DC_PROBE, to)
            elif target == RS_EP:
                self.relay.receive(datagram, src, self.now)
                for forwarded, to in self.relay.datagrams_to_send():
                    self._to_node(forwarded, RS_EP, to)
            else:
                self._to_node(datagram, src, target)

    def run(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end:
            for _ in range(20):
                moved = False
                for name, node in self.nodes.items():
                    node.handle_timer(self.now)
                    out = node.datagrams_to_send()
                    self.events[name].extend(node.events())
                    moved |= bool(out)
                    self._deliver(out, name)
                self.dc.handle_timer(self.now)
                out = self.dc.datagrams_to_send()
                moved |= bool(out)
                for datagram, target in out:
                    self._to_node(datagram, DC_EP, target)
                if not moved:
                    break
            self.now += step
