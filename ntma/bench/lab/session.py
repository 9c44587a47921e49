"""One benchmark run (`BenchRun`): the lab state, the processes it started, how it measures
(RTT with the UDP echo probe, TCP with iperf3, both from the GN's namespace to servers in
ntma-cn, or in ntma-gnb for the adapter-to-adapter row; to an IPv4 or an IPv6 address), and
the small waits and probes the setups share.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...lab import (
    GN_IFACE,
    LabError,
    LabState,
    daemon_alive,
    ns_exec,
    ns_run,
    start_daemon,
    wait_log_events,
)
from .settings import (
    CN,
    ECHO_PORT,
    GN,
    IPERF_PORT,
    PROBE_GIVE_UP,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    BenchError,
    one_line,
    probe_cmd,
    wait_until,
)


class BenchRun:
    """One benchmark run: the lab state, the processes started here, where files go."""

    def __init__(self, run_dir: Path, seconds: float, rtt_count: int, arp_count: int) -> None:
        self.run_dir = run_dir
        self.bench_dir = run_dir / "bench"
        self.bench_dir.mkdir(parents=True, exist_ok=True)
        self.seconds = max(1, round(seconds))  # iperf3 -t takes whole seconds
        self.rtt_count = rtt_count
        self.arp_count = arp_count
        self.state: LabState | None = None
        self.ntma_error: str | None = None  # the ntma setup cannot run: why
        self.gn_routed = False  # ntma-adapter routes for the GN (see `route_gn`)
        self.procs: list[tuple[str, subprocess.Popen[Any]]] = []
        self.notes: list[str] = []
        self.table2_light: dict[str, Any] | None = None
        self.adapter_log_offset = 0
        #: server namespace -> its iperf3 -s and UDP echo server
        self.servers: dict[str, dict[str, subprocess.Popen[Any]]] = {}

    def new_lab(self) -> None:
        """Forget the lab just brought down (its processes stopped, `stop_all`): the next
        one starts as the first did. The GN's dhclient died with its namespace."""
        self.state = None
        self.ntma_error = None
        self.gn_routed = False
        self.servers = {}
        for path in dhclient_files(self):
            Path(path).unlink(missing_ok=True)

    @property
    def lab(self) -> LabState:
        if self.state is None:
            raise BenchError("the lab is not up")
        return self.state

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
        return one_line(" | ".join(text.strip().splitlines()[-lines:]))

    # ---------------------------------------------------------------- measurements

    def udp_rtt(self, target: str) -> dict[str, Any]:
        out = ns_run(
            GN,
            *probe_cmd("client", target, ECHO_PORT, self.rtt_count, "--give-up", PROBE_GIVE_UP),
            timeout=60 + self.rtt_count * 0.2,
        ).stdout
        return json.loads(out)

    def start_servers(self, ns: str = CN) -> None:
        """`iperf3 -s` and the UDP echo server in `ns`, both dual-stack on [::] (each started
        unless it runs); wait until they listen."""
        servers = self.servers.setdefault(ns, {})
        logs = {"iperf3": f"iperf3-server-{ns}", "echo": f"udp-echo-{ns}"}
        cmds = {"iperf3": ["iperf3", "-s", "-p", str(IPERF_PORT)]}
        cmds["echo"] = probe_cmd("server", ECHO_PORT)
        for kind, cmd in cmds.items():
            if kind not in servers or servers[kind].poll() is not None:
                servers[kind] = self.spawn(logs[kind], ns, *cmd)

        def listening() -> bool:
            for kind, proc in servers.items():
                if proc.poll() is not None:
                    raise BenchError(f"{logs[kind]} exited: {self.log_tail(logs[kind])}")
            out = ns_run(ns, "ss", "-lntu").stdout
            return f":{IPERF_PORT} " in out and f":{ECHO_PORT} " in out

        wait_until(listening, 10.0, f"iperf3 -s and the echo server in {ns}")

    def stop_servers(self, ns: str) -> None:
        for proc in self.servers.pop(ns, {}).values():
            self.stop(proc)

    def iperf(self, target: str, reverse: bool, server_ns: str = CN) -> dict[str, Any]:
        """One iperf3 TCP test; a failed one is retried once with a fresh `iperf3 -s` (a
        client that hung leaves the server busy with its test)."""
        label = f"iperf3 {'-R ' if reverse else ''}to {target}"
        try:
            return self._iperf_once(target, reverse)
        except (BenchError, LabError) as exc:
            self.notes.append(f"{label} failed once ({one_line(exc)}); retried")
            iperf_server = self.servers.get(server_ns, {}).pop("iperf3", None)
            if iperf_server is not None:
                self.stop(iperf_server)
            self.start_servers(server_ns)
        try:
            return self._iperf_once(target, reverse)
        except (BenchError, LabError) as exc:
            raise BenchError(f"{label}: {one_line(exc)}") from None

    def _iperf_once(self, target: str, reverse: bool) -> dict[str, Any]:
        cmd = ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(self.seconds), "-J"]
        cmd += ["-6"] if ipaddress.ip_address(target).version == 6 else []
        cmd += ["--connect-timeout", "5000", *(["-R"] if reverse else [])]
        proc = ns_run(GN, *cmd, check=False, timeout=self.seconds + 30)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            report = {"error": one_line(proc.stderr or proc.stdout) or f"exit {proc.returncode}"}
        if "error" in report:
            raise BenchError(report["error"])
        end = report["end"]
        return {
            "bps": end["sum_received"]["bits_per_second"],
            "retransmits": end.get("sum_sent", {}).get("retransmits"),
        }

    def measure(
        self,
        entry: dict[str, Any],
        target: str,
        between: Callable[[], None] | None = None,
        server_ns: str = CN,
    ) -> None:
        """RTT, then `between` (if any), then TCP both ways from the GN to `target` (its
        servers in `server_ns`); filled into `entry` as they come."""
        entry["target"] = target
        udp_before, udp6_before = udp_in_datagrams(CN), udp6_in_datagrams(CN)
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
            result = self.iperf(target, reverse, server_ns)
            entry["tcp_bps"][direction] = result["bps"]
            entry["tcp_retransmits"][direction] = result["retransmits"]
        # Datagrams delivered in ntma-cn meanwhile: the tunnels' outer UDP (so data went over
        # UDP, not a TCP fallback) and the echo probe's own; over IPv6 apart (an IPv6 outer,
        # or the probe to an IPv6 VIP). A socket with UDP GRO (the ntm node's) gets coalesced
        # datagrams, counted once per delivery.
        if server_ns == CN:
            entry["udp_datagrams_into_cn"] = udp_in_datagrams(CN) - udp_before
            entry["udp6_datagrams_into_cn"] = udp6_in_datagrams(CN) - udp6_before


