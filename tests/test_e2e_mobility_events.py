"""Restarts, NAT resets and a departure end to end on the namespace lab (the moves are in
test_e2e_mobility.py), one lab per cell, with the same probes across the event: a UDP echo
stream and a slowed TCP download (one session, no retries), both by name.

- restart (`lab_restart`: SIGKILL, start again, registered): of cn, the server side (its
  http.server and echo server are other processes and live on; only the ntma daemon
  restarts), then of mn, the client side; the stream resumes within seconds with nothing
  done on the other end, the DC re-directs the tunnel (`route_updated`, restarted), and the
  TCP download lives through it too (the VIP comes back on the new TUN; TCP retransmits);
- NAT reset (`lab_nat_reset`: mn's router's conntrack flushed): behind a symmetric NAT the
  mapping changes (the DC sees mn moved and re-directs: direct to a public cn, through the
  relay to a cone one), behind a cone NAT it comes back the same; the stream resumes within
  one keep-alive interval plus a margin either way, and the download finishes;
- departure: cn's daemon killed and not restarted: once the DC has missed its keep-alives,
  mn's resolver answers cn's name NOERROR without an address, and mn no longer holds a
  tunnel to cn (its final log lists none).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import lab_nat_reset, lab_restart, log_size, ns_run, stop_daemon

from .mobility_util import (
    check_download,
    check_reaches,
    check_stream,
    diag,
    events_since,
    fqdn,
    offsets,
    report,
    route_updates,
    span_event,
    wait_route_updated,
)
from .netns_util import dig, wait_for

pytestmark = pytest.mark.netns

RESTART_S = 1.5  # about how long `lab restart` takes (kill, start, registered: ~0.5 s)
GAP_BOUND_S = 5.0  # generous: the targets are the benchmark's
NAT_RESET_MARGIN_S = 3.0  # beyond one keep-alive interval
OFFLINE_WAIT_S = 30.0  # the DC's keep-alive misses (3 x 5 s) and then some
CN, MN = fqdn("cn"), fqdn("mn")


def _keepalive_s(state: Any, name: str) -> float:
    """The keep-alive interval the DC told `name` when it registered."""
    registered = events_since(state, {}, name, "registered")
    assert registered, f"{name} never registered"
    return float(registered[-1]["keepalive_s"])


# --------------------------------------------------------------------------- restarts


@pytest.mark.parametrize("node", ["cn", "mn"], ids=["11a-restart-cn-server", "11b-restart-mn"])
def test_stream_and_download_survive_a_restart(node: str, tmp_path: Path, open_lab: Any) -> None:
    run_dir = tmp_path / "run"
    with open_lab(run_dir, mn_nat="cone", cn_nat="none") as state:
        old = state.daemons[node].pid

        def restart() -> tuple[float, float, dict[str, Any]]:
            record = lab_restart(run_dir, node)
            return record["killed_at"], record["ready_at"], record

        sp = span_event(state, tmp_path, "mn", "cn", restart, event_s=RESTART_S)
        report(f"11-restart-{node}", sp)
        assert sp.records["old_pid"] == old and sp.records["pid"] != old
        check_stream(state, sp, GAP_BOUND_S)
        updates = wait_route_updated(state, sp.since, {"restarted"}, (MN, CN))
        print(f"  route_updated: {[(u['cause'], u['route']) for u in updates]}")
        check_reaches(state, sp.since, updates, {"mn": "cone", "cn": "none"})
        assert events_since(state, sp.since, "dc", "node_restarted"), diag(state, sp.since)
        check_download(state, sp)


# --------------------------------------------------------------------------- NAT resets

NAT_RESETS = [
    # mn's NAT, cn's NAT, the route, is a re-direction expected (the mapping changes)
    ("symmetric", "none", "direct", True),
    ("symmetric", "cone", "relay", True),
    ("cone", "cone", "punch", False),
]


@pytest.mark.parametrize(
    ("mn_nat", "cn_nat", "route", "remapped"),
    NAT_RESETS,
    ids=[f"12-nat-reset-mn-{m}_cn-{c}" for m, c, *_ in NAT_RESETS],
)
def test_stream_resumes_after_a_nat_reset(
    mn_nat: str, cn_nat: str, route: str, remapped: bool, tmp_path: Path, open_lab: Any
) -> None:
    run_dir = tmp_path / "run"
    with open_lab(run_dir, mn_nat=mn_nat, cn_nat=cn_nat) as state:
        keepalive = _keepalive_s(state, "mn")

        def reset() -> tuple[float, float, dict[str, Any]]:
            began = time.monotonic()
            record = lab_nat_reset(run_dir, "mn")
            return began, record["at"], record

        sp = span_event(state, tmp_path, "mn", "cn", reset, event_s=keepalive)
        report(f"12-nat-reset-mn-{mn_nat}_cn-{cn_nat}", sp)
        assert sp.records["flushed"] >= 1
        check_stream(state, sp, keepalive + NAT_RESET_MARGIN_S)
        check_download(state, sp)
        if remapped:
            updates = wait_route_updated(
                state, sp.since, {"moved"}, (MN, CN), timeout=keepalive + NAT_RESET_MARGIN_S
            )
            print(f"  route_updated: {[(u['cause'], u['route']) for u in updates]}")
            assert updates[-1]["route"] == route, f"{updates[-1]}\n{diag(state, sp.since)}"
            check_reaches(state, sp.since, updates, {"mn": mn_nat, "cn": cn_nat})
        else:
            print(f"  route_updated: {route_updates(state, sp.since)}")


# --------------------------------------------------------------------------- departure


def _dig_full(ns: str, name: str) -> str:
    return ns_run(ns, "dig", "+time=5", "+tries=1", name, check=False).stdout


@pytest.mark.slow
def test_departed_peer_answers_noerror_without_address(tmp_path: Path, open_lab: Any) -> None:
    with open_lab(tmp_path / "run", mn_nat="cone", cn_nat="none") as state:
        vip = dig("ntma-mn", CN)
        assert vip, "cn.ntm.example did not resolve before the departure"
        wait_for(lambda: events_since(state, {}, "mn", "tunnel_up"), 10, "mn's tunnel to cn")
        since = offsets(state)
        pid = state.daemons["cn"].pid
        assert pid
        os.kill(pid, signal.SIGKILL)  # cn's daemon, not restarted
        killed = time.monotonic()
        dormant = wait_for(
            lambda: [e for e in events_since(state, since, "dc", "tunnels_dormant")
                     if e.get("fqdn") == CN],
            OFFLINE_WAIT_S,
            "the DC to find cn gone",
        )  # fmt: skip
        print(f"\n13-departure: the DC marked cn offline {time.monotonic() - killed:.1f} s on")
        assert dormant[-1]["told"] == 1, f"{dormant[-1]}\n{diag(state, since)}"

        answer = _dig_full("ntma-mn", CN)
        print(answer)
        assert re.search(r"status: NOERROR", answer), answer
        assert re.search(r"ANSWER: 0,", answer), answer
        assert not route_updates(state, since), diag(state, since)

        # mn holds no tunnel to cn: on SIGTERM a node logs tunnel_closed for each it holds
        before_stop = log_size(state, "mn")
        stop_daemon(state, "mn")
        final = events_since(state, {"mn": before_stop}, "mn", "tunnel_closed", "stopped")
        assert final and final[-1]["event"] == "stopped", final
        held = [e for e in final if e["event"] == "tunnel_closed" and e.get("peer") == CN]
        assert not held, f"mn still held its tunnel to cn: {held}\n{diag(state, since)}"
