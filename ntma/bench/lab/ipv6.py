"""The IPv6 rows: IPv6 inside the tunnel ("ntma-v6") and a tunnel over IPv6 ("ntma-u6").

ntma-v6   "ntma IPv6 inside", on the main lab, which has `vip6=True` when this row runs,
          first on it (settings.RUN_FIRST): the adapter starts, the GN gets its IPv4 lease
          (a dual-stack GN; its DNS server is the lease's) and its own kernel configures an
          address by SLAAC from the adapter's Router Advertisements (fd00:99::/64); the
          adapter learns it from the GN's duplicate address detection and the DC keeps it
          for the GN's name; `dig AAAA cn.ntm.example` gives cn's IPv6 VIP (the `vip6` of
          cn's `registered` event) and makes the tunnel. RTT and TCP both ways to that
          address: IPv6 inside, the tunnel's outer packets IPv4 (the adapter behind its cone
          NAT, as in the ntma row). The adapter is stopped after the row, so the ntma row's
          Table 2 covers that row's traffic alone.
ntma-u6   "ntma IPv6 underlay", on a lab of its own: the adapter and cn public and dual-stack
          (adapter_nat/cn_nat "none", adapter_net/cn_net "dual"), so the DC directs a direct
          path between their IPv6 addresses. The GN to cn's IPv4 VIP, as in the ntma row;
          the tunnel's outer packets are IPv6 (the adapter's `tunnel_up`: route direct, peer
          endpoint 2001:db8::30), which the row checks before it measures.

Both record the adapter's tunnel to cn as its `tunnel_up` says (route, peer endpoint).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from ...lab import LogEvent, daemon_alive, events_named, ns_run, stop_daemon
from .session import (
    BenchRun,
    ensure_adapter,
    gn_ipv4,
    gn_resolves,
    gn_slaac_address,
    wait_reachable,
)
from .settings import (
    ADAPTER_STOP_TIMEOUT_S,
    CN_NAME,
    GN,
    GN_ROUTER6,
    SLAAC_TIMEOUT_S,
    BenchError,
    wait_until,
)

GN_NAME = "gn.ntm.example"
LEARN_TIMEOUT_S = 10.0


def endpoint_host(endpoint: str) -> str:
    """The address of a logged endpoint ("198.51.100.30:7401", "2001:db8::30:7401")."""
    return endpoint.rsplit(":", 1)[0].strip("[]")


def tunnel_to(events: list[LogEvent], peer: str) -> dict[str, Any] | None:
    """The last `tunnel_up` to `peer` among `events`: its route, peer endpoint, and the
    outer packets' family ("ipv4"/"ipv6"), or None."""
    ups = [e for e in events if e.get("event") == "tunnel_up" and e.get("peer") == peer]
    if not ups:
        return None
    up = ups[-1]
    endpoint = str(up.get("peer_endpoint") or "")
    try:
        family = f"ipv{ipaddress.ip_address(endpoint_host(endpoint)).version}"
    except ValueError:
        family = None
    return {"route": up.get("route"), "peer_endpoint": endpoint, "outer": family}


def adapter_tunnel(run_: BenchRun) -> dict[str, Any]:
    """The adapter's tunnel to cn since it last started (waited for: the GN reached cn)."""
    adapter = run_.lab.daemons["adapter"]

    def found() -> dict[str, Any] | None:
        return tunnel_to(events_named(adapter.log, "tunnel_up", offset=adapter.log_offset), CN_NAME)

    return wait_until(found, 10.0, f"the adapter's tunnel_up to {CN_NAME}")


def _cn_registered(run_: BenchRun) -> LogEvent:
    cn = run_.lab.daemons["cn"]
    registered = events_named(cn.log, "registered", offset=cn.log_offset)
    if not registered:
        raise BenchError("cn logged no registered event")
    return registered[-1]


def _wait_learnt(run_: BenchRun, address: str) -> float:
    """Until the adapter learnt the GN's SLAAC `address` and the DC keeps it for the GN's
    name (the adapter's name_registered with it, since the adapter started). A registration
    answered with it is not enough: after a restart the DC still has the address, but the
    adapter drops the GN's packets from it until it learns it again. A ping to the router
    each time: a packet to learn from (if the GN has the router's MAC, else it sends an NS,
    which teaches nothing). Seconds."""
    adapter = run_.lab.daemons["adapter"]
    started = time.monotonic()

    def kept() -> bool:
        events = events_named(adapter.log, "name_registered", offset=adapter.log_offset)
        if any(e.get("fqdn") == GN_NAME and e.get("vip6") == address for e in events):
            return True
        ns_run(GN, "ping", "-6", "-n", "-c", "1", "-W", "1", GN_ROUTER6, check=False)
        return False

    wait_until(kept, LEARN_TIMEOUT_S, f"the DC to keep {address} for {GN_NAME}", 0.2)
    return round(time.monotonic() - started, 2)


def setup_ntma_v6(run_: BenchRun, entry: dict[str, Any]) -> None:
    if run_.ntma_error:
        raise BenchError(run_.ntma_error)
    if not run_.lab.dc.vip6_pool:
        raise BenchError("the lab has no IPv6 VIPs (lab_up vip6=True, `ntma lab up --vip6`)")
    try:
        _measure_v6(run_, entry)
    finally:  # the next row starts the adapter afresh (the ntma row: its Table 2 alone)
        state = run_.lab
        if state.daemons["adapter"].pid and daemon_alive(state, "adapter"):
            stop_daemon(state, "adapter", timeout=ADAPTER_STOP_TIMEOUT_S)


def _measure_v6(run_: BenchRun, entry: dict[str, Any]) -> None:
    entry["dhcp_s"] = ensure_adapter(run_)  # the GN's DNS server: its DHCP lease's
    started = time.monotonic()
    address = wait_until(gn_slaac_address, SLAAC_TIMEOUT_S, f"the GN's SLAAC address in {GN}")
    entry["slaac_s"] = round(time.monotonic() - started, 2)
    entry["gn_address"] = address
    entry["learnt_s"] = _wait_learnt(run_, address)
    started = time.monotonic()
    vip6 = gn_resolves(CN_NAME, 6)
    registered = _cn_registered(run_).get("vip6")
    if vip6 != registered:
        raise BenchError(f"dig AAAA {CN_NAME} gave {vip6}, cn registered {registered}")
    entry["resolve_s"] = round(time.monotonic() - started, 2)
    entry["ready_s"] = wait_reachable(vip6)
    entry.update(adapter_tunnel(run_))
    run_.measure(entry, vip6)


def setup_ntma_u6(run_: BenchRun, entry: dict[str, Any]) -> None:
    if run_.ntma_error:
        raise BenchError(run_.ntma_error)
    if not run_.lab.dc.ipv6:
        raise BenchError("the lab's Internet is IPv4 only (lab_up adapter_net/cn_net dual)")
    entry["dhcp_s"] = ensure_adapter(run_)
    entry["gn_address"] = ", ".join(gn_ipv4())
    started = time.monotonic()
    vip = gn_resolves(CN_NAME)
    entry["resolve_s"] = round(time.monotonic() - started, 2)
    entry["ready_s"] = wait_reachable(vip)
    tunnel = adapter_tunnel(run_)
    entry.update(tunnel)
    if tunnel["outer"] != "ipv6":
        raise BenchError(
            f"the adapter's tunnel to {CN_NAME} is not over IPv6: route {tunnel['route']}, "
            f"to {tunnel['peer_endpoint']}"
        )
    run_.measure(entry, vip)
