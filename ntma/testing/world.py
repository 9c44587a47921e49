"""A DC, NTM nodes and an adapter in one process, on a FakeNetwork (no kernel).

Every node and the adapter run the real pipeline (stages.pipeline) over fake TUN, raw
socket and UDP ends (io.fake), and the DC runs its real signalling server, so a test
or a benchmark drives packets through exactly the code a deployment runs.

    start_fake_world:    DC, mn and cn (NTM nodes)
    start_adapter_world: DC, the adapter (registered as gn) and cn; the caller plays
                         the GN on the adapter's link and the kernel on its passthrough
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

import trio

from ..dc.coordinator import Coordinator
from ..dc.server import run_signalling_server
from ..dc.store import NodeStore
from ..io.fake import FakeNetwork, FakePackets, FakeUdp
from ..observe.spans import Spans
from ..proto.buffer import Endpoint
from ..proto.crypto import StaticKey
from ..proto.devices import DeviceRule, Devices
from ..proto.gnlink import GnLink
from ..proto.node import NodeSignalling, Registered
from ..stages.core import NodePipeline
from ..stages.dns import DnsResolver
from ..stages.gn_services import on_device_name, replay_held, serve_gn_vip
from ..stages.pipeline import AdapterParts, start_adapter_pipeline, start_node_pipeline
from .traffic import ADAPTER_MAC

DC = ("198.51.100.10", 7400)
ZONE = "ntm.example"
VIP_POOL = "10.99.0.0/16"
MN_ENDPOINT = ("198.51.100.41", 7401)
CN_ENDPOINT = ("198.51.100.30", 7401)
ADAPTER_ENDPOINT = ("198.51.100.51", 7401)
REGISTER_WAIT_S = 10


class FakeDc:
    """The DC's static key and the keys it admits, one per name."""

    def __init__(self, names: Iterable[str], extra: dict[str, str] | None = None) -> None:
        self.key = StaticKey.generate()
        self.node_keys = {name: StaticKey.generate() for name in names}
        self.extra = extra or {}  # one more admitted fqdn -> the name whose key it is
        self.coordinator: Coordinator | None = None  # once started
        self.spans = Spans()

    async def start(self, nursery: trio.Nursery, net: FakeNetwork, keepalive_s: int) -> None:
        store = NodeStore(":memory:", ipaddress.IPv4Network(VIP_POOL))
        self.coordinator = coordinator = Coordinator(
            static=self.key,
            store=store,
            zone=ZONE,
            admission={f"{n}.{ZONE}": k.public for n, k in self.node_keys.items()}
            | {fqdn: self.node_keys[owner].public for fqdn, owner in self.extra.items()},
            keepalive_s=keepalive_s,
            keepalive_misses=3,
            epoch_offset=1.7e9,
        )
        await nursery.start(run_signalling_server, coordinator, net.attach(DC), self.spans)

    def signalling(self, name: str, endpoint: Endpoint) -> NodeSignalling:
        """The signalling machine for the node admitted as `name`, on one endpoint."""
        return NodeSignalling(
            fqdn=f"{name}.{ZONE}",
            static=self.node_keys[name],
            dc_public=self.key.public,
            dc_endpoint=DC,
            local_endpoints=lambda: [endpoint],
            epoch_offset=1.7e9,
        )


class FakeNode:
    """An NTM node whose TUN and UDP socket are in-memory fakes."""

    def __init__(
        self, net: FakeNetwork, dc: FakeDc, name: str, endpoint: Endpoint, tun_depth: int
    ) -> None:
        self.udp: FakeUdp = net.attach(endpoint)
        self.tun = FakePackets(depth=tun_depth)
        self.sm = dc.signalling(name, endpoint)
        self.pipe = NodePipeline(self.sm)
        self.vip = ""

    async def on_registered(self, event: Registered) -> None:
        self.vip = event.vip

    async def start(self, nursery: trio.Nursery) -> None:
        await start_node_pipeline(nursery, self.pipe, self.tun, self.udp, self.on_registered)