def udp_in_datagrams(ns: str) -> int:
    """Udp InDatagrams of namespace `ns` (/proc/net/snmp is per network namespace)."""
    rows = [line.split() for line in ns_run(ns, "cat", "/proc/net/snmp").stdout.splitlines()]
    udp = [row[1:] for row in rows if row and row[0] == "Udp:"]
    return int(udp[1][udp[0].index("InDatagrams")])


def udp6_in_datagrams(ns: str) -> int:
    """Udp6InDatagrams of namespace `ns` (/proc/net/snmp6; 0 where it has no IPv6)."""
    out = ns_run(ns, "cat", "/proc/net/snmp6", check=False).stdout
    return snmp6_counter(out, "Udp6InDatagrams")


def snmp6_counter(text: str, name: str) -> int:
    """One counter of /proc/net/snmp6's "name value" lines (0 if absent)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == name:
            return int(fields[1])
    return 0


def _pings(ns: str, target: str) -> bool:
    return ns_run(ns, "ping", "-n", "-c", "1", "-W", "1", target, check=False).returncode == 0


def wait_reachable(target: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Ping `target` from the GN until it answers; return the seconds it took."""
    started = time.monotonic()
    wait_until(lambda: _pings(GN, target), timeout, f"{target} to answer the GN's ping", 0.2)
    return round(time.monotonic() - started, 2)


