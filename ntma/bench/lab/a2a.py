"""The adapter-to-adapter row ("ntma-a2a"): the GN behind ntma-adapter reaches ntma-gnb,
the GN behind ntma-adapter2 (both adapters behind cone NATs, the lab's defaults, so the DC
decides a punched route), by name. RTT and TCP both ways from the GN to an echo server and
`iperf3 -s` in ntma-gnb: every packet crosses both adapters and the tunnel between them.

It runs after the ntma row, whose adapter was stopped to log its final path_stats (Table
2); the adapter is started again here and the GN keeps the lease dhclient got.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ...lab import lab_status, ns_run
from .session import (
    BenchRun,
    ensure_adapter,
    gn_resolves,
    start_adapter,
    udp_in_datagrams,
    wait_reachable,
)
from .settings import ADAPTER2, GNB, GNB_NAME, BenchError, one_line, wait_until

GN_NAME = "gn.ntm.example"


def _gnb_ipv4() -> list[str]:
    info = json.loads(ns_run(GNB, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    return [a["local"] for a in info.get("addr_info", []) if a["family"] == "inet"]


def _lease_gnb(vip: str) -> float:
    """busybox udhcpc in ntma-gnb, once (its script sets address, route and DNS); the
    seconds until gnb has `vip`."""
    started = time.monotonic()
    cmd = ["udhcpc", "-n", "-q", "-i", "eth0", "-t", "5", "-T", "2"]
    proc = ns_run(GNB, *cmd, check=False, timeout=40)
    if proc.returncode != 0:
        raise BenchError(f"udhcpc in {GNB}: {one_line(proc.stdout + proc.stderr)[-300:]}")
    wait_until(lambda: vip in _gnb_ipv4(), 10.0, f"{GNB} to have {vip}")
    return round(time.monotonic() - started, 2)


def _pair_route(run_: BenchRun) -> dict[str, Any] | None:
    """The DC's last decision for the pair gn / gnb (either asking)."""
    routes = lab_status(run_.lab.run_dir)["routes"]
    pair = [r for r in routes if {r["requester"], r["target"]} == {GN_NAME, GNB_NAME}]
    return pair[-1] if pair else None


def setup_a2a(run_: BenchRun, entry: dict[str, Any]) -> None:
    if run_.ntma_error:
        raise BenchError(run_.ntma_error)
    ensure_adapter(run_)
    vip = start_adapter(run_, "adapter2")
    entry["dhcp_s"] = _lease_gnb(vip)
    entry["gnb_address"] = vip
    started = time.monotonic()
    resolved = gn_resolves(GNB_NAME)
    if resolved != vip:
        raise BenchError(f"dig {GNB_NAME} gave {resolved}, adapter2 registered {vip}")
    entry["resolve_s"] = round(time.monotonic() - started, 2)
    entry["ready_s"] = wait_reachable(vip)
    decided = _pair_route(run_)
    entry["route"] = decided["route"] if decided else None
    run_.start_servers(GNB)
    into_adapter2 = udp_in_datagrams(ADAPTER2)
    try:
        run_.measure(entry, vip, server_ns=GNB)
    finally:
        run_.stop_servers(GNB)
    # The tunnel's outer UDP into adapter2 (data over UDP end to end, both adapters).
    entry["udp_datagrams_into_adapter2"] = udp_in_datagrams(ADAPTER2) - into_adapter2
