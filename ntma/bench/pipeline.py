"""The whole node pipeline in process, fake TUN and UDP at both ends (no kernel).

Two NTM nodes and the DC on a FakeNetwork: packets written into mn's fake TUN come
out of cn's, through classify, encapsulate, UDP send, UDP receive, decapsulate and
TUN write. Measured: packets/s at saturation (batches of 64 offered back to back),
per-packet latency at light load (one packet in flight), and, separately, what one
memory-channel hop costs, so the hops can be told apart from the stages' work.
"""

from __future__ import annotations

import statistics
import time

import trio

from ..io.packetio import BATCH_MAX
from ..stages.channels import DATA_QUEUE_BATCHES, SIGNAL_QUEUE_BATCHES
from ..stages.hop import open_hop_channel
from ..testing.traffic import udp_packet
from ..testing.world import FakeNode, start_fake_world

HOPS_ON_DATA_PATH = 6  # tun_read>classify>encap>udp_send ... udp_receive>decap>tun_write


async def _light_load(mn: FakeNode, cn: FakeNode, count: int) -> list[int]:
    packet = udp_packet(mn.vip, cn.vip, 64)
    latencies = []
    for _ in range(count):
        started = time.perf_counter_ns()
        await mn.tun.inject([packet])
        await cn.tun.written.receive()
        latencies.append(time.perf_counter_ns() - started)
    return latencies


async def _saturation(mn: FakeNode, cn: FakeNode, seconds: float) -> tuple[float, int, int]:
    batch = [udp_packet(mn.vip, cn.vip, 1372)] * 64
    sent = received = 0
    done = trio.Event()

    async def sink() -> None:
        nonlocal received
        while not done.is_set() or received < sent:
            with trio.move_on_after(0.5) as scope:
                received += len(await cn.tun.written.receive())
            if scope.cancelled_caught:
                return

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink)
        while time.perf_counter() - started < seconds:
            await mn.tun.inject(batch)
            sent += len(batch)
        done.set()
    elapsed = time.perf_counter() - started
    return received / elapsed, sent, received


async def _hop_latency(open_channel, stages: int = HOPS_ON_DATA_PATH, rounds: int = 3000) -> int:
    """Median ns per hop for one item in flight through a chain of `stages` forwarding
    tasks (light load: every receiver is parked when its item arrives)."""
    ends = [open_channel(DATA_QUEUE_BATCHES) for _ in range(stages + 1)]

    async def forward(inbox, out) -> None:
        async with inbox, out:
            async for item in inbox:
                await out.send(item)

    latencies = []
    async with trio.open_nursery() as nursery:
        for i in range(stages):
            nursery.start_soon(forward, ends[i][1], ends[i + 1][0])
        first, last = ends[0][0], ends[-1][1]
        for _ in range(rounds):
            started = time.perf_counter_ns()
            await first.send(started)
            await last.receive()
            latencies.append(time.perf_counter_ns() - started)
        nursery.cancel_scope.cancel()
    return round(statistics.median(latencies) / (stages + 1))


async def _scheduler_pass_ns(rounds: int = 20000) -> int:
    """ns for one pass of Trio's run loop with one task runnable: a bare checkpoint.
    Every hop between stages costs at least one such pass."""
    started = time.perf_counter_ns()
    for _ in range(rounds):
        await trio.lowlevel.cancel_shielded_checkpoint()
    return (time.perf_counter_ns() - started) // rounds


async def _run(seconds: float, light_count: int) -> dict:
    async with trio.open_nursery() as nursery:
        _, nodes = await start_fake_world(nursery, depth=4096)
        mn, cn = nodes["mn"], nodes["cn"]
        with trio.fail_after(10):
            await mn.pipe.broker.resolve("cn.ntm.example")
        hop_ns = await _hop_latency(open_hop_channel)
        trio_hop_ns = await _hop_latency(trio.open_memory_channel)
        pass_ns = await _scheduler_pass_ns()
        light = await _light_load(mn, cn, light_count)
        pps, sent, received = await _saturation(mn, cn, seconds)
        stage_work = {s["stage"]: s["p50_ns"] for s in mn.pipe.spans.summaries()}
        stage_work.update({f"cn.{s['stage']}": s["p50_ns"] for s in cn.pipe.spans.summaries()})
        nursery.cancel_scope.cancel()
    ordered = sorted(light)
    return {
        "light_load": {
            "packets": len(light),
            "latency_median_ns": round(statistics.median(ordered)),
            "latency_p99_ns": ordered[int(0.99 * (len(ordered) - 1))],
        },
        "saturation": {
            "packets_per_s": round(pps),
            "offered": sent,
            "delivered": received,
            "packet_bytes": 1400,
            "batch": 64,
        },
        "channel_hop_ns": hop_ns,
        "trio_memory_channel_hop_ns": trio_hop_ns,
        "scheduler_pass_ns": pass_ns,
        "hops_on_data_path": HOPS_ON_DATA_PATH,
        "channel_sizes": {
            "data_batches": DATA_QUEUE_BATCHES,
            "signalling_batches": SIGNAL_QUEUE_BATCHES,
            "batch_max": BATCH_MAX,
        },
        "stage_p50_ns_per_packet": stage_work,
    }


def run_pipeline_benchmark(seconds: float = 2.0, light_count: int = 2000) -> dict:
    return trio.run(_run, seconds, light_count)
