"""The lab's daemons as processes: start, stop, is it alive, wait for what it logs.

Each daemon runs in its namespace as a session leader (so stopping it stops its children),
its output appended to its log; its `DaemonSpec` in the state records the pid and the
kernel's start time of that pid, so a pid reused after a crash is never taken for the
daemon. Readiness is what a daemon logs (`wait_log_events`) or a listening socket
(`wait_listening`), never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..observe.logread import LogEvent, read_events
from .netns import namespace_pids, ns_exec
from .settings import LISTEN_TIMEOUT_S, POLL_S, STOP_TIMEOUT_S, LabError, LabNotReady, one_line
from .state import LabState, save_state

#: Popen objects of processes this Python process started (so they get reaped).
_CHILDREN: dict[int, subprocess.Popen[Any]] = {}
#: Exit status of those children once reaped (pid -> returncode), for error messages.
_EXIT_STATUS: dict[int, int] = {}


def proc_starttime(pid: int) -> int | None:
    """Kernel start time of `pid` (to detect pid reuse); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _child_exited(pid: int) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is None or proc.poll() is None:
        return False
    _EXIT_STATUS[pid] = proc.returncode
    del _CHILDREN[pid]
    return True


def pid_alive(pid: int | None, starttime: int | None = None) -> bool:
    if not pid or _child_exited(pid):
        return False
    current = proc_starttime(pid)
    return current is not None and (starttime is None or current == starttime)


def daemon_alive(state: LabState, name: str) -> bool:
    d = state.daemons[name]
    return pid_alive(d.pid, d.starttime)


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)  # daemons are session leaders: pgid == pid
        else:
            os.kill(pid, sig)


