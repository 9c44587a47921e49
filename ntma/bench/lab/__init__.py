"""End-to-end measurements on the namespace lab: the adapter against the userspace tunnels a
user would pick instead, with plain kernel routing as the ceiling, all in ONE run (on a small
machine only ratios within one run mean anything).

The lab's defaults: GN -- ntma-adapter -- cone NAT -- Internet -- ntma-cn (198.51.100.30).
Every measurement runs from the GN's namespace to a server in ntma-cn (`iperf3 -s` and the
UDP echo server of `ntma.bench.udp_rtt`, both dual-stack on [::]). Setups, in the report's
order (the run's but for ntma-v6, which runs first, and ntma-u6, which runs last):

ntma          the adapter; the GN gets its VIP with dhclient and reaches cn.ntm.example (cn's
              VIP) through the NTMobile tunnel. The adapter's path_stats give Table 2.
ntma-v6       "ntma IPv6 inside" (the lab has --vip6), on the adapter's first start: the GN's
              kernel configures an address by SLAAC from the adapter's RAs; GN -> cn's IPv6
              VIP (dig AAAA) inside the tunnel, whose outer packets stay IPv4 (`ipv6.py`).
ntma-u6       "ntma IPv6 underlay", on a lab of its own, built after the others' (adapter and cn
              public and dual-stack): the DC directs a direct path between their IPv6
              addresses; GN -> cn's IPv4 VIP through a tunnel whose outer packets are IPv6.
ntma-a2a      adapter to adapter ("ntma adapter to adapter" in the table; the lab has
              `--adapters 2`): the GN reaches gnb.ntm.example, ntma-gnb behind ntma-adapter2
              (udhcpc there), through both adapters, each behind a cone NAT (punched); the
              servers for this row run in ntma-gnb.
plain         the adapter stopped; ntma-adapter is a plain kernel router with masquerade for
              the GN (10.98.0.2/24 via 10.98.0.1); GN -> cn's public address. The ceiling.
tinc          tinc 1.0, router mode over UDP, ntma-adapter <-> ntma-cn; GN -> 10.96.0.2.
wireguard-go  wireguard-go between the same two; GN -> 10.95.0.2.
openvpn       OpenVPN 2 static-key point-to-point over UDP, userspace (no DCO); GN -> 10.94.0.2.

In the tunnel setups the GN keeps its routed address: ntma-adapter forwards to the tunnel
interface, and cn routes 10.98.0.0/24 back through it. Nothing is left behind: every
process started here is stopped, and `lab_down` runs in a `finally`.
"""

from __future__ import annotations

from ..paper import PAPER_TABLE_2_US, TABLE2_LABELS, TABLE2_PATHS
from .markdown import format_lab_report
from .results import compute_ratios, missing_tools, read_table2, tool_versions
from .run import run_lab_bench
from .settings import PEERS, SETUP_LABELS, SETUPS, BenchError

__all__ = [
    "PAPER_TABLE_2_US",
    "PEERS",
    "SETUP_LABELS",
    "SETUPS",
    "TABLE2_LABELS",
    "TABLE2_PATHS",
    "BenchError",
    "compute_ratios",
    "format_lab_report",
    "missing_tools",
    "read_table2",
    "run_lab_bench",
    "tool_versions",
]
