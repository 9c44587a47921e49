"""The NAT traversal matrix on the namespace lab: one lab per cell, real clients.

Each cell places the two ends (an NTM node mn, or the general node behind the adapter,
toward the NTM node cn) behind no NAT, a cone NAT (masquerade), a symmetric NAT
(masquerade fully-random) or, for cn, mn's own NAT, and checks:

- the route the DC decides (`lab status` routes, the last decision for the pair):
  direct when either end is public or both share a NAT, punch when both are behind cone
  NATs, relay when a symmetric NAT is involved on a NATed pair;
- the route the initiating end really used (its `tunnel_up` event);
- with `--block-direct` (UDP between the ends dropped on the Internet segment) the DC still
  decides punch, and the initiator falls back to the relay (`route_fallback`) within 10 s;
- traffic: curl of a small file served by `python3 -m http.server` in ntma-cn, a UDP
  datagram each way with `nc -u` (the reverse one by name too), and `iperf3 -t 1`.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import lab_status, log_events, ns_run

from .netns_util import (
    DIAG_EVENTS,
    expected_route,
    gn_dhclient,
    iperf,
    nc_one_way,
    serve_dir,
    stop,
    wait_for,
)

pytestmark = pytest.mark.netns

GN = "ntma-gn"
CN_NAME = "cn.ntm.example"
HELLO = "hello from cn, across the NAT matrix\n"
FALLBACK_WITHIN_S = 10.0
#: fqdn -> the lab daemon that registers it
DAEMON_BY_FQDN = {"mn.ntm.example": "mn", "cn.ntm.example": "cn", "gn.ntm.example": "adapter"}


@dataclass(frozen=True)
class Cell:
    client: str  # "mn": node to node from ntma-mn; "gn": from the GN behind the adapter
    mn_nat: str = "none"
    cn_nat: str = "none"
    adapter_nat: str = "cone"
    block_direct: bool = False

    @property
    def client_nat(self) -> str:
        return self.mn_nat if self.client == "mn" else self.adapter_nat

    @property
    def client_ns(self) -> str:
        return "ntma-mn" if self.client == "mn" else GN

    @property
    def client_fqdn(self) -> str:
        return f"{self.client}.ntm.example"

    @property
    def decided(self) -> str:
        return expected_route(self.client_nat, self.cn_nat)

    @property
    def used(self) -> str:
        return "relay" if self.block_direct else self.decided

    def lab_options(self) -> dict[str, Any]:
        return {
            "mn_nat": self.mn_nat,
            "cn_nat": self.cn_nat,
            "adapter_nat": self.adapter_nat,
            "block_direct": self.block_direct,
        }

    @property
    def id(self) -> str:
        ends = f"{self.client}-{self.client_nat}_cn-{self.cn_nat}"
        return ends + ("_block-direct" if self.block_direct else "")


NATS = ("none", "cone", "symmetric")
CELLS = [
    *(Cell("gn", adapter_nat=a, cn_nat=c) for a in ("cone", "symmetric") for c in NATS),
    *(Cell("mn", mn_nat=m, cn_nat=c) for m in ("cone", "symmetric") for c in NATS),
    Cell("mn", mn_nat="none", cn_nat="none"),
    Cell("mn", mn_nat="cone", cn_nat="same"),
    Cell("mn", mn_nat="cone", cn_nat="cone", block_direct=True),
    Cell("gn", adapter_nat="cone", cn_nat="cone", block_direct=True),
]


# --------------------------------------------------------------------------- helpers


def _events(state: dict[str, Any], name: str, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(state["daemons"][name]["log"]) if e.get("event") == event]


def _vip(state: dict[str, Any], name: str) -> str:
    registered = _events(state, name, "registered")
    assert registered, f"{name} never registered"
    return registered[-1]["vip"]


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def _diag(state: dict[str, Any]) -> str:
    """What the DC and the ends said about NATs, routes and tunnels (for failure messages)."""
    status = lab_status(Path(state["run_dir"]))
    lines = [
        f"nat_types={status['nat_types']}",
        f"routes={status['routes']}",
        f"fallbacks={status['fallbacks']}",
    ]
    for name in ("dc", "relay", "mn", "cn", "adapter"):
        path = Path(state["daemons"][name]["log"])
        if not path.exists():
            continue
        for e in log_events(path):
            if e.get("event") in DIAG_EVENTS or e.get("level") in ("warning", "error"):
                lines.append(f"{name}: {json.dumps(e)[:400]}")
    return "\n".join(lines)


def _pair_route(state: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """The DC's last route decision between fqdns a and b (either requesting)."""
    routes = lab_status(Path(state["run_dir"]))["routes"]
    pair = [r for r in routes if {r["requester"], r["target"]} == {a, b}]
    return pair[-1] if pair else None


