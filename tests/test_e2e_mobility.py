"""Mobility end to end on the namespace lab: an end moves (`lab move`) while a TCP download
by name and a UDP echo stream run across it, one lab per cell.

Each cell: the lab up with the ends' NATs as given, a 4.5 MB file of random bytes served by
`python3 -m http.server` on one end and fetched by name from the other with `curl
--limit-rate` (no retries: the one TCP session must live through the move), a UDP stream
(`python3 -m ntma.lab.traffic`, 100 datagrams a second) to an echo server beside it; the
move while both run; then:

- the download was still running when the move was done, and finished with the right
  sha256;
- the stream resumed after the move (`gap_after` not None, echoes going on after it), its
  gap printed and held to a generous bound (the strict targets are `ntma bench`'s);
- the DC re-directed the tunnel (`route_updated`, cause moved) onto the route the NATs now
  call for, each re-direction seeing both ends' reach as they are now, so a cell passing
  by luck (a public peer roaming alone) is noticed;
- break before make for longer than the DC's keep-alive misses: the DC marked the mover
  offline and told its peer the tunnel was gone (`tunnels_dormant`), and re-directed it
  when the mover came back (cause back_online, or moved: the mover has given the DC up by
  then and registers afresh from its new address);
- for the adapter's moves: the general node kept its address and link and saw nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import MOVE_TARGETS, lab_move, ns_run

from .mobility_util import (
    check_download,
    check_reaches,
    check_stream,
    diag,
    events_since,
    fqdn,
    move_together,
    report,
    span_event,
    wait_route_updated,
)
from .netns_util import gn_dhclient

pytestmark = pytest.mark.netns

GAP_BOUND_S = 5.0  # generous: the targets are the benchmark's


@dataclass(frozen=True)
class Cell:
    id: str
    lab: dict[str, str]  # lab_up's NAT options
    moves: tuple[tuple[str, str], ...]  # (host, network), started together
    route: str  # what the DC decides for the pair after the move
    client: str = "mn"  # downloads and streams...
    server: str = "cn"  # ... from this end's name
    down_for: float = 0.0
    causes: frozenset[str] = field(default=frozenset({"moved"}))
    offline: bool = False  # the DC marks the mover offline meanwhile

    @property
    def nat_after(self) -> dict[str, str]:
        """Each host's NAT mode once the moves are done."""
        nat = {"mn": "cone", "cn": "none", "adapter": "cone"}  # lab_up's defaults
        nat.update({k.removesuffix("_nat"): v for k, v in self.lab.items()})
        nat.update({host: MOVE_TARGETS[to] for host, to in self.moves})
        return nat


CELLS = [
    Cell("1-mn-cone-to-public_cn-public", {"mn_nat": "cone", "cn_nat": "none"},
         (("mn", "public"),), "direct"),
    Cell("2-mn-cone-to-public_cn-cone", {"mn_nat": "cone", "cn_nat": "cone"},
         (("mn", "public"),), "direct"),
    # cn downloads from the mover: the moving end is the server here
    Cell("3-mn-public-to-cone_cn-cone", {"mn_nat": "none", "cn_nat": "cone"},
         (("mn", "cone"),), "punch", client="cn", server="mn"),
    Cell("4-mn-cone-to-symmetric_cn-cone", {"mn_nat": "cone", "cn_nat": "cone"},
         (("mn", "symmetric"),), "relay"),
    Cell("5-cn-public-to-cone_mn-cone", {"mn_nat": "cone", "cn_nat": "none"},
         (("cn", "cone"),), "punch"),
    Cell("6-cn-cone-to-public_mn-cone", {"mn_nat": "cone", "cn_nat": "cone"},
         (("cn", "public"),), "direct"),
    Cell("7a-adapter-cone-to-public_cn-public", {"adapter_nat": "cone", "cn_nat": "none"},
         (("adapter", "public"),), "direct", client="gn"),
    Cell("7b-adapter-cone-to-symmetric_cn-public", {"adapter_nat": "cone", "cn_nat": "none"},
         (("adapter", "symmetric"),), "direct", client="gn"),
    Cell("8-both-move-mn-cone-to-cone_cn-cone-to-cone", {"mn_nat": "cone", "cn_nat": "cone"},
         (("mn", "cone"), ("cn", "cone")), "punch"),
    Cell("9-relayed-mn-symmetric-to-symmetric_cn-symmetric",
         {"mn_nat": "symmetric", "cn_nat": "symmetric"},
         (("mn", "symmetric"),), "relay"),
]  # fmt: skip
#: Break before make: 20 s without a network, longer than the DC's keep-alive misses (15 s).
OUTAGE = Cell(
    "10-mn-cone-to-cone-down-20s_cn-public",
    {"mn_nat": "cone", "cn_nat": "none"},
    (("mn", "cone"),),
    "direct",
    down_for=20.0,
    causes=frozenset({"moved", "back_online"}),
    offline=True,
)


