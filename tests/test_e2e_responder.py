"""The responder side on the lab (issue 12, item 3): servers on an unmodified GN (HTTP, a long
TCP session, a UDP service) reached by name from NTM nodes, with the adapter public, behind a
cone NAT and behind a symmetric NAT. cn is public, mn behind a cone NAT: each cell has both a
public and a NATed requester, so every route the DC can decide toward a GN is taken (direct,
the adapter initiating through its mapping, punch, relay), and the DC's decision must be the
one the NATs call for. Nothing of ours runs on the GN: dhclient takes its VIP."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import LabState, lab_status, ns_run

from .netns_util import expected_route, gn_dhclient, iperf, nc_one_way, serve_dir, stop

pytestmark = pytest.mark.netns

GN, GN_NAME = "ntma-gn", "gn.ntm.example"
REQUESTERS = {"ntma-cn": ("cn.ntm.example", "none"), "ntma-mn": ("mn.ntm.example", "cone")}
ADAPTER_NATS = ("none", "cone", "symmetric")
FILE_BYTES = 512 * 1024
LONG_TCP_S = 5


@pytest.fixture(scope="module", params=ADAPTER_NATS, ids=[f"adapter-{n}" for n in ADAPTER_NATS])
def responder_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, open_lab: Any
) -> Iterator[tuple[str, LabState, Path, bytes]]:
    nat = request.param
    tmp = tmp_path_factory.mktemp(f"responder-{nat}")
    with open_lab(tmp / "run", adapter_nat=nat, mn_nat="cone", cn_nat="none") as state:
        data = os.urandom(FILE_BYTES)
        www = tmp / "www"
        www.mkdir()
        (www / "file.bin").write_bytes(data)
        server = serve_dir(GN, www, tmp / "http.log")
        try:
            lease = gn_dhclient(tmp)
            assert lease.returncode == 0, lease.stderr
            yield nat, state, tmp, data
        finally:
            stop(server)
            gn_dhclient(tmp, "-x")


def _routes_to_gn(state: LabState, requester: str) -> list[dict[str, Any]]:
    routes = lab_status(state.run_dir)["routes"]
    return [r for r in routes if (r["requester"], r["target"]) == (requester, GN_NAME)]


@pytest.mark.parametrize("client", list(REQUESTERS))
def test_a_node_fetches_from_the_gn_by_name_on_the_route_the_nats_call_for(
    responder_lab, client: str
) -> None:
    nat, state, _, data = responder_lab
    fetched = ns_run(
        client,
        "sh",
        "-c",
        f"curl -sS --max-time 30 http://{GN_NAME}:8080/file.bin | sha256sum",
        timeout=40,
    )
    assert fetched.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    fqdn, client_nat = REQUESTERS[client]
    routes = _routes_to_gn(state, fqdn)
    assert routes and routes[-1]["route"] == expected_route(client_nat, nat), routes


@pytest.mark.parametrize("client", list(REQUESTERS))
def test_a_udp_service_on_the_gn_is_reached_by_name(responder_lab, client: str) -> None:
    _, _, tmp, _ = responder_lab
    got = nc_one_way(client, GN, GN_NAME, 5353, tmp)
    assert got == f"datagram from {client} to {GN}\n"


def test_a_long_tcp_session_to_the_gn_holds(responder_lab) -> None:
    """iperf3 from mn to a server on the GN for LONG_TCP_S seconds, one connection."""
    _, _, _, _ = responder_lab
    report = iperf("ntma-mn", GN, GN_NAME, LONG_TCP_S)
    sent = report["end"]["sum_sent"]
    received = report["end"]["sum_received"]
    assert sent["seconds"] >= LONG_TCP_S - 0.5
    assert received["bytes"] > 1_000_000 and received["bytes"] <= sent["bytes"]
    assert not report.get("error"), report.get("error")
