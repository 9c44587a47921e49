"""End-to-end measurements on the namespace lab: the adapter against the userspace tunnels a
user would pick instead, with plain kernel routing as the ceiling, all in ONE run (on a small
machine only ratios within one run mean anything).

The lab's defaults: GN -- ntma-adapter -- cone NAT -- Internet -- ntma-cn (198.51.100.30).
Every measurement runs from the GN's namespace to a server in ntma-cn (`iperf3 -s` and the
UDP echo server of `ntma.bench.udp_rtt`, both on 0.0.0.0). Setups, in this order:

ntma          the adapter; the GN gets its VIP with dhclient and reaches cn.ntm.example (cn's
              VIP) through the NTMobile tunnel. The adapter's path_stats give Table 2.
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

import contextlib
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..lab import (
    LOG_SECTION,
    LabError,
    daemon_alive,
    ip,
    lab_down,
    lab_up,
    log_size,
    ns_exec,
    ns_run,
    run,
    start_daemon,
    stop_daemon,
    wait_log_events,
    write_private,
)

GN, ADAPTER, CN = "ntma-gn", "ntma-adapter", "ntma-cn"
GN_IFACE, ADAPTER_GN_IFACE, ADAPTER_WAN = "eth0", "gn0", "eth0"
CN_PUBLIC = "198.51.100.30"
CN_NAME = "cn.ntm.example"
ECHO_PORT = 9300
IPERF_PORT = 5201
ROUTER_IP, GN_IP, GN_NET = "10.98.0.1", "10.98.0.2", "10.98.0.0/24"
GN_ROUTED_MTU = 1500  # what a GN has without the adapter's DHCP option 26
BENCH_NFT_TABLE = "ntma_bench"
ADAPTER_NFT_TABLES = (("ip", "ntma_adapter"), ("netdev", "ntma_adapter_gn"))

SETUPS = ("ntma", "plain", "tinc", "wireguard-go", "openvpn")
#: The tunnels a user would pick instead of the adapter; "best peer" is the best of these.
PEERS = ("tinc", "wireguard-go")
TOOLS: dict[str, tuple[str, ...]] = {
    "ntma": ("iperf3", "dhclient", "dig"),
    "plain": ("iperf3", "nft"),
    "tinc": ("iperf3", "nft", "tincd"),
    "wireguard-go": ("iperf3", "nft", "wireguard-go", "wg"),
    "openvpn": ("iperf3", "nft", "openvpn"),
}

TABLE2_PATHS = ("arp_processing", "packet_relay", "tunnel_send", "response_relay")
#: The source paper's Table 2 (microseconds, one figure per measure).
PAPER_TABLE_2_US = {
    "arp_processing": 246.1,
    "packet_relay": 12.0,
    "tunnel_send": 206.5,
    "response_relay": 324.0,
}
TABLE2_LABELS = {
    "arp_processing": "ARP processing (request in -> reply out)",
    "packet_relay": "packet relay (GN frame in -> handed to the tunnel)",
    "tunnel_send": "tunnel send (encapsulate + UDP send)",
    "response_relay": "response relay (tunnel packet in -> frame to the GN)",
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
_TINC_NODE_LINE = re.compile(
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
STOP_TIMEOUT_S = 5.0
ADAPTER_STOP_TIMEOUT_S = 10.0
PROBE_GIVE_UP = 10  # consecutive lost datagrams after which the RTT probe stops


class BenchError(RuntimeError):
    """One setup could not be measured (message is one line)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _src_root() -> str:
    return str(Path(__file__).resolve().parents[2])


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


# --------------------------------------------------------------------------- the run


