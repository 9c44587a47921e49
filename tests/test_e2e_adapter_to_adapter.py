"""Adapter to adapter on the namespace lab (`--adapters 2`): the GN behind the first adapter
(ntma-gn, gn.ntm.example) and the GN behind the second (ntma-gnb, gnb.ntm.example) reach
each other by name, both ways, TCP and UDP, with nothing of ours running on either GN: the
real ISC dhclient in ntma-gn and busybox udhcpc in ntma-gnb take their VIPs and DNS from
their adapters, curl fetches a file served by python3's http.server on the other GN, and
nc -u sends a datagram each way.

One lab per NAT cell (the two adapters behind cone or symmetric NATs, both behind the first
adapter's NAT, both public). The DC's decision for the pair must be the one the NATs call
for (punch for two cone NATs, relay when a symmetric NAT is involved, direct for the same
NAT or public ends), and the initiating adapter's `tunnel_up` must say it used that route.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import RS_IP, LabState, lab_status, log_events, ns_run

from .netns_util import (
    DIAG_EVENTS,
    expected_route,
    gn_dhclient,
    nc_one_way,
    serve_dir,
    stop,
    wait_for,
)

pytestmark = pytest.mark.netns

GN, GNB = "ntma-gn", "ntma-gnb"
GN_NAME, GNB_NAME = "gn.ntm.example", "gnb.ntm.example"
#: GN namespace -> the adapter daemon it sits behind
ADAPTER_OF = {GN: "adapter", GNB: "adapter2"}
ADAPTER_NS = {"adapter": "ntma-adapter", "adapter2": "ntma-adapter2"}
DAEMON_BY_FQDN = {GN_NAME: "adapter", GNB_NAME: "adapter2"}
PORT = 8080
FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Cell:
    a_nat: str  # the first adapter's NAT
    b_nat: str  # adapter2's: none | cone | symmetric | same (behind the first adapter's NAT)

    @property
    def route(self) -> str:
        return expected_route(self.a_nat, self.b_nat)

    @property
    def id(self) -> str:
        return f"a-{self.a_nat}_b-{self.b_nat}"


CELLS = [
    *(Cell(a, b) for a in ("cone", "symmetric") for b in ("cone", "symmetric")),
    Cell("cone", "same"),
    Cell("none", "none"),
]


# --------------------------------------------------------------------------- helpers


def _events(state: LabState, name: str, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(state.daemons[name].log) if e.get("event") == event]


def _vip(state: LabState, adapter: str) -> str:
    registered = _events(state, adapter, "registered")
    assert registered, f"{adapter} never registered"
    return registered[-1]["vip"]


def _v4(ns: str, ifname: str = "eth0") -> list[str]:
    info = json.loads(ns_run(ns, "ip", "-j", "addr", "show", ifname).stdout)[0]
    return [a["local"] for a in info.get("addr_info", []) if a["family"] == "inet"]


def _diag(state: LabState) -> str:
    """What the DC, the relay and both adapters said about NATs, routes and tunnels."""
    status = lab_status(state.run_dir)
    lines = [f"nat_types={status['nat_types']}", f"routes={status['routes']}"]
    for name in ("dc", "relay", "adapter", "adapter2"):
        path = Path(state.daemons[name].log)
        for e in log_events(path) if path.exists() else []:
            if e.get("event") in DIAG_EVENTS or e.get("level") in ("warning", "error"):
                lines.append(f"{name}: {json.dumps(e)[:400]}")
    return "\n".join(lines)


def _pair_routes(state: LabState) -> list[dict[str, Any]]:
    """The DC's route decisions between the two GNs (either asking), oldest first."""
    routes = lab_status(state.run_dir)["routes"]
    return [r for r in routes if {r["requester"], r["target"]} == {GN_NAME, GNB_NAME}]


def _udhcpc(ns: str) -> Any:
    """busybox udhcpc, once: its default script sets address, route and resolv.conf."""
    cmd = ["udhcpc", "-n", "-q", "-i", "eth0", "-t", "5", "-T", "2"]
    return ns_run(ns, *cmd, check=False, timeout=40)


def _curl_sha256(client: str, url: str) -> str:
    fetched = ns_run(
        client, "sh", "-c", f"curl -sS --max-time 20 {url} | sha256sum", check=False, timeout=30
    )
    return fetched.stdout.split()[0] if fetched.stdout else fetched.stderr


# --------------------------------------------------------------------------- the lab per cell


