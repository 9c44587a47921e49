"""Traffic that spans a mobility event on the namespace lab, and what the logs said about it
(helpers for test_e2e_mobility*.py).

`Spanning` runs, from one end to the other's name, both probes a user would notice a
handover with: a slowed TCP download (`curl --limit-rate`, no retries: the one TCP session
must survive) of random bytes served by `python3 -m http.server`, and a UDP echo stream
(`python3 -m ntma.lab.traffic`, one datagram every 10 ms, its echo times on the monotonic
clock every namespace shares, so `gap_after` compares them with a move's `started_at`).
The client's TCP receive buffer is made small (a sysctl in its namespace), so the bytes
curl has read when the event is done tell how much had still to cross the tunnel.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ntma.lab import (
    LabState,
    events_named,
    gap_after,
    lab_move,
    log_events,
    log_size,
    ns_exec,
    ns_run,
)

from .netns_util import dig, listening, serve_dir, stop, wait_for

REPO = Path(__file__).resolve().parents[1]
ZONE = "ntm.example"
SIZE = 4_500_000  # random bytes
RATE = "700k"  # curl's k is 1024: SIZE takes ~6.3 s
#: The client's TCP receive buffer: small, so what curl has read is nearly all that crossed
#: the tunnel (the default lets the kernel take in megabytes ahead of a slowed reader, and
#: curl 7.88's --limit-rate then reads in bursts far above the rate).
CLIENT_TCP_RMEM = "4096 65536 131072"
IN_FLIGHT_MAX = 1_000_000  # the download has at least this much left to carry after the event
HTTP_PORT = 8080
ECHO_PORT = 9400
PPS = 100
LEAD_S = 1.5  # traffic flowing before the event
TAIL_S = 4.5  # ... and the stream after it
#: The namespace each end's traffic runs in (gn: the general node behind the adapter).
NAMESPACE = {"mn": "ntma-mn", "cn": "ntma-cn", "gn": "ntma-gn"}
#: What the DC and the ends log about moves, restarts and outages (failure messages).
DC_DIAG = {
    "node_moved",
    "node_nat",
    "node_offline",
    "node_online",
    "node_restarted",
    "route_decided",
    "route_updated",
    "tunnels_dormant",
    "no_route",
    "route_direction_unacked",
}
END_DIAG = {
    "registered",
    "tunnel_up",
    "network_changed",
    "route_fallback",
    "direction_failed",
    "dc_unreachable",
    "tunnel_expired",
}


def fqdn(end: str) -> str:
    return f"{end}.{ZONE}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def probe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ntma.lab.traffic", *args]


# --------------------------------------------------------------------------- the logs


def offsets(state: LabState) -> dict[str, int]:
    """Where every daemon's log is now (pass to `events_since` for what comes later)."""
    return {name: log_size(state, name) for name in state.daemons}


def events_since(state: LabState, since: dict[str, int], name: str, *events: str) -> list:
    return events_named(state.daemons[name].log, *events, offset=since.get(name, 0))


def route_updates(state: LabState, since: dict[str, int]) -> list[dict[str, Any]]:
    return events_since(state, since, "dc", "route_updated")


def wait_route_updated(
    state: LabState,
    since: dict[str, int],
    causes: set[str],
    pair: tuple[str, str],
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The DC's `route_updated` events for the tunnel between fqdns `pair` after `since`,
    once there is one with a cause in `causes` (oldest first)."""

    def found():
        ends = set(pair)
        updates = [
            e for e in route_updates(state, since) if {e.get("requester"), e.get("target")} == ends
        ]
        return updates if any(e.get("cause") in causes for e in updates) else None

    try:
        return wait_for(found, timeout, f"the DC's route_updated ({'/'.join(sorted(causes))})")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diag(state, since)}") from None


#: fqdn -> the lab host it runs on; a NAT mode -> the reach the DC should see.
HOST_OF = {"mn.ntm.example": "mn", "cn.ntm.example": "cn", "gn.ntm.example": "adapter"}
REACH_OF = {"none": "public", "cone": "cone", "symmetric": "symmetric"}


def check_reaches(
    state: LabState, since: dict[str, int], updates: list[dict[str, Any]], nat: dict[str, str]
) -> None:
    """Every re-direction saw both ends as they are now (`nat`: host -> NAT mode): the DC
    re-decides a route from the ends' current reach (7.3), never from a stale endpoint."""
    for u in updates:
        seen = (u["requester_reach"], u["target_reach"])
        want = tuple(REACH_OF[nat[HOST_OF[u[end]]]] for end in ("requester", "target"))
        assert seen == want, (
            f"route_updated ({u['cause']}) saw reaches {seen}, the ends are {want}: {u}\n"
            + diag(state, since)
        )


def diag(state: LabState, since: dict[str, int] | None = None) -> str:
    """What the DC and the ends said (moves, routes, tunnels, warnings) since `since`."""
    since = since or {}
    lines = []
    for name in ("dc", "relay", "mn", "cn", "adapter"):
        wanted = DC_DIAG if name == "dc" else END_DIAG
        path = state.daemons[name].log
        for e in events_named(path, *wanted, offset=since.get(name, 0)):
            lines.append(f"{name}: {json.dumps(e)[:400]}")
        for e in _warnings(path, since.get(name, 0)):
            lines.append(f"{name}: {json.dumps(e)[:400]}")
    return "\n".join(lines)


def _warnings(path: Path, offset: int) -> list[dict[str, Any]]:
    return [e for e in log_events(path, offset) if e.get("level") in ("warning", "error")]


# --------------------------------------------------------------------------- events


def move_together(run_dir: Path, moves: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """`lab_move` of each (host, to) at once, from threads started together."""
    records: list[Any] = [None] * len(moves)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(moves))

    def one(i: int, host: str, to: str) -> None:
        barrier.wait()
        try:
            records[i] = lab_move(run_dir, host, to)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, *m)) for i, m in enumerate(moves)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return records