class _Run:
    """One benchmark run: the lab state, the processes started here, where files go."""

    def __init__(self, run_dir: Path, seconds: float, rtt_count: int, arp_count: int) -> None:
        self.run_dir = run_dir
        self.bench_dir = run_dir / "bench"
        self.bench_dir.mkdir(parents=True, exist_ok=True)
        self.seconds = max(1, round(seconds))  # iperf3 -t takes whole seconds
        self.rtt_count = rtt_count
        self.arp_count = arp_count
        self.state: dict[str, Any] = {}
        self.procs: list[tuple[str, subprocess.Popen[Any]]] = []
        self.notes: list[str] = []
        self.table2_light: dict[str, Any] | None = None
        self.iperf_server: subprocess.Popen[Any] | None = None
        self.adapter_log_offset = 0
        self.echo_server: subprocess.Popen[Any] | None = None

    # ---------------------------------------------------------------- processes

    def spawn(
        self, name: str, ns: str, *cmd: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[Any]:
        """Start `cmd` in `ns` (its own session), output to bench/<name>.log."""
        with open(self.bench_dir / f"{name}.log", "ab") as out:
            proc = ns_exec(
                ns,
                *cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[Any]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)

    def log_tail(self, name: str, lines: int = 3) -> str:
        try:
            text = (self.bench_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return _one_line(" | ".join(text.strip().splitlines()[-lines:]))

    # ---------------------------------------------------------------- measurements

    def udp_rtt(self, target: str) -> dict[str, Any]:
        out = ns_run(
            GN,
            *probe_cmd("client", target, ECHO_PORT, self.rtt_count, "--give-up", PROBE_GIVE_UP),
            timeout=60 + self.rtt_count * 0.2,
        ).stdout
        return json.loads(out)

    def start_servers(self) -> None:
        """`iperf3 -s` and the UDP echo server in ntma-cn, on 0.0.0.0; wait until they listen."""
        self.iperf_server = self.spawn("iperf3-server", CN, "iperf3", "-s", "-p", str(IPERF_PORT))
        if self.echo_server is None:
            self.echo_server = self.spawn("udp-echo", CN, *probe_cmd("server", ECHO_PORT))

        def listening() -> bool:
            for name, proc in (
                ("iperf3-server", self.iperf_server),
                ("udp-echo", self.echo_server),
            ):
                if proc is not None and proc.poll() is not None:
                    raise BenchError(f"{name} exited: {self.log_tail(name)}")
            out = ns_run(CN, "ss", "-lntu").stdout
            return f":{IPERF_PORT} " in out and f":{ECHO_PORT} " in out

        _wait(listening, 10.0, "iperf3 -s and the echo server in ntma-cn")

    def iperf(self, target: str, reverse: bool) -> dict[str, Any]:
        """One iperf3 TCP test; a failed one is retried once with a fresh `iperf3 -s` (a
        client that hung leaves the server busy with its test)."""
        label = f"iperf3 {'-R ' if reverse else ''}to {target}"
        try:
            return self._iperf_once(target, reverse)
        except (BenchError, LabError) as exc:
            self.notes.append(f"{label} failed once ({_one_line(exc)}); retried")
            if self.iperf_server is not None:
                self.stop(self.iperf_server)
            self.start_servers()
        try:
            return self._iperf_once(target, reverse)
        except (BenchError, LabError) as exc:
            raise BenchError(f"{label}: {_one_line(exc)}") from None

    def _iperf_once(self, target: str, reverse: bool) -> dict[str, Any]:
        cmd = ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(self.seconds), "-J"]
        cmd += ["--connect-timeout", "5000", *(["-R"] if reverse else [])]
        proc = ns_run(GN, *cmd, check=False, timeout=self.seconds + 30)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            report = {"error": _one_line(proc.stderr or proc.stdout) or f"exit {proc.returncode}"}
        if "error" in report:
            raise BenchError(report["error"])
        end = report["end"]
        return {
            "bps": end["sum_received"]["bits_per_second"],
            "retransmits": end.get("sum_sent", {}).get("retransmits"),
        }

    def measure(
        self, entry: dict[str, Any], target: str, between: Callable[[], None] | None = None
    ) -> None:
        """RTT, then `between` (if any), then TCP both ways from the GN to `target`; filled
        into `entry` as they come."""
        entry["target"] = target
        udp_before = udp_in_datagrams(CN)
        rtt = self.udp_rtt(target)
        entry["rtt_us"] = {
            "median": rtt["median_us"],
            "p99": rtt["p99_us"],
            "mean": rtt["mean_us"],
            "lost": rtt["lost"],
            "count": rtt["count"],
        }
        if between is not None:
            between()
        entry["tcp_bps"] = {"forward": None, "reverse": None}
        entry["tcp_retransmits"] = {"forward": None, "reverse": None}
        for direction, reverse in (("forward", False), ("reverse", True)):
            result = self.iperf(target, reverse)
            entry["tcp_bps"][direction] = result["bps"]
            entry["tcp_retransmits"][direction] = result["retransmits"]
        # Datagrams delivered in ntma-cn meanwhile: the tunnels' outer UDP (so data went over
        # UDP, not a TCP fallback) and the echo probe's own. A socket with UDP GRO (the ntm
        # node's) gets coalesced datagrams, counted once per delivery.
        entry["udp_datagrams_into_cn"] = udp_in_datagrams(CN) - udp_before


def udp_in_datagrams(ns: str) -> int:
    """Udp InDatagrams of namespace `ns` (/proc/net/snmp is per network namespace)."""
    rows = [line.split() for line in ns_run(ns, "cat", "/proc/net/snmp").stdout.splitlines()]
    udp = [row[1:] for row in rows if row and row[0] == "Udp:"]
    return int(udp[1][udp[0].index("InDatagrams")])


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _pings(ns: str, target: str) -> bool:
    return ns_run(ns, "ping", "-n", "-c", "1", "-W", "1", target, check=False).returncode == 0


def wait_reachable(target: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Ping `target` from the GN until it answers; return the seconds it took."""
    started = time.monotonic()
    _wait(lambda: _pings(GN, target), timeout, f"{target} to answer the GN's ping", 0.2)
    return round(time.monotonic() - started, 2)


def _link_exists(ns: str, name: str) -> bool:
    return ns_run(ns, "ip", "link", "show", name, check=False).returncode == 0


def _wait_link(run_: _Run, ns: str, name: str, proc: subprocess.Popen[Any], log: str) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"{log} exited ({proc.returncode}): {run_.log_tail(log)}")
        return _link_exists(ns, name)

    _wait(ready, 10.0, f"{name} in {ns}")


def _gn_ipv4() -> list[str]:
    info = json.loads(ns_run(GN, "ip", "-j", "addr", "show", GN_IFACE).stdout)[0]
    return [a["local"] for a in info.get("addr_info", []) if a["family"] == "inet"]


def _check_ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise BenchError(f"{what}: expected an IPv4 address, got {text.strip()!r}") from None


# --------------------------------------------------------------------------- setups


def _dhclient_files(run_: _Run) -> tuple[str, str]:
    return str(run_.run_dir / "gn.pid"), str(run_.run_dir / "gn.leases")


def _start_adapter(run_: _Run) -> None:
    state = run_.state
    start_daemon(state, "adapter")
    wait_log_events(state, {"adapter": "registered"}, timeout=20)
    wait_log_events(state, {"adapter": "gn_ready"}, timeout=10)


def setup_ntma(run_: _Run, entry: dict[str, Any]) -> None:
    if run_.state.get("ntma_error"):
        raise BenchError(run_.state["ntma_error"])
    _start_adapter(run_)
    pid, leases = _dhclient_files(run_)
    started = time.monotonic()
    dh = ns_run(GN, "dhclient", "-1", "-pf", pid, "-lf", leases, GN_IFACE, check=False, timeout=60)
    if dh.returncode != 0:
        raise BenchError(f"dhclient: {_one_line(dh.stderr) or f'exit {dh.returncode}'}")
    entry["dhcp_s"] = round(time.monotonic() - started, 2)
    entry["gn_address"] = ", ".join(_gn_ipv4())
    started = time.monotonic()
    answer = ns_run(GN, "dig", "+short", "+time=5", "+tries=2", CN_NAME, check=False).stdout
    vip = _check_ip(answer.splitlines()[-1] if answer.strip() else "", f"dig {CN_NAME}")
    entry["resolve_s"] = round(time.monotonic() - started, 2)
    entry["ready_s"] = wait_reachable(vip)
    log = Path(run_.state["daemons"]["adapter"]["log"])

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
            _wait(
                lambda: len(_latest_paths(log, offset)) == len(TABLE2_PATHS),
                2 * LOG_SECTION["stats_interval"] + 1,
                "the adapter's next path_stats",
            )
        run_.table2_light = read_table2(log, offset)

    run_.measure(entry, vip, between=arp_then_light_snapshot)


def _nft_tables(ns: str) -> list[tuple[str, str]]:
    out = ns_run(ns, "nft", "list", "tables", check=False).stdout
    return [tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("table ")]


def route_gn(run_: _Run) -> None:
    """The adapter stopped, ntma-adapter becomes a plain router + masquerade for the GN."""
    state = run_.state
    if state["daemons"]["adapter"]["pid"] and daemon_alive(state, "adapter"):
        stop_daemon(state, "adapter", timeout=ADAPTER_STOP_TIMEOUT_S)
    pid, _ = _dhclient_files(run_)
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
    state["gn_routed"] = True


def setup_plain(run_: _Run, entry: dict[str, Any]) -> None:
    entry["ready_s"] = wait_reachable(CN_PUBLIC)
    run_.measure(entry, CN_PUBLIC)


def _tunnel_sides() -> dict[str, str]:
    return {"adapter": ADAPTER, "cn": CN}


def _tunnel_addresses(side: str, iface: str, local: str, peer: str) -> None:
    """Address and routes of one tunnel end: the adapter routes the peer's /32 into the
    tunnel, cn routes the GN's network back."""
    ns = _tunnel_sides()[side]
    ip(ns, "addr", "add", f"{local}/32", "dev", iface)
    ip(ns, "link", "set", iface, "up")
    ip(ns, "route", "replace", GN_NET if side == "cn" else f"{peer}/32", "dev", iface)


def setup_tinc(run_: _Run, entry: dict[str, Any]) -> None:
    base = run_.run_dir / "tinc"
    shutil.rmtree(base, ignore_errors=True)
    hosts = {
        "adapter": [f"Subnet = {TINC_IPS['adapter']}/32", f"Subnet = {GN_NET}"],
        "cn": [f"Address = {CN_PUBLIC}", "Port = 655", f"Subnet = {TINC_IPS['cn']}/32"],
    }
    for side, lines in hosts.items():
        d = base / side
        (d / "hosts").mkdir(parents=True)
        conf = [f"Name = {side}", "Mode = router", f"Interface = {TINC_IFACE}"]
        conf += ["AddressFamily = ipv4", "ConnectTo = cn"] if side == "adapter" else []
        (d / "tinc.conf").write_text("\n".join(conf) + "\n")
        (d / "hosts" / side).write_text("\n".join([*lines, "TCPOnly = no"]) + "\n")
        run("tincd", "-n", TINC_NET, f"--config={d}", "-K2048", timeout=60)
    for side in hosts:
        for other in hosts:
            if other != side:
                shutil.copy(base / other / "hosts" / other, base / side / "hosts" / other)
    procs = {}
    for side, ns in _tunnel_sides().items():
        d = base / side
        procs[side] = run_.spawn(
            f"tincd-{side}",
            ns,
            "tincd",
            "-n",
            TINC_NET,
            f"--config={d}",
            "-D",
            "-d1",
            f"--pidfile={base / f'{side}.pid'}",
            f"--logfile={base / f'{side}.log'}",
        )
    try:
        for side, ns in _tunnel_sides().items():
            _wait_link(run_, ns, TINC_IFACE, procs[side], f"tincd-{side}")
        for side, peer in (("adapter", "cn"), ("cn", "adapter")):
            _tunnel_addresses(side, TINC_IFACE, TINC_IPS[side], TINC_IPS[peer])
        entry["note"] = TINC_NOTE
        entry["ready_s"] = wait_reachable(TINC_IPS["cn"])
        entry["tinc"] = tinc_wait_pmtu(procs, base)
        run_.measure(entry, TINC_IPS["cn"])
    finally:
        for proc in procs.values():
            run_.stop(proc)


def _nid_name(nid: int) -> str:
    """OpenSSL's short name for a NID (tinc 1.0 reports its cipher and digest by NID)."""
    with contextlib.suppress(Exception):
        import ctypes
        import ctypes.util

        libcrypto = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
        libcrypto.OBJ_nid2sn.restype = ctypes.c_char_p
        name = libcrypto.OBJ_nid2sn(nid)
        if name:
            return name.decode()
    return f"nid {nid}"


def _tinc_peer_state(log: Path, peer: str) -> dict[str, int] | None:
    """The last line tincd dumped (SIGUSR2) about node `peer`: cipher, digest, PMTU."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = [m for m in _TINC_NODE_LINE.finditer(text) if m["node"] == peer]
    return {k: int(v) for k, v in found[-1].groupdict().items() if k != "node"} if found else None


def tinc_wait_pmtu(procs: dict[str, subprocess.Popen[Any]], base: Path) -> dict[str, Any]:
    """Ask both tincds for their node lists (SIGUSR2) until each has fixed the path MTU
    towards the other (min == max); return what they report."""
    peers = {"adapter": "cn", "cn": "adapter"}
    started = time.monotonic()
    seen: dict[str, dict[str, int] | None] = {}
    while True:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR2)
        time.sleep(0.3)
        seen = {side: _tinc_peer_state(base / f"{side}.log", peers[side]) for side in procs}
        fixed = all(v and v["min"] == v["max"] for v in seen.values())
        if fixed or time.monotonic() - started > TINC_PMTU_TIMEOUT_S:
            break
    some = next((v for v in seen.values() if v), None) or {}
    return {
        "pmtu_fixed": fixed,
        "pmtu_s": round(time.monotonic() - started, 1),
        "pmtu": {f"{side}_to_{peers[side]}": (v or {}).get("pmtu") for side, v in seen.items()},
        "cipher": _nid_name(some["cipher"]) if "cipher" in some else None,
        "digest": _nid_name(some["digest"]) if "digest" in some else None,
        "maclength": some.get("maclength"),
    }


def _wg_socket(iface: str) -> Path:
    return WG_SOCKET_DIR / f"{iface}.sock"


def _clear_stale_wg_socket(iface: str) -> None:
    path = _wg_socket(iface)
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # nobody behind it: left by a crash
            return
    raise BenchError(f"{path} is in use by a running wireguard-go")


def _cleanup_wg(side: str) -> None:
    iface, ns = WG_IFACES[side], _tunnel_sides()[side]
    with contextlib.suppress(OSError):
        _wg_socket(iface).unlink(missing_ok=True)
    with contextlib.suppress(LabError):
        if _link_exists(ns, iface):
            ns_run(ns, "ip", "link", "del", iface, check=False)


def setup_wireguard(run_: _Run, entry: dict[str, Any]) -> None:
    base = run_.run_dir / "wireguard"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    public = {}
    for side in WG_IFACES:
        private = run("wg", "genkey").stdout.strip()
        write_private(base / f"{side}.key", private + "\n")
        public[side] = run("wg", "pubkey", input=private + "\n").stdout.strip()
        _clear_stale_wg_socket(WG_IFACES[side])
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
    procs = {}
    try:
        for side, ns in _tunnel_sides().items():
            procs[side] = run_.spawn(
                f"wireguard-go-{side}", ns, "wireguard-go", WG_IFACES[side], env=env
            )
        for side, ns in _tunnel_sides().items():
            _wait_link(run_, ns, WG_IFACES[side], procs[side], f"wireguard-go-{side}")
            _wait(_wg_socket(WG_IFACES[side]).exists, 10.0, f"{_wg_socket(WG_IFACES[side])}")
        adapter_peer = [
            "peer",
            public["cn"],
            "endpoint",
            f"{CN_PUBLIC}:{WG_PORT}",
            "allowed-ips",
            f"{WG_IPS['cn']}/32",
            "persistent-keepalive",
            "25",
        ]
        cn_peer = ["peer", public["adapter"], "allowed-ips", f"{WG_IPS['adapter']}/32,{GN_NET}"]
        # cn first: the adapter's side sends its handshake at once, and one that reaches a
        # cn without the peer configured is retried only after 5 s (REKEY_TIMEOUT).
        for side, peer_args in (("cn", cn_peer), ("adapter", adapter_peer)):
            ns_run(
                _tunnel_sides()[side],
                "wg",
                "set",
                WG_IFACES[side],
                "listen-port",
                str(WG_PORT),
                "private-key",
                str(base / f"{side}.key"),
                *peer_args,
            )
        for side, peer in (("adapter", "cn"), ("cn", "adapter")):
            _tunnel_addresses(side, WG_IFACES[side], WG_IPS[side], WG_IPS[peer])
        entry["note"] = WG_NOTE
        entry["ready_s"] = wait_reachable(WG_IPS["cn"])
        run_.measure(entry, WG_IPS["cn"])
    finally:
        for proc in procs.values():
            run_.stop(proc)
        for side in WG_IFACES:
            _cleanup_wg(side)


def setup_openvpn(run_: _Run, entry: dict[str, Any]) -> None:
    base = run_.run_dir / "openvpn"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    key = base / "static.key"
    key.unlink(missing_ok=True)
    run("openvpn", "--genkey", "secret", str(key))
    common = [
        "openvpn",
        "--dev",
        OVPN_IFACE,
        "--dev-type",
        "tun",
        "--proto",
        "udp",
        "--secret",
        str(key),
        "--cipher",
        OVPN_CIPHER,
        "--auth",
        OVPN_AUTH,
        "--disable-dco",
        "--verb",
        "3",
    ]
    sides = {
        "cn": [
            "--lport",
            str(OVPN_PORT),
            "--ifconfig",
            OVPN_IPS["cn"],
            OVPN_IPS["adapter"],
            "--route",
            GN_NET.split("/")[0],
            "255.255.255.0",
        ],
        "adapter": [
            "--remote",
            CN_PUBLIC,
            str(OVPN_PORT),
            "--nobind",
            "--ifconfig",
            OVPN_IPS["adapter"],
            OVPN_IPS["cn"],
        ],
    }
    procs = {}
    try:
        for side, extra in sides.items():
            ns = _tunnel_sides()[side]
            procs[side] = run_.spawn(f"openvpn-{side}", ns, *common, *extra)
        for side, ns in _tunnel_sides().items():
            _wait_link(run_, ns, OVPN_IFACE, procs[side], f"openvpn-{side}")
        entry["note"] = OVPN_NOTE
        entry["ready_s"] = wait_reachable(OVPN_IPS["cn"], timeout=30)
        run_.measure(entry, OVPN_IPS["cn"])
    finally:
        for proc in procs.values():
            run_.stop(proc)


SETUP_FUNCS: dict[str, Callable[[_Run, dict[str, Any]], None]] = {
    "ntma": setup_ntma,
    "plain": setup_plain,
    "tinc": setup_tinc,
    "wireguard-go": setup_wireguard,
    "openvpn": setup_openvpn,
}


# --------------------------------------------------------------------------- results


def _path_events(log: Path, offset: int = 0) -> list[dict[str, Any]]:
    """path_stats (and path_stats_final) events in complete lines of `log` after `offset`."""
    events = []
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return []
    for line in data[: data.rfind(b"\n") + 1].decode(errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("event") in ("path_stats", "path_stats_final"):
            events.append(obj)
    return events


def _latest_paths(log: Path, offset: int = 0) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for event in _path_events(log, offset):
        if event.get("path") in TABLE2_PATHS:
            latest[event["path"]] = event
    return latest


def read_table2(log: Path, offset: int = 0) -> dict[str, Any]:
    """The adapter's last path_stats event per path (logged after `offset`), in
    microseconds, beside the paper. p50/p99 are over the path's last 4096 samples (batches),
    the mean over every packet so far."""
    latest = _latest_paths(log, offset)
    paths: dict[str, Any] = {}
    for name in TABLE2_PATHS:
        event = latest.get(name)
        ours = None
        if event is not None:
            ours = {
                "count": event.get("count"),
                "mean_us": _us(event.get("mean_ns")),
                "median_us": _us(event.get("p50_ns")),
                "p99_us": _us(event.get("p99_ns")),
            }
            if event.get("send_p50_ns") is not None:  # the path ends in a send call
                ours["send_median_us"] = _us(event["send_p50_ns"])
        paths[name] = {"paper_us": PAPER_TABLE_2_US[name], "ours": ours}
    out: dict[str, Any] = {"paths": paths, "log": str(log)}
    missing = [n for n in TABLE2_PATHS if latest.get(n) is None]
    if len(missing) == len(TABLE2_PATHS):
        out["note"] = "the adapter logged no path_stats events"
    elif missing:
        out["note"] = f"no path_stats for {', '.join(missing)}"
    return out


TABLE2_WINDOWS = (
    "ours: the adapter's final path_stats (at shutdown: mean over every packet of the run, "
    "p50/p99 over each path's last 4096 batches, i.e. mostly under iperf3 load); "
    "ours_before_bulk: its path_stats logged after the RTT probe and the ARP requests, "
    "before iperf3 (one packet at a time)"
)


def _merge_light(table2: dict[str, Any], light: dict[str, Any] | None) -> None:
    """Put the before-bulk snapshot beside the final figures, path by path."""
    for name, row in table2["paths"].items():
        row["ours_before_bulk"] = (light or {}).get("paths", {}).get(name, {}).get("ours")
    table2["windows"] = TABLE2_WINDOWS


def _us(ns: Any) -> float | None:
    return round(ns / 1000, 1) if isinstance(ns, int | float) else None


def _measured(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and "error" not in entry and "skipped" not in entry and "tcp_bps" in entry


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b > 0:
        return round(a / b, 3)
    return None


def compute_ratios(setups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each measured setup gets `ratios`; returns the best peer per measure and the plain
    reference. Throughput ratios are this / plain and this / best peer (max of PEERS); RTT
    overhead is median - plain median, compared with the best (smallest) peer overhead."""
    plain = setups.get("plain") if _measured(setups.get("plain")) else None
    peers = {n: setups[n] for n in PEERS if _measured(setups.get(n))}
    best: dict[str, Any] = {}
    for direction in ("forward", "reverse"):
        values = {n: e["tcp_bps"][direction] for n, e in peers.items()}
        values = {n: v for n, v in values.items() if v}
        if values:
            name = max(values, key=lambda n: values[n])
            best[f"tcp_{direction}"] = {"setup": name, "bps": values[name]}
    plain_median = plain["rtt_us"]["median"] if plain else None
    overheads = {}
    for name, entry in setups.items():
        if _measured(entry) and plain_median is not None and entry["rtt_us"]["median"]:
            overheads[name] = round(entry["rtt_us"]["median"] - plain_median, 1)
    peer_overheads = {n: overheads[n] for n in peers if n in overheads}
    if peer_overheads:
        name = min(peer_overheads, key=lambda n: peer_overheads[n])
        best["rtt_overhead"] = {"setup": name, "us": peer_overheads[name]}
    for name, entry in setups.items():
        if not _measured(entry):
            continue
        tcp = entry["tcp_bps"]
        best_overhead = best.get("rtt_overhead", {}).get("us")
        entry["ratios"] = {
            "tcp_vs_plain": {
                d: _ratio(tcp[d], plain["tcp_bps"][d] if plain else None)
                for d in ("forward", "reverse")
            },
            "tcp_vs_best_peer": {
                d: _ratio(tcp[d], best.get(f"tcp_{d}", {}).get("bps"))
                for d in ("forward", "reverse")
            },
            "rtt_overhead_us": overheads.get(name),
            "best_peer_rtt_overhead_us": best_overhead,
            "rtt_overhead_vs_best_peer": _ratio(overheads.get(name), best_overhead),
        }
    return {"best_peer": best, "peers": list(PEERS), "plain_rtt_median_us": plain_median}


def tool_version(*cmd: str) -> str | None:
    """The version number in the first line `cmd` prints ("1.0.36"), None if not installed."""
    if shutil.which(cmd[0]) is None:
        return None
    with contextlib.suppress(LabError):
        proc = run(*cmd, check=False, timeout=10)
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        first = lines[0].strip() if lines else ""
        found = re.search(r"\bv?(\d+(?:\.\d+)+)", first)
        return found.group(1) if found else first or None
    return None


def tool_versions() -> dict[str, Any]:
    return {
        "tinc": tool_version("tincd", "--version"),
        "wireguard-go": tool_version("wireguard-go", "--version"),
        "wireguard-tools": tool_version("wg", "--version"),
        "openvpn": tool_version("openvpn", "--version"),
        "iperf3": tool_version("iperf3", "--version"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpus_used": sorted(os.sched_getaffinity(0)),  # e.g. [1] under `taskset -c 1`
    }


def missing_tools(setup: str) -> list[str]:
    return [t for t in TOOLS[setup] if shutil.which(t) is None]


# --------------------------------------------------------------------------- entry points


def _start_lab(run_: _Run, want_ntma: bool) -> None:
    """Lab with DC and nodes (the adapter is started by the ntma setup, so its failure is
    that setup's error); if the daemons do not come up, the ntma setup fails and the lab is
    rebuilt without them for the others."""
    try:
        run_.state = lab_up(run_.run_dir, daemons=want_ntma, adapter=False, wait_s=30.0)
    except LabError as exc:
        if not want_ntma:
            raise
        lab_down(run_.run_dir)
        run_.state = lab_up(run_.run_dir, daemons=False)
        run_.state["ntma_error"] = f"lab daemons did not come up: {_one_line(exc)}"
    # The run dir may hold logs of earlier runs (daemons append): read only this run's.
    run_.adapter_log_offset = log_size(run_.state, "adapter")


def _stop_lab_daemons(run_: _Run) -> None:
    """After the ntma setup: the DC and nodes are not needed any more; quiet the machine."""
    for name, d in run_.state.get("daemons", {}).items():
        if name not in ("web", "dnsmasq") and d.get("pid"):
            with contextlib.suppress(Exception):
                stop_daemon(run_.state, name, timeout=ADAPTER_STOP_TIMEOUT_S)


def run_lab_bench(
    run_dir: Path,
    *,
    seconds: float = 5.0,
    rtt_count: int = 1000,
    setups: Iterable[str] | None = None,
    arp_count: int = 1000,
) -> dict[str, Any]:
    """Build the lab, measure each setup in turn (see the module doc), tear it all down.

    A setup that fails gets {"error": "..."} and the others still run; a setup whose tools
    are missing gets {"skipped": "..."}. Returns a JSON-able dict (see `format_lab_report`).
    """
    chosen = list(SETUPS if setups is None else setups)
    unknown = [s for s in chosen if s not in SETUPS]
    if unknown:
        raise ValueError(f"unknown setups {unknown} (choose from {SETUPS})")
    chosen = [s for s in SETUPS if s in chosen]  # always in the documented order
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_ = _Run(run_dir, seconds, rtt_count, arp_count)
    results: dict[str, dict[str, Any]] = {}
    table2: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        _start_lab(run_, "ntma" in chosen and not missing_tools("ntma"))
        run_.start_servers()
        for name in chosen:
            entry: dict[str, Any] = {}
            results[name] = entry
            missing = missing_tools(name)
            if missing:
                entry["skipped"] = f"{', '.join(missing)} not installed"
                continue
            t0 = time.monotonic()
            try:
                if name != "ntma" and not run_.state.get("gn_routed"):
                    route_gn(run_)
                SETUP_FUNCS[name](run_, entry)
            except Exception as exc:  # one setup's failure must not stop the others
                entry["error"] = _one_line(f"{type(exc).__name__}: {exc}")
            finally:
                if name == "ntma":
                    try:
                        route_gn(run_)  # stops the adapter: it logs its final path_stats
                    except Exception as exc:
                        run_.notes.append(_one_line(f"routing the GN failed: {exc}"))
                    table2 = read_table2(
                        Path(run_.state["daemons"]["adapter"]["log"]), run_.adapter_log_offset
                    )
                    _merge_light(table2, run_.table2_light)
                    _stop_lab_daemons(run_)
                entry["seconds_taken"] = round(time.monotonic() - t0, 1)
    finally:
        run_.stop_all()
        for side in WG_IFACES:
            with contextlib.suppress(Exception):
                _cleanup_wg(side)
        lab_down(run_dir)
    summary = compute_ratios(results)
    result = {
        "setups": results,
        "ratios": summary,
        "table2": table2,
        "parameters": {
            "seconds": run_.seconds,
            "rtt_count": rtt_count,
            "rtt_payload_bytes": 64,
            "arp_count": arp_count,
            "setups": chosen,
        },
        "versions": tool_versions(),
        "notes": [RATIO_NOTE, *([OFFLOAD_NOTE] if "plain" in chosen else []), *run_.notes],
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    (run_.bench_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# --------------------------------------------------------------------------- report


def _fmt(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value / scale:.{digits}f}"


def _cpus_used(versions: dict[str, Any]) -> str:
    """ ", all processes on CPU 1" when the run was confined (taskset), else ""."""
    used = versions.get("cpus_used")
    if not used or len(used) == versions.get("cpus"):
        return ""
    return f", all processes on CPU {', '.join(map(str, used))}"


def format_lab_report(result: dict[str, Any]) -> str:
    """A short markdown section: one table of the setups, one of Table 2, the notes."""
    params = result.get("parameters", {})
    versions = result.get("versions", {})
    lines = [
        "## End-to-end on the lab: the adapter against userspace tunnels",
        "",
        f"One run, from the GN's namespace to ntma-cn: {params.get('rtt_count', '?')} UDP "
        f"round trips of {params.get('rtt_payload_bytes', 64)} bytes, iperf3 TCP for "
        f"{params.get('seconds', '?')} s each way. Kernel {versions.get('kernel', '?')}, "
        f"{versions.get('cpus', '?')} CPUs{_cpus_used(versions)}.",
        "",
        "| setup | RTT median µs | RTT p99 µs | lost | TCP fwd Mbit/s | TCP rev Mbit/s "
        "| fwd / plain | rev / plain | fwd / best peer | rev / best peer "
        "| RTT overhead µs | overhead / best peer's |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, entry in result.get("setups", {}).items():
        if "error" in entry or "skipped" in entry:
            why = entry.get("error") or f"skipped: {entry['skipped']}"
            lines.append(f"| {name} | {why.replace('|', '/')} |" + " |" * 10)
            continue
        rtt, tcp = entry.get("rtt_us", {}), entry.get("tcp_bps", {})
        r = entry.get("ratios", {})
        vs_plain, vs_peer = r.get("tcp_vs_plain", {}), r.get("tcp_vs_best_peer", {})
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    _fmt(rtt.get("median")),
                    _fmt(rtt.get("p99")),
                    str(rtt.get("lost", "–")),
                    _fmt(tcp.get("forward"), 1e6),
                    _fmt(tcp.get("reverse"), 1e6),
                    _fmt(vs_plain.get("forward"), digits=2),
                    _fmt(vs_plain.get("reverse"), digits=2),
                    _fmt(vs_peer.get("forward"), digits=2),
                    _fmt(vs_peer.get("reverse"), digits=2),
                    _fmt(r.get("rtt_overhead_us")),
                    _fmt(r.get("rtt_overhead_vs_best_peer"), digits=2),
                ]
            )
            + " |"
        )
    best = result.get("ratios", {}).get("best_peer", {})
    if best:
        parts = [
            f"{k.replace('_', ' ')}: {v['setup']}" for k, v in best.items() if isinstance(v, dict)
        ]
        lines += ["", f"Best peer (of {', '.join(PEERS)}) — " + "; ".join(parts) + "."]
    table2 = result.get("table2")
    if table2:
        lines += [
            "",
            "The adapter's paths beside the paper's Table 2 (µs per packet):",
            "",
            "| measure | samples | ours mean | ours median | ours p99 "
            "| median before bulk | of which in send() | p99 before bulk | paper |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for path, row in table2.get("paths", {}).items():
            ours, light = row.get("ours") or {}, row.get("ours_before_bulk") or {}
            lines.append(
                f"| {TABLE2_LABELS.get(path, path)} | {ours.get('count', '–')} "
                f"| {_fmt(ours.get('mean_us'))} | {_fmt(ours.get('median_us'))} "
                f"| {_fmt(ours.get('p99_us'))} | {_fmt(light.get('median_us'))} "
                f"| {_fmt(light.get('send_median_us'))} "
                f"| {_fmt(light.get('p99_us'))} | {_fmt(row.get('paper_us'))} |"
            )
        lines += [
            "",
            "Mean over every packet of the run; median and p99 over each path's last 4096 "
            "batches: at the end (mostly under iperf3 load) and before the bulk transfers "
            '(after the RTT probe and the ARP requests, one packet at a time). "Of which in '
            "send()\": the median time in the path's last call, the send to the kernel; on "
            "this lab it includes the receiving namespaces' stack, as veth delivers in the "
            "sender's context.",
        ]
        if table2.get("note"):
            lines += ["", f"Table 2: {table2['note']}."]
    shown = [
        f"{k} {v}" for k, v in versions.items() if k not in ("kernel", "cpus", "cpus_used") and v
    ]
    lines += ["", "Versions: " + "; ".join(shown) + "." if shown else ""]
    notes = [e["note"] for e in result.get("setups", {}).values() if e.get("note")]
    notes += result.get("notes", [])
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(line for line in lines).rstrip() + "\n"
