"""The userspace tunnels a user would pick instead of the adapter: tinc, wireguard-go,
OpenVPN, each between ntma-adapter and ntma-cn, set up with its defaults (see the notes in
`settings.py`), measured, and removed again (processes, interfaces, sockets).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ...lab import LabError, ip, ns_run, run, write_private
from .session import BenchRun, link_exists, wait_link, wait_reachable
from .settings import (
    ADAPTER,
    CN,
    CN_PUBLIC,
    GN_NET,
    OVPN_AUTH,
    OVPN_CIPHER,
    OVPN_IFACE,
    OVPN_IPS,
    OVPN_NOTE,
    OVPN_PORT,
    TINC_IFACE,
    TINC_IPS,
    TINC_NET,
    TINC_NODE_LINE,
    TINC_NOTE,
    TINC_PMTU_TIMEOUT_S,
    WG_IFACES,
    WG_IPS,
    WG_NOTE,
    WG_PORT,
    WG_SOCKET_DIR,
    BenchError,
    wait_until,
)


def _tunnel_sides() -> dict[str, str]:
    return {"adapter": ADAPTER, "cn": CN}


def _tunnel_addresses(side: str, iface: str, local: str, peer: str) -> None:
    """Address and routes of one tunnel end: the adapter routes the peer's /32 into the
    tunnel, cn routes the GN's network back."""
    ns = _tunnel_sides()[side]
    ip(ns, "addr", "add", f"{local}/32", "dev", iface)
    ip(ns, "link", "set", iface, "up")
    ip(ns, "route", "replace", GN_NET if side == "cn" else f"{peer}/32", "dev", iface)


def setup_tinc(run_: BenchRun, entry: dict[str, Any]) -> None:
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
            wait_link(run_, ns, TINC_IFACE, procs[side], f"tincd-{side}")
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
    found = [m for m in TINC_NODE_LINE.finditer(text) if m["node"] == peer]
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


def wg_socket(iface: str) -> Path:
    return WG_SOCKET_DIR / f"{iface}.sock"


def clear_stale_wg_socket(iface: str, error: type[Exception] = BenchError) -> None:
    """Remove a wireguard-go control socket left by a crash; `error` if one is in use."""
    path = wg_socket(iface)
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # nobody behind it: left by a crash
            return
    raise error(f"{path} is in use by a running wireguard-go")


def cleanup_wg(side: str) -> None:
    iface, ns = WG_IFACES[side], _tunnel_sides()[side]
    with contextlib.suppress(OSError):
        wg_socket(iface).unlink(missing_ok=True)
    with contextlib.suppress(LabError):
        if link_exists(ns, iface):
            ns_run(ns, "ip", "link", "del", iface, check=False)


def setup_wireguard(run_: BenchRun, entry: dict[str, Any]) -> None:
    base = run_.run_dir / "wireguard"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    public = {}
    for side in WG_IFACES:
        private = run("wg", "genkey").stdout.strip()
        write_private(base / f"{side}.key", private + "\n")
        public[side] = run("wg", "pubkey", input=private + "\n").stdout.strip()
        clear_stale_wg_socket(WG_IFACES[side])
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
    procs = {}
    try:
        for side, ns in _tunnel_sides().items():
            procs[side] = run_.spawn(
                f"wireguard-go-{side}", ns, "wireguard-go", WG_IFACES[side], env=env
            )
        for side, ns in _tunnel_sides().items():
            wait_link(run_, ns, WG_IFACES[side], procs[side], f"wireguard-go-{side}")
            wait_until(wg_socket(WG_IFACES[side]).exists, 10.0, f"{wg_socket(WG_IFACES[side])}")
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
            cleanup_wg(side)


def setup_openvpn(run_: BenchRun, entry: dict[str, Any]) -> None:
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
            wait_link(run_, ns, OVPN_IFACE, procs[side], f"openvpn-{side}")
        entry["note"] = OVPN_NOTE
        entry["ready_s"] = wait_reachable(OVPN_IPS["cn"], timeout=30)
        run_.measure(entry, OVPN_IPS["cn"])
    finally:
        for proc in procs.values():
            run_.stop(proc)
