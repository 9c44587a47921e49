"""Plain helpers for tests on the namespace lab: probes run in namespaces (dig, nc, iperf3,
dhclient, a file server) and a minimal pcap reader for captures taken with tcpdump.

The skip reasons and the lab fixture are in `conftest.py`; logs are read with
`ntma.lab.log_events` (the one reader)."""

from __future__ import annotations

import json
import struct
import subprocess
import time
from pathlib import Path

from ntma.lab import log_events, ns_exec, ns_run

#: The general node's side of the default lab.
GN_NAMESPACES = {"ntma-gn", "ntma-adapter", "ntma-adapter-nat"}
#: The namespaces of the default layout (mn behind a cone NAT, cn and the adapter as default).
DEFAULT_NAMESPACES = {
    "ntma-inet",
    "ntma-dc",
    "ntma-rs",
    "ntma-web",
    "ntma-mn",
    "ntma-mn-nat",
    "ntma-cn",
    *GN_NAMESPACES,
}


def expected_route(a_nat: str, b_nat: str) -> str:
    """What the DC should decide for two ends attached as `a_nat` and `b_nat` ("same":
    behind the other's NAT)."""
    if "none" in (a_nat, b_nat) or "same" in (a_nat, b_nat):
        return "direct"
    if a_nat == b_nat == "cone":
        return "punch"
    return "relay"


#: log events worth showing when a route or tunnel test fails
DIAG_EVENTS = frozenset(
    {
        "node_nat",
        "route_decided",
        "no_route",
        "route_fallback",
        "tunnel_up",
        "direction_failed",
        "punch_failed",
        "relay_bound",
        "relay_refused",
        "route_direction_unacked",
        "dhcp_lease",
        "device_refused",
    }
)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def last_tunnel_up(state, name: str) -> dict:
    """The daemon's latest `tunnel_up` log event, waiting up to 10 s for one."""
    ups = wait_for(
        lambda: [e for e in log_events(state.daemons[name].log) if e.get("event") == "tunnel_up"],
        10,
        f"{name}'s tunnel_up",
    )
    return ups[-1]


def start_in_ns(ns: str, *cmd: str, log: Path) -> subprocess.Popen:
    out = log.open("ab")
    return ns_exec(
        ns,
        *cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def dig(ns: str, name: str, *extra: str) -> str:
    return ns_run(ns, "dig", "+short", "+time=5", "+tries=1", name, *extra).stdout.strip()


def udp_payloads(pcap: Path) -> list[tuple[str, int, str, int, bytes]]:
    """(src ip, src port, dst ip, dst port, payload) of IPv4/UDP frames in an Ethernet pcap."""
    data = pcap.read_bytes()
    if len(data) < 24:
        return []
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    out, pos = [], 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = 14 + ihl
        src = ".".join(map(str, frame[26:30]))
        dst = ".".join(map(str, frame[30:34]))
        sport, dport = struct.unpack_from("!HH", frame, udp)
        out.append((src, sport, dst, dport, frame[udp + 8 :]))
    return out


def listening(ns: str, port: int, proto: str = "t") -> bool:
    return f":{port} " in ns_run(ns, "ss", f"-l{proto}n", check=False).stdout


def serve_dir(ns: str, www: Path, log: Path, port: int = 8080) -> subprocess.Popen:
    """python3 -m http.server in `ns`, returned once it listens."""
    server = start_in_ns(
        ns, "python3", "-m", "http.server", str(port), "--directory", str(www), log=log
    )
    wait_for(lambda: listening(ns, port), 10, f"http.server in {ns}", interval=0.05)
    return server


def gn_dhclient(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """ISC dhclient in the general node's namespace, its pid and lease files under tmp."""
    return ns_run(
        "ntma-gn",
        "dhclient",
        "-1",
        "-pf",
        str(tmp / "dhclient.pid"),
        "-lf",
        str(tmp / "dhclient.leases"),
        *args,
        "eth0",
        check=False,
        timeout=60,
    )


def nc_one_way(sender_ns: str, receiver_ns: str, name: str, port: int, tmp: Path) -> str:
    """One `nc -u` datagram from sender_ns to `name`; returns what the listener got."""
    out = tmp / f"nc-{receiver_ns}-{port}.txt"
    listener = subprocess.Popen(
        ["ip", "netns", "exec", receiver_ns, "nc", "-u", "-l", "-W", "1", str(port)],
        stdout=out.open("wb"),
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: listening(receiver_ns, port, "u"),
            5,
            f"nc -u -l {port} in {receiver_ns}",
            interval=0.05,
        )
        text = f"datagram from {sender_ns} to {receiver_ns}"
        ns_run(sender_ns, "sh", "-c", f"echo '{text}' | nc -u -w 1 {name} {port}", timeout=30)
        listener.wait(10)
    finally:
        stop(listener)
    return out.read_text()


def iperf(client_ns: str, server_ns: str, target: str, seconds: int, *extra: str) -> dict:
    """One iperf3 run (JSON report) against a one-shot server in server_ns."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: listening(server_ns, 5201), 10, f"iperf3 -s in {server_ns}", interval=0.05)
        result = ns_run(
            client_ns,
            "iperf3",
            "-c",
            target,
            "-t",
            str(seconds),
            "-J",
            *extra,
            check=False,
            timeout=30 + 2 * seconds,
        )
    finally:
        stop(server)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return json.loads(result.stdout)