def _gn_view(tmp: Path) -> dict[str, Any]:
    """What the general node could notice: its address, routes, link and lease."""
    addr = json.loads(ns_run("ntma-gn", "ip", "-j", "-4", "addr", "show", "eth0").stdout)
    link = addr[0] if addr else {}
    carrier = ns_run("ntma-gn", "cat", "/sys/class/net/eth0/carrier_changes").stdout.strip()
    return {
        "addresses": [(a["local"], a["prefixlen"]) for a in link.get("addr_info", [])],
        "link": (link.get("ifindex"), link.get("address"), link.get("operstate")),
        "carrier_changes": carrier,
        "routes": ns_run("ntma-gn", "ip", "-4", "route").stdout,
        "lease": (tmp / "dhclient.leases").read_text(),
    }


def run_cell(cell: Cell, tmp: Path, open_lab: Any) -> None:
    run_dir = tmp / "run"

    def move() -> tuple[float, float, list[dict[str, Any]]]:
        if len(cell.moves) == 1:
            ((host, to),) = cell.moves
            records = [lab_move(run_dir, host, to, down_for=cell.down_for)]
        else:
            records = move_together(run_dir, list(cell.moves))
        return (
            min(r["started_at"] for r in records),
            max(r["up_at"] for r in records),
            records,
        )

    with open_lab(run_dir, **cell.lab) as state:
        gn_before = None
        try:
            if cell.client == "gn":
                lease = gn_dhclient(tmp)
                assert lease.returncode == 0, lease.stderr
                gn_before = _gn_view(tmp)
            sp = span_event(state, tmp, cell.client, cell.server, move, event_s=cell.down_for + 0.5)
            report(cell.id, sp)
            check_download(state, sp)
            check_stream(state, sp, cell.down_for + GAP_BOUND_S)
            ends = (fqdn(cell.client), fqdn(cell.server))
            updates = wait_route_updated(state, sp.since, set(cell.causes), ends)
            print(f"  route_updated: {[(u['cause'], u['route']) for u in updates]}")
            why = diag(state, sp.since)
            assert updates[-1]["route"] == cell.route, f"re-directed as {updates[-1]}\n{why}"
            check_reaches(state, sp.since, updates, cell.nat_after)
            if cell.offline:
                mover = fqdn(cell.moves[0][0])
                dormant = events_since(state, sp.since, "dc", "tunnels_dormant")
                assert [e["told"] for e in dormant if e["fqdn"] == mover] == [1], why
            if gn_before is not None:
                assert _gn_view(tmp) == gn_before, "the general node saw the adapter move"
        finally:
            if cell.client == "gn":
                gn_dhclient(tmp, "-x")


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_traffic_spans_a_move(cell: Cell, tmp_path: Path, open_lab: Any) -> None:
    run_cell(cell, tmp_path, open_lab)


@pytest.mark.slow
def test_traffic_spans_a_break_before_make_move(tmp_path: Path, open_lab: Any) -> None:
    """20 s without any network: the DC marks mn offline meanwhile; the stream resumes, and
    TCP retransmits through the gap (curl has no speed limit or timeout to kill it)."""
    started = time.monotonic()
    run_cell(OUTAGE, tmp_path, open_lab)
    print(f"outage cell took {time.monotonic() - started:.1f} s")
