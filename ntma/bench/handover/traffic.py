"""The traffic across an event: in ntma-cn the UDP echo server of `ntma.lab.traffic` and
http.server with a file of random bytes; per run, from the client's namespace, the 100 pps
echo stream and a rate-limited curl download of that file (one TCP connection: curl is
not told to retry), started before the event and ended after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...lab import LabError, ns_exec, ns_run
from .settings import (
    CN,
    ECHO_PORT,
    HTTP_PORT,
    PPS,
    STOP_TIMEOUT_S,
    TCP_RATE,
    HandoverError,
    one_line,
    traffic_cmd,
)

#: curl's summary line: status, bytes, connections made, seconds.
CURL_WRITE_OUT = "%{http_code} %{size_download} %{num_connects} %{time_total}\n"


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


def start_servers(procs: Processes, www: Path) -> None:
    """The echo server and http.server in ntma-cn, returned once both listen."""
    echo = procs.spawn("echo-server", CN, *traffic_cmd("echo-server", ECHO_PORT))
    http = procs.spawn(
        "http-server",
        CN,
        sys.executable,
        "-m",
        "http.server",
        str(HTTP_PORT),
        "--bind",
        "0.0.0.0",
        "--directory",
        str(www),
    )
    deadline = time.monotonic() + 10.0
    while not (_listening(CN, "u", ECHO_PORT) and _listening(CN, "t", HTTP_PORT)):
        for name, proc in (("echo-server", echo), ("http-server", http)):
            if proc.poll() is not None:
                raise HandoverError(f"{name} in {CN} exited: {procs.tail(name)}")
        if time.monotonic() >= deadline:
            raise HandoverError(f"the echo server and http.server in {CN} do not listen")
        time.sleep(0.05)


def write_blob(www: Path, size: int) -> tuple[str, str]:
    """A file of `size` random bytes for the TCP transfer; its name and sha256."""
    www.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    name = f"blob-{size}.bin"
    (www / name).write_bytes(data)
    return name, hashlib.sha256(data).hexdigest()


@dataclass
class Traffic:
    """One run's stream and download, in flight."""

    stream: subprocess.Popen[Any]
    stream_out: Path
    curl: subprocess.Popen[Any]
    curl_out: Path
    curl_file: Path
    started: float


def start_traffic(
    procs: Processes, ns: str, host: str, url: str, tag: str, seconds: float
) -> Traffic:
    """The echo stream to host:ECHO_PORT (at most `seconds` long) and the download of
    `url`, both from namespace `ns`."""
    started = time.monotonic()
    stream_out = procs.dir / f"{tag}-stream.json"
    stream = procs.spawn(
        f"{tag}-stream",
        ns,
        *traffic_cmd("stream", host, ECHO_PORT, "--pps", PPS, "--seconds", seconds),
        stdout=stream_out,
    )
    curl_out, curl_file = procs.dir / f"{tag}-curl.txt", procs.dir / f"{tag}-download.bin"
    curl = procs.spawn(
        f"{tag}-curl",
        ns,
        "curl",
        "-sS",
        "--limit-rate",
        str(TCP_RATE),
        "--max-time",
        str(round(seconds)),
        "-o",
        str(curl_file),
        "-w",
        CURL_WRITE_OUT,
        url,
        stdout=curl_out,
    )
    return Traffic(stream, stream_out, curl, curl_out, curl_file, started)


def stream_result(procs: Processes, traffic: Traffic) -> dict[str, Any]:
    """Stop the stream (SIGTERM: it prints what it has) and read its JSON."""
    procs.stop(traffic.stream)
    try:
        return json.loads(traffic.stream_out.read_text())
    except (OSError, ValueError):
        why = procs.tail(traffic.stream_out.name.replace(".json", ""))
        raise HandoverError(f"the echo stream printed no result: {why}") from None


def download_result(
    procs: Processes, traffic: Traffic, size: int, sha256: str, event_at: float
) -> dict[str, Any]:
    """Did the transfer finish intact on its one connection, and did it span the event?
    A curl still running is stopped first (it did not finish in the window)."""
    running = traffic.curl.poll() is None
    procs.stop(traffic.curl)
    out: dict[str, Any] = {"expected_bytes": size}
    fields = traffic.curl_out.read_text().split() if traffic.curl_out.exists() else []
    if len(fields) == 4:
        out["http_status"], out["connects"] = int(fields[0]), int(fields[2])
        out["bytes"], out["seconds"] = int(fields[1]), float(fields[3])
    try:
        data = traffic.curl_file.read_bytes()
    except OSError:
        data = b""
    out["sha256_ok"] = hashlib.sha256(data).hexdigest() == sha256
    out["finished_after_event_s"] = (
        round(traffic.started + out["seconds"] - event_at, 3) if "seconds" in out else None
    )
    with contextlib.suppress(OSError):
        traffic.curl_file.unlink()
    why = download_failure(out, running, traffic.curl.returncode, procs.tail(traffic.curl_out.stem))
    out["survived"] = why is None
    if why is not None:
        out["why"] = why
    return out


def download_failure(
    out: dict[str, Any], running: bool, returncode: int | None, stderr: str = ""
) -> str | None:
    """Why the download in `out` (see `download_result`) does not count as a TCP session
    that survived the event; None when it does."""
    size = out["expected_bytes"]
    if running:
        return "still running at the end of the window"
    if returncode != 0:
        return f"curl exit {returncode}: {stderr}".rstrip(": ")
    if out.get("http_status") != 200 or out.get("connects") != 1:
        return f"HTTP {out.get('http_status')} on {out.get('connects')} connections"
    if not out.get("sha256_ok") or out.get("bytes") != size:
        sha = "ok" if out.get("sha256_ok") else "wrong"
        return f"{out.get('bytes')} bytes of {size}, sha256 {sha}"
    after = out.get("finished_after_event_s")
    if after is not None and after <= 0:
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
