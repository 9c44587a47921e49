"""Netwatch on a real kernel (root): in a namespace of its own, the stage runs in a child
process (`ip netns exec`, so interface names resolve there) and prints each NetChange as a
JSON line. Each change of address, route or link on a watched interface comes within 1 s,
a burst of commands comes as a change at once and at most one more when it settles, an
excluded interface gives none (also when it is deleted), and an overrun of a small receive
buffer reads as ENOBUFS, then as an overrun.

The veth peers live in a second namespace, so nothing done to one end shows on another
watched interface. Run under `flock /tmp/ntma-netns.lock` (the machine is shared)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

REPO = Path(__file__).parents[1]
SETTLE_S = 0.05
QUIET_S = 0.5  # no further change within this after a burst's changes

CHILD = """
import functools, json, sys, time
import trio
from ntma.observe.spans import StageStats
from ntma.stages.hop import open_hop_channel
from ntma.stages.netwatch import run_netwatch

async def main():
    stats = StageStats("netwatch")
    send, recv = open_hop_channel(1)
    watch = functools.partial(
        run_netwatch, send, stats, exclude=frozenset({"ex0"}), settle_s=float(sys.argv[1])
    )
    async with trio.open_nursery() as nursery:
        watching = await nursery.start(watch)
        offset = time.monotonic() - trio.current_time()
        print(json.dumps({"watching": watching}), flush=True)
        async with recv:
            async for change in recv:
                print(json.dumps({
                    "first_notice": change.at + offset,
                    "sent": time.monotonic(),
                    "kinds": sorted(change.kinds),
                    "ifnames": sorted(change.ifnames),
                    "counters": dict(stats.counters),
                }), flush=True)

trio.run(main)
"""

OVERRUN_CHILD = """
import json, subprocess, sys
import trio
from ntma.io.netlink import NetlinkSocket, parse_messages

async def main():
    async with NetlinkSocket.open(rcvbuf=4096) as nl:
        subprocess.run(["ip", "-batch", "-"], input=sys.stdin.read(), text=True, check=True)
        events, datagrams = [], 0
        with trio.move_on_after(0.5):
            while True:
                batch = await nl.read_batch()
                datagrams += len(batch)
                for datagram in batch:
                    events += parse_messages(datagram)[0]
        print(json.dumps({
            "overruns": nl.overruns,
            "datagrams": datagrams,
            "kinds": [e.kind for e in events],
        }), flush=True)

trio.run(main)
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def sh(ns: str, script: str) -> float:
    """Run `ip` commands in ns, one shell; returns when they are done (monotonic)."""
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-ec", script], check=True)
    return time.monotonic()


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """(watched, peers): nw0 (watched) and ex0 (excluded), each a veth whose peer is up in
    the other namespace, both up in the watched one with IPv6 DAD off."""
    ns, peers = f"ntma-t-nw-{os.getpid()}", f"ntma-t-nwp-{os.getpid()}"
    try:
        ip("netns", "add", ns)
        ip("netns", "add", peers)
        for sysctl in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
            ip("netns", "exec", ns, "sysctl", "-qw", sysctl)
        for name in ("nw0", "ex0"):
            ip("-n", ns, "link", "add", name, "type", "veth", "peer", "name", name, "netns", peers)
            ip("-n", peers, "link", "set", name, "up")
            ip("-n", ns, "link", "set", name, "up")
        yield ns, peers
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", peers], capture_output=True)


class Child:
    """The stage in the namespace; its JSON lines are read by a thread into a queue."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD, str(SETTLE_S)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            text=True,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(json.loads(line))

    def next(self, within: float) -> dict | None:
        try:
            return self.lines.get(timeout=within)
        except queue.Empty:
            return None

    def quiet(self, for_s: float, at_most_s: float = 10.0) -> None:
        """Let the set-up's changes (carrier comes a while after up) pass."""
        deadline = time.monotonic() + at_most_s
        while self.next(for_s) is not None:
            assert time.monotonic() < deadline, "the namespace never went quiet"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def child(namespaces) -> Iterator[Child]:
    ns, _ = namespaces
    child = Child(ns)
    try:
        assert child.next(10) == {"watching": True}
        child.quiet(1.5)
        yield child
    finally:
        child.stop()


def expect_one_change(child: Child, done_at: float, kind: str) -> dict:
    """One burst: a change at its first notice and at most one more when it settles; the
    two merged (kinds and interfaces together, the later counters)."""
    change = child.next(1.0)
    assert change is not None, f"no change within 1 s ({kind})"
    lag_ms = (change["first_notice"] - done_at) * 1000
    settled = child.next(QUIET_S)
    if settled is not None:
        assert child.next(QUIET_S) is None, "a third change for one burst"
        kinds = sorted(set(change["kinds"]) | set(settled["kinds"]))
        ifnames = sorted(set(change["ifnames"]) | set(settled["ifnames"]))
        change = {**settled, "kinds": kinds, "ifnames": ifnames}
    assert kind in change["kinds"] and "nw0" in change["ifnames"], change
    print(f"{kind}: first notice {lag_ms:+.2f} ms from the command's end, {change}")
    return change


def test_each_change_comes_within_a_second_and_a_burst_is_one(namespaces, child):
    ns, _ = namespaces
    done = sh(ns, "ip addr add 192.0.2.10/24 dev nw0")
    expect_one_change(child, done, "addr")
    done = sh(ns, "ip route add default via 192.0.2.1")
    assert expect_one_change(child, done, "route")["kinds"] == ["route"]
    done = sh(
        ns,
        "ip addr flush dev nw0; ip addr add 192.0.2.11/24 dev nw0;"
        " ip route add default via 192.0.2.1",
    )
    burst = expect_one_change(child, done, "route")
    assert {"addr", "route"} <= set(burst["kinds"])
    done = sh(ns, "ip addr flush dev nw0")
    expect_one_change(child, done, "addr")
    done = sh(ns, "ip link set nw0 down")
    down = expect_one_change(child, done, "link")
    assert down["counters"].get("coalesced", 0) == 0


def test_an_excluded_interface_gives_no_change_even_as_it_goes(namespaces, child):
    ns, _ = namespaces
    sh(
        ns,
        "ip addr add 198.51.100.7/24 dev ex0; ip route add 203.0.113.0/24 via 198.51.100.1;"
        " ip -6 addr add 2001:db8::7/64 dev ex0 nodad; ip link set ex0 mtu 1400",
    )
    assert child.next(QUIET_S) is None
    sh(ns, "ip link set ex0 down; ip link set ex0 up")
    assert child.next(QUIET_S) is None
    sh(ns, "ip link del ex0")  # its notices name an interface that is gone
    assert child.next(QUIET_S) is None
    done = sh(ns, "ip addr add 192.0.2.20/24 dev nw0")  # the stage is still there
    assert expect_one_change(child, done, "addr")["counters"]["excluded"] > 10


def test_an_overrun_reads_as_enobufs_then_an_overrun(namespaces):
    ns, _ = namespaces
    commands = "".join(f"addr add 10.200.{n // 250}.{n % 250 + 1}/32 dev nw0\n" for n in range(300))
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", OVERRUN_CHILD],
        input=commands,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=30,
        check=True,
    )
    got = json.loads(proc.stdout)
    print(f"overrun: {got['overruns']} ENOBUFS, then {got['datagrams']} datagrams read")
    assert got["overruns"] == 1  # the kernel reports it once, then delivers what it kept
    assert got["kinds"].count("overrun") == 1 and len(got["kinds"]) > 1