class FakeAdapter:
    """The adapter with its GN link (raw socket) and passthrough TUN as in-memory fakes.

    The caller is the GN: it sends frames with `gn.inject` and reads the frames sent to
    the GN from `gn.written`; and the kernel: `passthrough.written` is what the adapter
    routes out, `passthrough.inject` the kernel's replies.
    """

    def __init__(
        self,
        net: FakeNetwork,
        dc: FakeDc,
        name: str,
        endpoint: Endpoint,
        depth: int,
        *,
        mtu: int = 1400,
        lease_time: int = 600,
        dns_upstream: Endpoint | None = None,
        devices: tuple[DeviceRule, ...] = (),
    ) -> None:
        self.udp: FakeUdp = net.attach(endpoint)
        self.gn = FakePackets(depth=depth)
        self.passthrough = FakePackets(depth=depth)
        self.sm = dc.signalling(name, endpoint)
        self.link = GnLink(adapter_mac=ADAPTER_MAC, devices=Devices(self.sm.fqdn, devices))
        for rule in devices:  # as adapter.run asks them
            if rule.fqdn != self.sm.fqdn:
                self.sm.add_name(rule.fqdn, 0.0)
        self.pipe = NodePipeline(self.sm)
        dns_stats = self.pipe.spans.stage("dns")
        self.resolver = DnsResolver(
            self.pipe.broker, dns_upstream, [ZONE], dns_stats, local=self.link.devices.vip_of_name
        )
        self.mtu, self.lease_time = mtu, lease_time
        self.vip = ""
        self.parts: AdapterParts | None = None

    async def on_registered(self, event: Registered) -> None:
        """As adapter.run's, without the kernel's part (passthrough address, TCP DNS)."""
        lease_time, mtu = self.lease_time, self.mtu
        if serve_gn_vip(self.link, event.vip, event.prefix_len, lease_time=lease_time, mtu=mtu):
            self.vip = event.vip
            if self.parts is not None:
                replay_held(self.link, self.parts, self.sm.fqdn)

    async def start(self, nursery: trio.Nursery) -> None:
        self.parts = AdapterParts(self.gn, self.passthrough, self.resolver, self.link, self.mtu)
        self.pipe.on_name = functools.partial(on_device_name, self.link, self.parts)
        await start_adapter_pipeline(nursery, self.pipe, self.parts, self.udp, self.on_registered)


async def wait_registered(*members: FakeNode | FakeAdapter) -> None:
    """Wait until the DC has given every member its VIP."""
    with trio.fail_after(REGISTER_WAIT_S):
        while not all(member.vip for member in members):
            await trio.sleep(0.01)


async def start_fake_world(
    nursery: trio.Nursery, *, depth: int = 64, keepalive_s: int = 15
) -> tuple[FakeNetwork, dict[str, FakeNode]]:
    """A DC and two registered nodes, mn and cn (both public), on a FakeNetwork."""
    net = FakeNetwork(depth=depth)
    dc = FakeDc(["mn", "cn"])
    await dc.start(nursery, net, keepalive_s)
    nodes = {
        "mn": FakeNode(net, dc, "mn", MN_ENDPOINT, depth),
        "cn": FakeNode(net, dc, "cn", CN_ENDPOINT, depth),
    }
    for node in nodes.values():
        await node.start(nursery)
    await wait_registered(*nodes.values())
    return net, nodes


async def start_adapter_world(
    nursery: trio.Nursery,
    *,
    depth: int = 64,
    keepalive_s: int = 15,
    mtu: int = 1400,
    devices: tuple[DeviceRule, ...] = (),
) -> tuple[FakeNetwork, FakeAdapter, FakeNode]:
    """A DC, the adapter (its GN registered as gn; `devices` admitted with the adapter's
    key and in its table) and the node cn, all registered."""
    net = FakeNetwork(depth=depth)
    dc = FakeDc(["gn", "cn"], {rule.fqdn: "gn" for rule in devices})
    await dc.start(nursery, net, keepalive_s)
    adapter = FakeAdapter(net, dc, "gn", ADAPTER_ENDPOINT, depth, mtu=mtu, devices=devices)
    cn = FakeNode(net, dc, "cn", CN_ENDPOINT, depth)
    await adapter.start(nursery)
    await cn.start(nursery)
    await wait_registered(adapter, cn)
    return net, adapter, cn