@pytest.fixture(scope="module", params=CELLS, ids=[c.id for c in CELLS])
def cell_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, open_lab: Any
) -> Iterator[tuple[Cell, LabState, Path, dict[str, bytes]]]:
    """The lab of one cell, a file server on each GN, both GNs leased; torn down after."""
    cell: Cell = request.param
    tmp = tmp_path_factory.mktemp(f"a2a-{cell.id}")
    options = {"adapters": 2, "adapter_nat": cell.a_nat, "adapter2_nat": cell.b_nat}
    with open_lab(tmp / "run", **options) as state:
        files = {ns: os.urandom(FILE_BYTES) for ns in ADAPTER_OF}
        servers = []
        try:
            for ns, data in files.items():
                www = tmp / f"www-{ns}"
                www.mkdir()
                (www / "file.bin").write_bytes(data)
                servers.append(serve_dir(ns, www, tmp / f"http-{ns}.log", PORT))
            lease = gn_dhclient(tmp)
            assert lease.returncode == 0, lease.stderr + _diag(state)
            lease = _udhcpc(GNB)
            assert lease.returncode == 0, lease.stdout + lease.stderr + _diag(state)
            wait_for(lambda: _v4(GNB), 10, "udhcpc's script to set gnb's address")
            yield cell, state, tmp, files
        finally:
            for server in servers:
                stop(server)
            gn_dhclient(tmp, "-x")  # stop the client (no release)


def test_each_gn_has_the_vip_its_adapter_registered(cell_lab) -> None:
    _, state, _, _ = cell_lab
    vips = {ns: _vip(state, adapter) for ns, adapter in ADAPTER_OF.items()}
    assert vips[GN] != vips[GNB]
    for ns, vip in vips.items():
        assert _v4(ns) == [vip]


def test_the_dc_decides_the_route_the_nats_call_for(cell_lab) -> None:
    cell, state, _, _ = cell_lab
    dig = ns_run(GN, "dig", "+short", "+time=20", "+tries=1", GNB_NAME, check=False)
    assert dig.stdout.strip() == _vip(state, "adapter2"), dig.stdout + dig.stderr + _diag(state)
    routes = _pair_routes(state)
    assert routes, "the DC decided no route between the GNs\n" + _diag(state)
    decided = routes[-1]
    assert decided["route"] == cell.route, _diag(state)
    if cell.b_nat == "same":
        assert "same NAT" in decided["why"], decided
    initiator = DAEMON_BY_FQDN[decided["initiator"] or decided["requester"]]
    up = wait_for(
        lambda: [
            e
            for e in _events(state, initiator, "tunnel_up")
            if e.get("tunnel") == decided["tunnel_id"]
        ],
        10,
        f"{initiator}'s tunnel_up for tunnel {decided['tunnel_id']}",
    )
    assert up[-1].get("route") == cell.route, f"{initiator}: {up[-1]}\n" + _diag(state)
    _check_endpoint(cell.route, up[-1], "adapter2" if initiator == "adapter" else "adapter")


def _check_endpoint(route: str, up: dict[str, Any], peer: str) -> None:
    """Where the initiator sends: the RS (relay), the peer adapter's own address (direct:
    public, or its address on the shared NAT's LAN), or its NAT's mapping (punch)."""
    host = up["peer_endpoint"].rsplit(":", 1)[0]
    own = _v4(ADAPTER_NS[peer])
    if route == "relay":
        assert host == RS_IP, up
    elif route == "direct":
        assert host in own, (up, own)
    else:
        assert host != RS_IP and host not in own, (up, own)


@pytest.mark.parametrize(("client", "server", "name"), [(GN, GNB, GNB_NAME), (GNB, GN, GN_NAME)])
def test_tcp_by_name(cell_lab, client: str, server: str, name: str) -> None:
    """curl on one GN fetches the file the other GN serves, by the other's name."""
    _, state, _, files = cell_lab
    digest = _curl_sha256(client, f"http://{name}:{PORT}/file.bin")
    assert digest == hashlib.sha256(files[server]).hexdigest(), (
        f"{client} -> {name}: {digest}\n" + _diag(state)
    )


@pytest.mark.parametrize(
    ("sender", "receiver", "name", "port"),
    [(GN, GNB, GNB_NAME, 9400), (GNB, GN, GN_NAME, 9401)],
)
def test_udp_by_name(cell_lab, sender: str, receiver: str, name: str, port: int) -> None:
    _, state, tmp, _ = cell_lab
    got = nc_one_way(sender, receiver, name, port, tmp)
    assert f"from {sender} to {receiver}" in got, f"UDP {sender} -> {name} lost\n" + _diag(state)


def test_every_decision_for_the_pair_is_the_cells_route(cell_lab) -> None:
    """After traffic both ways (the second GN asking too), no decision disagrees."""
    cell, state, _, _ = cell_lab
    routes = _pair_routes(state)
    assert routes and {r["route"] for r in routes} == {cell.route}, _diag(state)
