"""Per-stage benchmarks, in process, on traffic built with the project's own codecs.

Each benchmark times the work one stage does per batch by calling the same function
the stage's run_<stage> calls on each batch (sort_frames, answer_arps, answer_dhcp,
encapsulate_packets, decapsulate_datagrams, frame_packets, DnsResolver.answer), in
batches like the pipeline's, and reports the median and p99 cost per packet in ns and
the packets/s one core sustains at the median. Classify, ARP and DHCP are measured twice:
with one GN, and with DEVICES devices on the link, one frame from each in every batch (each
device with its own MAC, VIP, DHCP server and tunnel). The signalling figure is a v2 SIGNAL
(seal, open, decode), the part of signalling that is per packet. No sockets,
except the DNS forwarder's stub upstream on loopback.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio
from dnslib import QTYPE, RR, A, DNSRecord

from ..observe.spans import StageStats
from ..proto.bodies_v2 import DirectionRequest
from ..proto.fields_v2 import Status
from ..proto.gnlink import GnLink
from ..proto.handshake import T_SIGNAL
from ..proto.messages_v2 import BodyKind, decode, encode
from ..proto.node import DirectionResolved
from ..proto.session import parse_transport
from ..proto.tunnel import TunnelTable
from ..stages.dns import DnsResolver
from ..stages.ethernet import frame_packets, sort_frames
from ..stages.gn_services import answer_dhcp, serve_gn_vip
from ..stages.neighbours import answer_arps
from ..stages.receive import decapsulate_datagrams
from ..stages.send import encapsulate_packets
from ..stages.signalling import DirectionBroker
from ..testing.traffic import (
    ADAPTER_MAC,
    BATCH,
    GN_VIP,
    PEER_VIP,
    arp_request_frame,
    data_frames,
    device_mac,
    device_vip,
    devices_link,
    dhcp_frame,
    gn_frame,
    gn_link,
    udp_packet,
)
from ..testing.tunnels import device_tunnels, keypair_pair, tunnel_pair

#: Devices on the link in the many-device variants (the adapter's default max_devices).
DEVICES = 64


@dataclass
class StageResult:
    stage: str
    what: str
    packets: int
    samples_ns: list[int]  # per-packet cost, one sample per batch

    def summary(self) -> dict:
        ordered = sorted(self.samples_ns)
        median = statistics.median(ordered)
        return {
            "stage": self.stage,
            "what": self.what,
            "packets": self.packets,
            "median_ns": round(median),
            "p99_ns": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "pps_one_core": round(1e9 / median) if median else None,
        }


def _time_batches(
    stage: str, what: str, run_batch: Callable[[], int], seconds: float, warmup: int = 20
) -> StageResult:
    """Call run_batch (returns packets handled) repeatedly for `seconds`."""
    for _ in range(warmup):
        run_batch()
    samples: list[int] = []
    packets = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter_ns()
        n = run_batch()
        samples.append((time.perf_counter_ns() - started) // max(n, 1))
        packets += n
    return StageResult(stage, what, packets, samples)


# --- the benchmarks -------------------------------------------------------------------


def bench_classify(seconds: float) -> StageResult:
    link, table = gn_link(), TunnelTable()
    table.install(tunnel_pair()[0])
    frames, stats = data_frames(), StageStats("classify")

    def run() -> int:
        return len(sort_frames(frames, link, table, 1400, stats).routed)

    return _time_batches("classify", "GN frames to a VIP with a tunnel (1400 B)", run, seconds)


def bench_arp(seconds: float) -> StageResult:
    link = gn_link()
    requests = [arp_request_frame()] * BATCH
    stats = StageStats("arp")

    def run() -> int:
        return len(answer_arps(requests, link, stats))

    return _time_batches("arp", "ARP request for a peer VIP -> reply frame", run, seconds)


def bench_dhcp(seconds: float) -> StageResult:
    link = GnLink(ADAPTER_MAC)  # as registration leaves it
    serve_gn_vip(link, GN_VIP, 16, lease_time=600, mtu=1400)
    discovers = [dhcp_frame(1, xid=0x1234)] * BATCH
    stats = StageStats("dhcp")

    def run() -> int:
        return len(answer_dhcp(discovers, link, stats, 0.0)[0])

    return _time_batches("dhcp", "DISCOVER -> OFFER frame", run, seconds)


def many_devices_classify(count: int = DEVICES) -> tuple[list[bytes], GnLink, TunnelTable]:
    """A batch with one 1400-byte frame from each of `count` devices to the peer, the link,
    and a table with each device's own tunnel to the peer."""
    link, table = devices_link(count), TunnelTable()
    for tunnel in device_tunnels([device_vip(i) for i in range(1, count + 1)]):
        table.install(tunnel)
    frames = [
        gn_frame(udp_packet(device_vip(i), PEER_VIP, 1372), src_mac=device_mac(i))
        for i in range(1, count + 1)
    ]
    return frames, link, table


def bench_classify_devices(seconds: float) -> StageResult:
    frames, link, table = many_devices_classify()
    stats = StageStats("classify")

    def run() -> int:
        return len(sort_frames(frames, link, table, 1400, stats).routed)

    what = f"{DEVICES} devices' frames, each to its own tunnel (1400 B)"
    return _time_batches("classify", what, run, seconds)


def many_devices_arp(count: int = DEVICES) -> tuple[list[bytes], GnLink]:
    """ARP requests for the peer's VIP, one from each of `count` devices, and the link."""
    requests = [
        arp_request_frame(PEER_VIP, device_vip(i), device_mac(i)) for i in range(1, count + 1)
    ]
    return requests, devices_link(count)


