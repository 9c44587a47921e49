"""The traffic across an event: in ntma-cn the UDP echo server of `ntma.lab.traffic` and
the paced TCP sender of `tcpstream.py` with a file of random bytes; per run, from the
client's namespace, the 100 pps echo stream and one TCP connection that downloads the
file (`tcpstream get`: it never connects again), started before the event and ended after
it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...lab import LabError, ns_exec, ns_run
from .settings import (
    CN,
    ECHO_PORT,
    PPS,
    STOP_TIMEOUT_S,
    TCP_PORT,
    TCP_RATE,
    HandoverError,
    one_line,
    tcpstream_cmd,
    traffic_cmd,
)


class Processes:
    """Processes started in the lab's namespaces for one scenario, output under `dir`."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[Any]] = []

    def spawn(
        self, name: str, ns: str, *cmd: str, stdout: Path | None = None
    ) -> subprocess.Popen[Any]:
        """Start `cmd` in `ns` (its own session); stderr (and stdout, unless given a file of
        its own) to <dir>/<name>.log."""
        with open(self.dir / f"{name}.log", "ab") as log:
            out = open(stdout, "wb") if stdout else log  # noqa: SIM115 (closed below)
            try:
                proc = ns_exec(
                    ns,
                    *cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=log,
                    start_new_session=True,
                )
            finally:
                if stdout:
                    out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)

    def tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            lines = (self.dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
            return one_line(" | ".join(lines[-3:]))
        return ""


def _listening(ns: str, proto: str, port: int) -> bool:
    return f":{port} " in ns_run(ns, "ss", f"-ln{proto}", check=False).stdout


def start_servers(procs: Processes, blob: Path) -> None:
    """The echo server and the paced TCP sender of `blob` in ntma-cn, once both listen."""
    echo = procs.spawn("echo-server", CN, *traffic_cmd("echo-server", ECHO_PORT))
    tcp = procs.spawn("tcp-server", CN, *tcpstream_cmd("serve", TCP_PORT, blob, "--rate", TCP_RATE))
    deadline = time.monotonic() + 10.0
    while not (_listening(CN, "u", ECHO_PORT) and _listening(CN, "t", TCP_PORT)):
        for name, proc in (("echo-server", echo), ("tcp-server", tcp)):
            if proc.poll() is not None:
                raise HandoverError(f"{name} in {CN} exited: {procs.tail(name)}")
        if time.monotonic() >= deadline:
            raise HandoverError(f"the echo server and the TCP sender in {CN} do not listen")
        time.sleep(0.05)


def write_blob(dir: Path, size: int) -> tuple[Path, str]:
    """A file of `size` random bytes for the TCP transfer; its path and sha256."""
    data = os.urandom(size)
    path = dir / f"blob-{size}.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@dataclass
class Traffic:
    """One run's stream and download, in flight."""

    stream: subprocess.Popen[Any]
    stream_out: Path
    tcp: subprocess.Popen[Any]
    tcp_out: Path
    started: float


def start_traffic(procs: Processes, ns: str, host: str, tag: str, seconds: float) -> Traffic:
    """The echo stream to host:ECHO_PORT (at most `seconds` long) and the download from
    host:TCP_PORT, both from namespace `ns`."""
    started = time.monotonic()
    stream_out, tcp_out = procs.dir / f"{tag}-stream.json", procs.dir / f"{tag}-tcp.json"
    stream = procs.spawn(
        f"{tag}-stream",
        ns,
        *traffic_cmd("stream", host, ECHO_PORT, "--pps", PPS, "--seconds", seconds),
        stdout=stream_out,
    )
    tcp = procs.spawn(f"{tag}-tcp", ns, *tcpstream_cmd("get", host, TCP_PORT), stdout=tcp_out)
    return Traffic(stream, stream_out, tcp, tcp_out, started)


def _json_output(procs: Processes, path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise HandoverError(f"{what} printed no result: {procs.tail(path.stem)}") from None


def stream_result(procs: Processes, traffic: Traffic) -> dict[str, Any]:
    """Stop the stream (SIGTERM: it prints what it has) and read its JSON."""
    procs.stop(traffic.stream)
    return _json_output(procs, traffic.stream_out, "the echo stream")


def download_result(
    procs: Processes, traffic: Traffic, size: int, sha256: str, event_at: float
) -> dict[str, Any]:
    """Did the transfer finish intact on its one connection, and did it span the event?
    A download still running is stopped first (it did not finish in the window)."""
    running = traffic.tcp.poll() is None
    procs.stop(traffic.tcp)
    got = _json_output(procs, traffic.tcp_out, "the TCP download")
    out: dict[str, Any] = {
        "expected_bytes": size,
        "bytes": got["bytes"],
        "sha256_ok": got["sha256"] == sha256,
        "connects": got["connects"],
        "seconds": got["seconds"],
        "finished_after_event_s": round(traffic.started + got["seconds"] - event_at, 3),
    }
    why = download_failure(out, running, got["error"])
    out["survived"] = why is None
    if why is not None:
        out["why"] = why
    return out


def download_failure(out: dict[str, Any], running: bool, error: str | None) -> str | None:
    """Why the download in `out` (see `download_result`) does not count as a TCP session
    that survived the event; None when it does."""
    size = out["expected_bytes"]
    if running:
        return f"still running at the end of the window ({out['bytes']} of {size} bytes)"
    if error:
        return f"{error} ({out['bytes']} of {size} bytes)"
    if not out["sha256_ok"] or out["bytes"] != size:
        sha = "ok" if out["sha256_ok"] else "wrong"
        return f"{out['bytes']} bytes of {size}, sha256 {sha}"
    if out["finished_after_event_s"] <= 0:
        return "finished before the event"
    return None


def wait_ping(ns: str, target: str, timeout: float) -> float | None:
    """Seconds until `target` answered a ping from `ns` (one every 50 ms until the first
    reply); None if none within `timeout`."""
    started = time.monotonic()
    deadline = str(max(1, math.ceil(timeout)))
    cmd = ("ping", "-n", "-q", "-c", "1", "-i", "0.05", "-w", deadline, target)
    with contextlib.suppress(LabError):
        if ns_run(ns, *cmd, check=False, timeout=timeout + 5).returncode == 0:
            return round(time.monotonic() - started, 3)
    return None
