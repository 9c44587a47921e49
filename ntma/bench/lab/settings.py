"""The lab benchmark's fixed facts: namespaces, addresses, ports, tools, notes; small helpers.

Names and addresses are the lab's (`ntma.lab`); the tunnels' own addresses are chosen
apart from every lab network.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...lab import GN_NS

GN, ADAPTER, CN = GN_NS, "ntma-adapter", "ntma-cn"
#: The adapter-to-adapter row: ntma-gn -> ntma-gnb, behind ntma-adapter2 (lab --adapters 2).
GNB, ADAPTER2 = "ntma-gnb", "ntma-adapter2"
GNB_NAME = "gnb.ntm.example"
ADAPTER_WAN = "eth0"
CN_PUBLIC = "198.51.100.30"
CN_NAME = "cn.ntm.example"
ECHO_PORT = 9300
IPERF_PORT = 5201
ROUTER_IP, GN_IP, GN_NET = "10.98.0.1", "10.98.0.2", "10.98.0.0/24"
GN_ROUTED_MTU = 1500  # what a GN has without the adapter's DHCP option 26
BENCH_NFT_TABLE = "ntma_bench"
ADAPTER_NFT_TABLES = (("ip", "ntma_adapter"), ("netdev", "ntma_adapter_gn"))

#: Every setup, in the order of the report (and of the run, but for RUN_FIRST and the rows
#: on a lab of their own: see LAB_NEEDS).
SETUPS = ("ntma", "ntma-v6", "ntma-u6", "ntma-a2a", "plain", "tinc", "wireguard-go", "openvpn")
#: The setups that run on the adapters, with the lab's DC and relay (the others after them).
NTMA_SETUPS = ("ntma", "ntma-v6", "ntma-u6", "ntma-a2a")
#: How the markdown table names a setup (its key otherwise).
SETUP_LABELS = {
    "ntma-v6": "ntma IPv6 inside",
    "ntma-u6": "ntma IPv6 underlay",
    "ntma-a2a": "ntma adapter to adapter",
}
#: The rows that run first on their lab: IPv6 inside, on the adapter's first start in the
#: lab, so the adapter learns the GN's SLAAC address from its duplicate address detection.
#: After an adapter restart the GN keeps the address and sends no DAD; the adapter then
#: learns it only from a first packet that is not Neighbor Discovery, and a GN resolving an
#: on-link VIP (cn's) first sends a Neighbor Solicitation, which is dropped (foreign_ip).
RUN_FIRST = ("ntma-v6",)
#: What a setup needs of the lab beyond the bench's default one (`lab_up` options).
LAB_NEEDS: dict[str, dict[str, Any]] = {
    "ntma-v6": {"vip6": True},  # IPv6 VIPs: SLAAC on the GN, cn's TUN with its IPv6 VIP
    "ntma-u6": {"adapter_nat": "none", "adapter_net": "dual", "cn_nat": "none", "cn_net": "dual"},
    "ntma-a2a": {"adapters": 2},
}
#: Options that only add to a lab (IPv6 VIPs, a second adapter with its GN) and change
#: nothing the other rows measure (they target IPv4 addresses, on the same paths): rows
#: needing only these share the main lab. Any other option (a NAT, a network) is a topology
#: of its own: its rows run on a lab of their own, after the main lab's (see `plan.py`).
ADDITIVE_LAB_OPTIONS = ("vip6", "adapters")
#: The tunnels a user would pick instead of the adapter; "best peer" is the best of these.
PEERS = ("tinc", "wireguard-go")
TOOLS: dict[str, tuple[str, ...]] = {
    "ntma": ("iperf3", "dhclient", "dig"),
    "ntma-v6": ("iperf3", "dhclient", "dig"),
    "ntma-u6": ("iperf3", "dhclient", "dig"),
    "ntma-a2a": ("iperf3", "dhclient", "dig", "udhcpc"),
    "plain": ("iperf3", "nft"),
    "tinc": ("iperf3", "nft", "tincd"),
    "wireguard-go": ("iperf3", "nft", "wireguard-go", "wg"),
    "openvpn": ("iperf3", "nft", "openvpn"),
}

TINC_NET = "ntmabench"
TINC_IFACE = "tinc0"
TINC_IPS = {"adapter": "10.96.0.1", "cn": "10.96.0.2"}
TINC_NOTE = (
    "tinc 1.0.36 defaults: Cipher aes-256-cbc, Digest sha256 with MACLength 4, Compression 0, "
    "RSA-2048 keys; router mode, TCPOnly = no (data over UDP); PMTUDiscovery and ClampMSS on "
    "(defaults): packets above the path MTU found so far go over the TCP meta connection, so "
    "the measurement starts once both ends have fixed their PMTU"
)
TINC_PMTU_TIMEOUT_S = 30.0
TINC_NODE_LINE = re.compile(
    r" (?P<node>\S+) at \S+ port \d+ cipher (?P<cipher>\d+) digest (?P<digest>\d+) "
    r"maclength (?P<maclength>\d+) .* pmtu (?P<pmtu>\d+) \(min (?P<min>\d+) max (?P<max>\d+)\)"
)
WG_IFACES = {"adapter": "wgntma-ad", "cn": "wgntma-cn"}  # distinct: UAPI sockets are global
WG_IPS = {"adapter": "10.95.0.1", "cn": "10.95.0.2"}
WG_PORT = 51820
WG_SOCKET_DIR = Path("/var/run/wireguard")
WG_NOTE = (
    "wireguard-go defaults: ChaCha20-Poly1305, TUN MTU 1420; persistent-keepalive 25 on the "
    "adapter's side, which is behind the NAT"
)
OVPN_IFACE = "tun-ovpn"
OVPN_IPS = {"adapter": "10.94.0.1", "cn": "10.94.0.2"}
OVPN_PORT = 1194
OVPN_CIPHER, OVPN_AUTH = "AES-256-CBC", "SHA256"
OVPN_NOTE = (
    f"OpenVPN static-key p2p over UDP, --cipher {OVPN_CIPHER} --auth {OVPN_AUTH} "
    "(the static-key default BF-CBC needs OpenSSL's legacy provider), --disable-dco "
    "(userspace data path), defaults otherwise (tun-mtu 1500, mssfix 1492)"
)

RATIO_NOTE = (
    "Only ratios within one run mean anything: every setup ran in this one run on the same "
    "machine, where the tunnel daemons, iperf3 and the lab share a few cores."
)
OFFLOAD_NOTE = (
    "The GN's veth has tx checksum, SG, TSO and GSO off (the lab's make_wire_like), so the GN "
    "sends MTU-sized segments in every setup; only plain routing forwards cn's GSO "
    "super-packets to the GN unsplit, so its reverse throughput is far above any tunnel's "
    "and every tunnel's reverse / plain ratio is small."
)
READY_TIMEOUT_S = 20.0
SLAAC_TIMEOUT_S = 30.0  # the GN's address from the adapter's RA (its first RA at once)
#: The GN's IPv6 router on the adapter's link (the link prefix's first address).
GN_ROUTER6 = "fd00:99::1"
STOP_TIMEOUT_S = 5.0
ADAPTER_STOP_TIMEOUT_S = 10.0
PROBE_GIVE_UP = 10  # consecutive lost datagrams after which the RTT probe stops


class BenchError(RuntimeError):
    """One setup could not be measured (message is one line)."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _src_root() -> str:
    return str(Path(__file__).resolve().parents[3])


def probe_cmd(*args: object) -> list[str]:
    """`python3 -m ntma.bench.udp_rtt ARGS` as run inside a namespace (uninstalled works too)."""
    return [
        "env",
        f"PYTHONPATH={_src_root()}",
        sys.executable,
        "-m",
        "ntma.bench.udp_rtt",
        *(str(a) for a in args),
    ]


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