def bench_arp_devices(seconds: float) -> StageResult:
    requests, link = many_devices_arp()
    stats = StageStats("arp")

    def run() -> int:
        return len(answer_arps(requests, link, stats))

    what = f"ARP requests from {DEVICES} devices -> reply frames"
    return _time_batches("arp", what, run, seconds)


def many_devices_dhcp(count: int = DEVICES) -> tuple[list[bytes], GnLink]:
    """DISCOVERs, one from each of `count` known devices, and the link (DHCP ready)."""
    discovers = [dhcp_frame(1, xid=0x1000 + i, mac=device_mac(i)) for i in range(1, count + 1)]
    return discovers, devices_link(count, lease_time=600, mtu=1400)


def bench_dhcp_devices(seconds: float) -> StageResult:
    discovers, link = many_devices_dhcp()
    stats = StageStats("dhcp")

    def run() -> int:
        return len(answer_dhcp(discovers, link, stats, 0.0)[0])

    what = f"DISCOVERs from {DEVICES} devices -> OFFER frames"
    return _time_batches("dhcp", what, run, seconds)


def bench_encapsulate(seconds: float) -> StageResult:
    tunnel = tunnel_pair()[0]
    batch = [(tunnel, udp_packet(GN_VIP, PEER_VIP, 1372))] * BATCH
    stats = StageStats("encapsulate")
    return _time_batches(
        "encapsulate",
        "AES-256-GCM seal, 1400 B",
        lambda: len(encapsulate_packets(batch, stats, 0.0)),
        seconds,
    )


def bench_decapsulate(seconds: float) -> StageResult:
    sender, receiver = tunnel_pair()
    table = TunnelTable()
    table.install(receiver)
    packet = udp_packet(GN_VIP, PEER_VIP, 1372)  # sent by the GN side, as its own VIP
    # Datagrams must carry fresh counters: seal ahead, in chunks, outside the timing.
    stats = StageStats("decapsulate")
    result = StageResult("decapsulate", "replay check + AES-256-GCM open, 1400 B", 0, [])
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        chunk = [
            [(sender.seal(packet, 0.0), ("198.51.100.30", 7401)) for _ in range(BATCH)]
            for _ in range(32)
        ]
        for batch in chunk:
            started = time.perf_counter_ns()
            n = len(decapsulate_datagrams(batch, table, stats, 0.0))
            result.samples_ns.append((time.perf_counter_ns() - started) // max(n, 1))
            result.packets += n
    return result


def bench_inject_framing(seconds: float) -> StageResult:
    link = gn_link()
    packets = [udp_packet(PEER_VIP, GN_VIP, 1372)] * BATCH
    stats = StageStats("inject")
    return _time_batches(
        "inject",
        "IPv4 packet -> Ethernet frame to the GN",
        lambda: len(frame_packets(packets, link, stats)),
        seconds,
    )


def bench_signalling_codec(seconds: float) -> StageResult:
    sender, receiver = keypair_pair()
    msg = DirectionRequest(1, "mn.ntm.example", "cn.ntm.example")

    def run() -> int:
        for _ in range(BATCH):
            datagram = sender.seal(T_SIGNAL, encode(msg))
            decode(receiver.open(datagram, parse_transport(datagram)[2]), BodyKind.SESSION)
        return BATCH

    return _time_batches("signalling", "DIRECTION_REQUEST seal + open + decode", run, seconds)


async def _bench_dns_async(seconds: float) -> list[StageResult]:
    stats = StageStats("dns")
    broker = DirectionBroker(stats)
    upstream = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await upstream.bind(("127.0.0.1", 0))

    async def live_tunnel_signalling() -> None:  # answers at once, as with a live tunnel
        async for ask in broker.requests:
            broker.deliver(DirectionResolved(ask.fqdn, Status.OK, PEER_VIP))

    async def stub_upstream() -> None:
        while True:
            data, addr = await upstream.recvfrom(4096)
            reply = DNSRecord.parse(data).reply()
            reply.add_answer(RR("web.example.", QTYPE.A, rdata=A("198.51.100.20"), ttl=60))
            await upstream.sendto(reply.pack(), addr)

    resolver = DnsResolver(broker, upstream.getsockname(), ["ntm.example"], stats)
    results = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(live_tunnel_signalling)
        nursery.start_soon(stub_upstream)
        for name, what in (
            ("cn.ntm.example", "NTM name, live tunnel"),
            ("web.example", "forwarded to a stub upstream on loopback"),
        ):
            query = DNSRecord.question(name).pack()
            samples, packets = [], 0
            deadline = trio.current_time() + seconds
            while trio.current_time() < deadline:
                started = time.perf_counter_ns()
                for _ in range(16):
                    await resolver.answer(query)
                samples.append((time.perf_counter_ns() - started) // 16)
                packets += 16
            results.append(StageResult("dns", what, packets, samples))
        nursery.cancel_scope.cancel()
    upstream.close()
    return results


def run_stage_benchmarks(seconds: float = 1.0) -> list[StageResult]:
    results = [
        bench_classify(seconds),
        bench_classify_devices(seconds),
        bench_arp(seconds),
        bench_arp_devices(seconds),
        bench_dhcp(seconds),
        bench_dhcp_devices(seconds),
        bench_encapsulate(seconds),
        bench_decapsulate(seconds),
        bench_inject_framing(seconds),
        bench_signalling_codec(seconds),
    ]
    results += trio.run(_bench_dns_async, seconds)
    return results