def link_exists(ns: str, name: str) -> bool:
    return ns_run(ns, "ip", "link", "show", name, check=False).returncode == 0


def wait_link(run_: BenchRun, ns: str, name: str, proc: subprocess.Popen[Any], log: str) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"{log} exited ({proc.returncode}): {run_.log_tail(log)}")
        return link_exists(ns, name)

    wait_until(ready, 10.0, f"{name} in {ns}")


def gn_ipv4() -> list[str]:
    info = json.loads(ns_run(GN, "ip", "-j", "addr", "show", GN_IFACE).stdout)[0]
    return [a["local"] for a in info.get("addr_info", []) if a["family"] == "inet"]


def slaac_address(addr_show: list[dict[str, Any]]) -> str | None:
    """From `ip -j -6 addr show dev IFACE`: the global address the kernel configured from a
    Router Advertisement (dynamic, its duplicate address detection done), or None."""
    for iface in addr_show:
        for a in iface.get("addr_info", []):
            if a.get("family", "inet6") != "inet6" or a.get("scope") != "global":
                continue
            if a.get("dynamic") and not a.get("tentative"):
                return str(a["local"])
    return None


def gn_slaac_address() -> str | None:
    return slaac_address(
        json.loads(ns_run(GN, "ip", "-j", "-6", "addr", "show", "dev", GN_IFACE).stdout)
    )


def gn_resolves(name: str, version: int = 4) -> str:
    """The GN resolver's answer for `name` (A, or AAAA for version 6): the last line of
    `dig +short` (a first timed-out try may print a line before it), checked."""
    rtype = "AAAA" if version == 6 else "A"
    answer = ns_run(GN, "dig", "+short", "+time=5", "+tries=2", rtype, name, check=False).stdout
    lines = answer.strip().splitlines()
    return check_ip(lines[-1] if lines else "", f"dig {rtype} {name}", version)


def check_ip(text: str, what: str, version: int = 4) -> str:
    """`text` as an address of IP `version` (4 or 6), or BenchError naming `what`."""
    kind = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    try:
        return str(kind(text.strip()))
    except ValueError:
        got = text.strip()
        raise BenchError(f"{what}: expected an IPv{version} address, got {got!r}") from None


def dhclient_files(run_: BenchRun) -> tuple[str, str]:
    return str(run_.run_dir / "gn.pid"), str(run_.run_dir / "gn.leases")


def start_adapter(run_: BenchRun, name: str = "adapter") -> str:
    """Start adapter `name`; wait until it registered and its GN link is up. Its VIP."""
    state = run_.lab
    start_daemon(state, name)
    registered = wait_log_events(state, {name: "registered"}, timeout=20)[name]
    wait_log_events(state, {name: "gn_ready"}, timeout=10)
    return str(registered["vip"])


def ensure_adapter(run_: BenchRun) -> float | None:
    """The first adapter running and the GN leased (a row after the ntma row, which stops
    the adapter to log its final path_stats, or a row chosen alone). The seconds the lease
    took, None if the GN had one."""
    if not daemon_alive(run_.lab, "adapter"):
        start_adapter(run_)
    return None if gn_ipv4() else lease_gn(run_)


def lease_gn(run_: BenchRun) -> float:
    """ISC dhclient in the GN (it stays, to renew); the seconds it took."""
    pid, leases = dhclient_files(run_)
    started = time.monotonic()
    dh = ns_run(GN, "dhclient", "-1", "-pf", pid, "-lf", leases, GN_IFACE, check=False, timeout=60)
    if dh.returncode != 0:
        raise BenchError(f"dhclient: {one_line(dh.stderr) or f'exit {dh.returncode}'}")
    return round(time.monotonic() - started, 2)