def _serve_hello(tmp: Path) -> subprocess.Popen:
    www = tmp / "cn-www"
    www.mkdir()
    (www / "hello.txt").write_text(HELLO)
    return serve_dir("ntma-cn", www, tmp / "http.log")


def _iperf(client_ns: str) -> dict[str, Any]:
    return iperf(client_ns, "ntma-cn", CN_NAME, 1)


# --------------------------------------------------------------------------- the matrix


@pytest.fixture
def cell_lab(cell: Cell, tmp_path: Path, open_lab) -> Any:
    with open_lab(tmp_path / "run", **cell.lab_options()) as state:
        server = _serve_hello(tmp_path)
        try:
            yield state, tmp_path
        finally:
            stop(server)
            if cell.client == "gn":
                gn_dhclient(tmp_path, "-x")  # stop the client (no release)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_nat_matrix(cell: Cell, cell_lab: Any) -> None:
    state, tmp = cell_lab
    client_ns, client_fqdn = cell.client_ns, cell.client_fqdn
    if cell.client == "gn":
        lease = gn_dhclient(tmp)
        assert lease.returncode == 0, lease.stderr
        assert _vip(state, "adapter") in ns_run(GN, "ip", "-4", "-o", "addr").stdout

    # The name lookup makes the client's end ask the DC and build the tunnel first.
    asked = time.time()
    dig = ns_run(client_ns, "dig", "+short", "+time=20", "+tries=1", CN_NAME, check=False)
    assert dig.stdout.strip() == _vip(state, "cn"), f"dig: {dig.stdout}{dig.stderr}\n" + _diag(
        state
    )

    decided = _pair_route(state, client_fqdn, CN_NAME)
    assert decided is not None, "the DC decided no route\n" + _diag(state)
    assert decided["route"] == cell.decided, _diag(state)
    if "same" in (cell.mn_nat, cell.cn_nat):
        assert "same NAT" in decided["why"], decided
    initiator = DAEMON_BY_FQDN.get(decided["initiator"] or decided["requester"], cell.client)
    up = wait_for(
        lambda: [
            e
            for e in _events(state, initiator, "tunnel_up")
            if e.get("tunnel") == decided["tunnel_id"]
        ],
        10,
        f"{initiator}'s tunnel_up for tunnel {decided['tunnel_id']}",
    )
    assert up[-1].get("route") == cell.used, f"{initiator} tunnel_up: {up[-1]}\n" + _diag(state)
    if cell.block_direct:
        fallback = [
            f
            for f in lab_status(Path(state["run_dir"]))["fallbacks"]
            if f["node"] == initiator and f["tunnel"] == decided["tunnel_id"]
        ]
        assert fallback, f"{initiator} logged no route_fallback\n" + _diag(state)
        assert (fallback[-1]["from"], fallback[-1]["to"]) == ("punch", "relay")
        taken = _ts(fallback[-1]) - _ts(decided)
        assert taken <= FALLBACK_WITHIN_S, f"fallback after {taken:.1f}s\n" + _diag(state)
        assert _ts(decided) >= asked - 1  # the decision is this cell's, not an earlier one

    curl = ns_run(
        client_ns,
        "curl",
        "-sS",
        "--max-time",
        "10",
        f"http://{CN_NAME}:8080/hello.txt",
        check=False,
        timeout=20,
    )
    assert curl.stdout == HELLO, f"curl: {curl.stderr}\n" + _diag(state)

    forward = nc_one_way(client_ns, "ntma-cn", CN_NAME, 9300, tmp)
    assert f"from {client_ns}" in forward, "UDP to cn lost\n" + _diag(state)
    backward = nc_one_way("ntma-cn", client_ns, client_fqdn, 9301, tmp)
    assert "from ntma-cn" in backward, f"UDP from cn to {client_fqdn} lost\n" + _diag(state)

    report = _iperf(client_ns)
    assert report["end"]["sum_received"]["bytes"] > 0, report["end"]
