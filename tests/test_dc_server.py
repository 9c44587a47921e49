"""The DC's server in process: the Coordinator on its signalling socket and its probe port
through serve.py's driver, a node behind a (cone) NAT on fake UDP, trio's autojump clock."""

from __future__ import annotations

import ipaddress

import trio
from structlog.testing import capture_logs

from ntma.dc.coordinator import Coordinator
from ntma.dc.server import run_signalling_server
from ntma.dc.store import NodeStore
from ntma.io.fake import FakeNetwork, FakeUdp
from ntma.observe.spans import Spans
from ntma.proto.crypto import StaticKey
from ntma.proto.node import NodeSignalling

EPOCH = 1_700_000_000.0
DC_EP, DC_PROBE = ("198.51.100.10", 7400), ("198.51.100.10", 7401)
MN_INSIDE, MN_OUTSIDE = ("10.10.1.2", 7401), ("198.51.100.41", 7401)


async def _pump(node: NodeSignalling, udp: FakeUdp, seconds: float) -> None:
    """Drive the node's machine by hand on its fake socket for a while."""
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        node.handle_timer(trio.current_time())
        out = node.datagrams_to_send()
        if out:
            await udp.send_batch(out)
        with trio.move_on_after(0.05):
            for datagram, addr in await udp.recv_batch(8):
                node.receive(datagram, addr, trio.current_time())


async def test_registration_and_the_probe_port_through_the_driver(autojump_clock):
    net, spans = FakeNetwork(), Spans()
    dc_key, mn_key = StaticKey.generate(), StaticKey.generate()
    epoch_offset = EPOCH - trio.current_time()
    dc = Coordinator(
        static=dc_key,
        store=NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16")),
        zone="ntm.example",
        admission={"mn.ntm.example": mn_key.public},
        keepalive_s=5,
        keepalive_misses=3,
        epoch_offset=epoch_offset,
        probe_endpoint=DC_PROBE,
    )
    node = NodeSignalling(
        fqdn="mn.ntm.example",
        static=mn_key,
        dc_public=dc_key.public,
        dc_endpoint=DC_EP,
        local_endpoints=lambda: [MN_INSIDE],  # it is seen as MN_OUTSIDE: behind a NAT
        epoch_offset=epoch_offset,
    )
    probe_udp = net.attach(DC_PROBE)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda **kw: run_signalling_server(
                    dc, net.attach(DC_EP), spans, probe=probe_udp, **kw
                )
            )
            node.start(trio.current_time())
            await _pump(node, net.attach(MN_OUTSIDE), 2.0)
            nursery.cancel_scope.cancel()
    assert node.registered is not None
    assert node.nat_probe_observed == MN_OUTSIDE
    assert [to for _, to in probe_udp.sent] == [MN_OUTSIDE]  # the PROBE_ACK left from there
    by_name = {e["event"]: e for e in logs}
    assert by_name["node_registered"]["fqdn"] == "mn.ntm.example"
    assert by_name["node_registered"]["reach"] == "unknown"
    nat = by_name["node_nat"]
    assert (nat["reach"], nat["main"], nat["probe"]) == ("cone", *["198.51.100.41:7401"] * 2)
    assert nat["stage"] == "dc_signalling"
    assert spans.stages["dc_signalling"].packets >= 1 and not spans.stages["dc_signalling"].drops