def terminate(
    procs: Sequence[tuple[int, int | None]], *, group: bool, timeout: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM every (pid, starttime) still alive, wait up to `timeout`, then SIGKILL."""
    alive = [(p, st) for p, st in procs if pid_alive(p, st)]
    for pid, _ in alive:
        _signal(pid, signal.SIGTERM, group)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [(p, st) for p, st in alive if pid_alive(p, st)]
    for pid, _ in alive:
        _signal(pid, signal.SIGKILL, group)
    deadline = time.monotonic() + 2.0
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [(p, st) for p, st in alive if pid_alive(p, st)]


def _daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # so `-m ntma` works uninstalled
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_daemon(state: LabState, name: str) -> int:
    """Start daemon `name` from state.daemons in its namespace; record and return its pid."""
    d = state.daemons[name]
    if pid_alive(d.pid, d.starttime):
        raise LabError(f"{name} is already running (pid {d.pid})")
    output = d.output
    output.parent.mkdir(parents=True, exist_ok=True)
    offset = log_size(state, name)
    with open(output, "ab") as out:
        proc = ns_exec(
            d.ns,
            *d.cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=state.run_dir,
            env=_daemon_env(),
        )
    _CHILDREN[proc.pid] = proc
    _EXIT_STATUS.pop(proc.pid, None)
    d.pid, d.starttime, d.log_offset = proc.pid, proc_starttime(proc.pid), offset
    if d.log_start is None:
        d.log_start = offset
    save_state(state)
    return proc.pid


def stop_daemon(state: LabState, name: str, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM daemon `name` (its process group), wait up to `timeout` s, then SIGKILL."""
    d = state.daemons[name]
    if d.pid:
        terminate([(d.pid, d.starttime)], group=True, timeout=timeout)
    d.pid, d.starttime = None, None
    save_state(state)


def kill_daemon(state: LabState, name: str, timeout: float = 2.0) -> float | None:
    """SIGKILL daemon `name`'s process group (no clean shutdown: a crash, as `lab restart`
    wants) and wait until it is gone. Returns when the signal went (time.monotonic()), or
    None when it was not running."""
    d = state.daemons[name]
    if not pid_alive(d.pid, d.starttime):
        return None
    assert d.pid is not None
    _signal(d.pid, signal.SIGKILL, group=True)
    killed_at = time.monotonic()
    deadline = killed_at + timeout
    while pid_alive(d.pid, d.starttime):
        if time.monotonic() >= deadline:
            raise LabError(f"{name} (pid {d.pid}) still alive {timeout:g}s after SIGKILL")
        time.sleep(POLL_S / 5)
    d.pid, d.starttime = None, None
    save_state(state)
    return killed_at


def log_size(state: LabState, name: str) -> int:
    """Current size of a daemon's log; pass as `since` to wait_log_events for later events."""
    try:
        return state.daemons[name].log.stat().st_size
    except OSError:
        return 0


def _last_output_line(path: Path, offset: int, limit: int = 200) -> str:
    """The last non-blank line written to `path` after `offset`, on one line, shortened."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, offset))
            data = f.read()[-8192:]
    except OSError:
        return ""
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    last = one_line(lines[-1]) if lines else ""
    return last if len(last) <= limit else last[: limit - 3] + "..."


def exit_report(state: LabState, name: str, wanted: str) -> str:
    """One line: daemon `name` exited (with its status, if known) and its last output line."""
    d = state.daemons[name]
    status = _EXIT_STATUS.get(d.pid) if d.pid else None
    how = "exited" if status is None else f"exited with status {status}"
    last = _last_output_line(d.output, d.log_offset if d.output == d.log else 0)
    said = f": {last}" if last else " (no output)"
    return f"{name} {how} before logging {wanted!r}{said}; read {d.output}"


def wait_log_events(
    state: LabState,
    wanted: dict[str, str],
    *,
    timeout: float = 20.0,
    since: dict[str, int] | None = None,
) -> dict[str, LogEvent]:
    """Wait until each daemon `name` logs a JSON line with "event" == wanted[name].

    Lines are read from `since[name]` (default: where the log was when the daemon started).
    Returns name -> the matching log object. Raises LabNotReady on timeout or daemon exit.
    """
    daemons = state.daemons
    offsets = {n: (since or {}).get(n, daemons[n].log_offset) for n in wanted}
    found: dict[str, LogEvent] = {}
    deadline = time.monotonic() + timeout
    while True:
        for name in [n for n in wanted if n not in found]:
            events, offsets[name] = read_events(daemons[name].log, offsets[name])
            match = next((e for e in events if e.get("event") == wanted[name]), None)
            if match is not None:
                found[name] = match
            elif not daemon_alive(state, name):
                raise LabNotReady(exit_report(state, name, wanted[name]))
        if len(found) == len(wanted):
            return found
        if time.monotonic() >= deadline:
            name = next(n for n in wanted if n not in found)
            raise LabNotReady(
                f"{name} did not log {wanted[name]!r} within {timeout:g}s; read {daemons[name].log}"
            )
        time.sleep(POLL_S * 2)


def _listening(pid: int, proto: str, port: int) -> bool:
    """Is there a socket bound to `port` in pid's namespace (/proc/PID/net is per-netns)?"""
    try:
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and (proto != "tcp" or fields[3] == "0A"):
            return True
    return False


def wait_listening(
    state: LabState, name: str, proto: str, port: int, timeout: float = LISTEN_TIMEOUT_S
) -> None:
    d = state.daemons[name]
    deadline = time.monotonic() + timeout
    while not _listening(d.pid or 0, proto, port):
        if not daemon_alive(state, name):
            raise LabError(f"{name} exited during start; read {d.log}")
        if time.monotonic() >= deadline:
            raise LabError(
                f"{name} not listening on {proto}/{port} after {timeout:g}s; read {d.log}"
            )
        time.sleep(POLL_S)


def kill_namespace_processes(namespaces: Sequence[str]) -> None:
    """Everything still running inside the lab namespaces (test helpers, leftovers...)."""
    pids = [p for ns in namespaces for p in namespace_pids(ns) if p != os.getpid()]
    terminate([(p, proc_starttime(p)) for p in pids], group=False)