# --------------------------------------------------------------------------- the traffic


@dataclass
class Outcome:
    """What the two probes saw."""

    curl_rc: int | None
    curl_out: str  # curl -w: http code, bytes, seconds
    curl_err: str
    sha_ok: bool
    size: int
    stream: dict[str, Any]

    def gap(self, t: float) -> float | None:
        return gap_after(self.stream.get("replies", []), t)

    def echoes_after(self, t: float) -> int:
        return sum(1 for r in self.stream.get("replies", []) if r > t)


class Spanning:
    """A TCP download and a UDP stream from `client` to `server`'s name (ends: mn, cn, gn),
    started before an event and finished after it: `start()`, the event, `outcome()`."""

    def __init__(
        self,
        client: str,
        server: str,
        tmp: Path,
        *,
        stream_s: float,
        rate: str = RATE,
    ) -> None:
        self.client, self.server, self.tmp = client, server, tmp
        self.client_ns, self.server_ns = NAMESPACE[client], NAMESPACE[server]
        self.name = fqdn(server)
        self.stream_s, self.rate = stream_s, rate
        self.blob = os.urandom(SIZE)
        self.out = tmp / "blob.out"
        self._procs: list[subprocess.Popen[Any]] = []
        self.curl: subprocess.Popen[Any] | None = None
        self.stream: subprocess.Popen[Any] | None = None
        self.started = 0.0

    # -- servers (they run on through the event, in the server's namespace)

    def _serve(self) -> None:
        www = self.tmp / "www"
        www.mkdir(exist_ok=True)
        (www / "blob").write_bytes(self.blob)
        self._procs.append(serve_dir(self.server_ns, www, self.tmp / "http.log", HTTP_PORT))
        echo = ns_exec(
            self.server_ns,
            *probe_cmd("echo-server", str(ECHO_PORT)),
            stdout=(self.tmp / "echo.log").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=_env(),
        )
        self._procs.append(echo)
        wait_for(lambda: listening(self.server_ns, ECHO_PORT, "u"), 10, "the echo server")

    def start(self, state: LabState) -> None:
        self._serve()
        # The name first: its lookup builds the tunnel, so the probes start on a tunnel.
        vip = dig(self.client_ns, self.name)
        assert vip, f"{self.client_ns} could not resolve {self.name}\n{diag(state)}"
        ns_run(self.client_ns, "sysctl", "-qw", f"net.ipv4.tcp_rmem={CLIENT_TCP_RMEM}")
        self.started = time.monotonic()
        # No --retry, no --max-time or --speed-time: only the one TCP session, however slow.
        self.curl = ns_exec(
            self.client_ns,
            "curl",
            "-sS",
            "--retry",
            "0",
            "--connect-timeout",
            "10",
            "--limit-rate",
            self.rate,
            "-o",
            str(self.out),
            "-w",
            "%{http_code} %{size_download} %{time_total}",
            f"http://{self.name}:{HTTP_PORT}/blob",
            stdout=(self.tmp / "curl.out").open("wb"),
            stderr=(self.tmp / "curl.err").open("wb"),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs.append(self.curl)
        self.stream = ns_exec(
            self.client_ns,
            *probe_cmd("stream", self.name, str(ECHO_PORT), "--pps", str(PPS)),
            "--seconds",
            str(self.stream_s),
            stdout=(self.tmp / "stream.json").open("wb"),
            stderr=(self.tmp / "stream.err").open("wb"),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=_env(),
        )
        self._procs.append(self.stream)
        wait_for(
            lambda: self.out.exists() and self.out.stat().st_size >= 500_000,
            10,
            "the download to get going",
            interval=0.05,
        )
        time.sleep(max(0.0, self.started + LEAD_S - time.monotonic()))

    def left(self) -> int:
        """Bytes the download has still to carry (0 once curl has exited)."""
        assert self.curl is not None
        size = self.out.stat().st_size if self.out.exists() else 0
        return SIZE - size if self.curl.poll() is None else 0

    def outcome(self, timeout: float = 90.0) -> Outcome:
        assert self.stream is not None
        assert self.curl is not None
        try:
            rc: int | None = self.curl.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None  # still running: close() stops it
        deadline = self.started + self.stream_s + 20
        try:
            self.stream.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop(self.stream)
        text = (self.tmp / "stream.json").read_text().strip()
        stream = json.loads(text.splitlines()[-1]) if text else {}
        data = self.out.read_bytes() if self.out.exists() else b""
        return Outcome(
            curl_rc=rc,
            curl_out=(self.tmp / "curl.out").read_text(),
            curl_err=(self.tmp / "curl.err").read_text(),
            sha_ok=hashlib.sha256(data).digest() == hashlib.sha256(self.blob).digest(),
            size=len(data),
            stream=stream,
        )

    def close(self) -> None:
        for proc in reversed(self._procs):
            stop(proc)


# --------------------------------------------------------------------------- one event


@dataclass
class Spanned:
    """The probes' outcome around one event, and when the event began and was done
    (time.monotonic(), the clock of the stream's echo times)."""

    got: Outcome
    began: float
    done: float
    left: int  # bytes the download had still to carry when the event was done
    since: dict[str, int]  # the logs' offsets just before the event
    records: Any  # what the event's lab call(s) returned

    @property
    def gap(self) -> float | None:
        return self.got.gap(self.began)


def span_event(
    state: LabState,
    tmp: Path,
    client: str,
    server: str,
    event: Callable[[], tuple[float, float, Any]],
    *,
    event_s: float,
) -> Spanned:
    """Start the probes from `client` to `server`'s name, run `event` (it returns when it
    began, when it was done and its records), then let the probes finish. `event_s`: about
    how long the event takes (the stream runs LEAD_S + event_s + TAIL_S)."""
    traffic = Spanning(client, server, tmp, stream_s=LEAD_S + event_s + TAIL_S)
    try:
        traffic.start(state)
        since = offsets(state)
        began, done, records = event()
        left = traffic.left()
        got = traffic.outcome(timeout=60 + 2 * event_s)
    finally:
        traffic.close()
    return Spanned(got, began, done, left, since, records)


def report(label: str, sp: Spanned) -> None:
    """One line per cell (pytest -s shows it): the UDP gap, the download, the event."""
    took = (sp.got.curl_out.split() + ["-", "-", "-"])[2]
    gap = "never resumed" if sp.gap is None else f"{sp.gap:.3f} s"
    print(
        f"\n{label}: UDP gap {gap}, download {took} s, event {sp.done - sp.began:.3f} s, "
        f"{sp.left} bytes left after it, echoes {sp.got.stream.get('received')}/"
        f"{sp.got.stream.get('sent')}"
    )


def check_download(state: LabState, sp: Spanned) -> None:
    """The one TCP session carried the whole file through the event."""
    got, why = sp.got, diag(state, sp.since)
    assert sp.left > IN_FLIGHT_MAX, f"the download had only {sp.left} bytes left after the event"
    assert got.curl_rc == 0, f"curl exited {got.curl_rc}: {got.curl_err}\n{why}"
    assert got.curl_out.split()[:2] == ["200", str(SIZE)], got.curl_out
    assert got.sha_ok, f"sha256 differs ({got.size} bytes received)"


def check_stream(state: LabState, sp: Spanned, bound: float) -> None:
    """The UDP stream resumed after the event, within `bound` seconds, and went on."""
    why = diag(state, sp.since)
    assert sp.gap is not None, f"the UDP stream never resumed\n{why}"
    assert sp.gap < bound, f"UDP gap {sp.gap:.2f} s (bound {bound:g} s)\n{why}"
    after = sp.got.echoes_after(sp.done)
    assert after >= PPS // 2, f"only {after} echoes after the event\n{why}"
