"""The setups measured on the lab, and the switch between them: the adapter ("ntma"), then
ntma-adapter as a plain router ("plain", the ceiling); adapter to adapter ("ntma-a2a") is in
`a2a.py`, the IPv6 rows ("ntma-v6", "ntma-u6") in `ipv6.py`, the userspace tunnels in
`tunnels.py`. `SETUP_FUNCS` is the table `run_lab_bench` walks, in the documented order
(but for the rows on a lab of their own, `plan.py`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...lab import (
    ADAPTER_GN_IFACE,
    GN_IFACE,
    STATS_INTERVAL,
    daemon_alive,
    ip,
    ns_run,
    stop_daemon,
)
from .a2a import setup_a2a
from .ipv6 import setup_ntma_u6, setup_ntma_v6
from .results import TABLE2_PATHS, latest_paths, read_table2
from .session import (
    BenchRun,
    dhclient_files,
    gn_ipv4,
    gn_resolves,
    lease_gn,
    start_adapter,
    wait_reachable,
)
from .settings import (
    ADAPTER,
    ADAPTER_NFT_TABLES,
    ADAPTER_STOP_TIMEOUT_S,
    ADAPTER_WAN,
    BENCH_NFT_TABLE,
    CN_NAME,
    CN_PUBLIC,
    GN,
    GN_IP,
    GN_NET,
    GN_ROUTED_MTU,
    ROUTER_IP,
    BenchError,
    probe_cmd,
    wait_until,
)
from .tunnels import setup_openvpn, setup_tinc, setup_wireguard


def setup_ntma(run_: BenchRun, entry: dict[str, Any]) -> None:
    if run_.ntma_error:
        raise BenchError(run_.ntma_error)
    start_adapter(run_)
    # Table 2 from this start of the adapter on (an IPv6 row may have run it before).
    run_.adapter_log_offset = run_.lab.daemons["adapter"].log_offset
    entry["dhcp_s"] = lease_gn(run_)
    entry["gn_address"] = ", ".join(gn_ipv4())
    started = time.monotonic()
    vip = gn_resolves(CN_NAME)
    entry["resolve_s"] = round(time.monotonic() - started, 2)
    entry["ready_s"] = wait_reachable(vip)
    log = run_.lab.daemons["adapter"].log

    def arp_then_light_snapshot() -> None:
        """ARP requests, then the adapter's next path_stats: Table 2 before any bulk load
        (its rings then hold the RTT probe's one-at-a-time packets and the ARP requests)."""
        arp = json.loads(
            ns_run(
                GN,
                *probe_cmd("arp", GN_IFACE, vip, run_.arp_count),
                timeout=60 + run_.arp_count * 0.25,
            ).stdout
        )
        entry["arp_probe_us"] = {k: arp.get(k) for k in ("count", "lost", "median_us", "p99_us")}
        offset = log.stat().st_size
        with contextlib.suppress(BenchError):  # none within a few intervals: none at all
            wait_until(
                lambda: len(latest_paths(log, offset)) == len(TABLE2_PATHS),
                2 * STATS_INTERVAL + 1,
                "the adapter's next path_stats",
            )
        run_.table2_light = read_table2(log, offset)

    run_.measure(entry, vip, between=arp_then_light_snapshot)


def _nft_tables(ns: str) -> list[tuple[str, str]]:
    out = ns_run(ns, "nft", "list", "tables", check=False).stdout
    return [tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("table ")]


def route_gn(run_: BenchRun) -> None:
    """The adapter stopped, ntma-adapter becomes a plain router + masquerade for the GN."""
    state = run_.lab
    if state.daemons["adapter"].pid and daemon_alive(state, "adapter"):
        stop_daemon(state, "adapter", timeout=ADAPTER_STOP_TIMEOUT_S)
    pid, _ = dhclient_files(run_)
    if Path(pid).exists():
        ns_run(GN, "dhclient", "-x", "-pf", pid, check=False, timeout=30)
    left = [t for t in _nft_tables(ADAPTER) if t in ADAPTER_NFT_TABLES]
    for family, table in left:
        run_.notes.append(f"the adapter left nft table {family} {table}; removed")
        ns_run(ADAPTER, "nft", "delete", "table", family, table, check=False)
    ip(GN, "addr", "flush", "dev", GN_IFACE)
    ip(GN, "link", "set", GN_IFACE, "mtu", str(GN_ROUTED_MTU))
    ip(ADAPTER, "addr", "replace", f"{ROUTER_IP}/24", "dev", ADAPTER_GN_IFACE)
    ip(GN, "addr", "add", f"{GN_IP}/24", "dev", GN_IFACE)
    ip(GN, "route", "replace", "default", "via", ROUTER_IP)
    ns_run(ADAPTER, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    ruleset = (
        f"add table ip {BENCH_NFT_TABLE}\n"
        f"delete table ip {BENCH_NFT_TABLE}\n"
        f"table ip {BENCH_NFT_TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    ip saddr {GN_NET} oifname "{ADAPTER_WAN}" masquerade\n'
        "  }\n"
        "}\n"
    )
    ns_run(ADAPTER, "nft", "-f", "-", input=ruleset)
    wait_reachable(CN_PUBLIC)
    run_.gn_routed = True


def setup_plain(run_: BenchRun, entry: dict[str, Any]) -> None:
    entry["ready_s"] = wait_reachable(CN_PUBLIC)
    run_.measure(entry, CN_PUBLIC)


SETUP_FUNCS: dict[str, Callable[[BenchRun, dict[str, Any]], None]] = {
    "ntma": setup_ntma,
    "ntma-v6": setup_ntma_v6,
    "ntma-u6": setup_ntma_u6,
    "ntma-a2a": setup_a2a,
    "plain": setup_plain,
    "tinc": setup_tinc,
    "wireguard-go": setup_wireguard,
    "openvpn": setup_openvpn,
}
