"""A DC and nodes wired over an in-memory 'network' (sans-IO tests, aioquic style)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ntma.dc.coordinator import Coordinator
from ntma.dc.store import NodeStore
from ntma.proto.buffer import Endpoint
from ntma.proto.crypto import StaticKey
from ntma.proto.node_sm import NodeSignalling

DC_EP: Endpoint = ("198.51.100.10", 7400)
ZONE = "ntm.example"


class Net:
    """Delivers datagrams between endpoints; `nat` maps a node's inside endpoint to its
    outside one (and back), `drop` can discard datagrams."""

    def __init__(self) -> None:
        self.dc_key = StaticKey.generate()
        self.keys = {name: StaticKey.generate() for name in ("mn", "cn", "xn")}
        self.store = NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16"))
        admission = {f"{n}.{ZONE}": self.keys[n].public for n in ("mn", "cn")}
        self.dc = Coordinator(
            static=self.dc_key,
            store=self.store,
            zone=ZONE,
            admission=admission,
            keepalive_s=5,
            keepalive_misses=3,
            epoch_offset=1_700_000_000.0,
        )
        self.nodes: dict[str, NodeSignalling] = {}
        self.inside: dict[str, Endpoint] = {}
        self.outside: dict[str, Endpoint] = {}
        self.drop: Callable[[bytes, Endpoint, Endpoint], bool] = lambda d, s, t: False
        self.now = 0.0
        self.events: dict[str, list] = {}

    def add_node(self, name: str, inside: Endpoint, outside: Endpoint | None = None) -> None:
        self.inside[name] = inside
        self.outside[name] = outside or inside
        self.nodes[name] = NodeSignalling(
            fqdn=f"{name}.{ZONE}",
            static=self.keys[name],
            dc_public=self.dc_key.public,
            dc_endpoint=DC_EP,
            local_endpoints=lambda ep=inside: [ep],
            epoch_offset=1_700_000_000.0,
        )
        self.events[name] = []

    def _deliver(self, datagrams, source_name: str | None) -> None:
        for datagram, target in datagrams:
            src = DC_EP if source_name is None else self.outside[source_name]
            if self.drop(datagram, src, target):
                continue
            if target == DC_EP:
                self.dc.receive(datagram, src, self.now)
                continue
            for name, outside in self.outside.items():
                if outside == target:
                    self.nodes[name].receive(datagram, src, self.now)

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
                self._deliver(out, None)
                if not moved:
                    break
            self.now += step
