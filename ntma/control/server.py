"""The control socket: a local AF_UNIX stream socket `ntma status` asks (protocol.py).

    bind_control_socket (before the daemon's nursery: a clear error, or a stale file
    replaced) -> run_control_server (in the nursery) -> one task per client:
    read one request line -> snapshot() -> one response line -> close

A local application is hostile input too: every client gets CLIENT_TIMEOUT_S in all (a
slow or silent one is cut off), at most REQUEST_MAX bytes are read, at most CLIENTS_MAX
are served at once (more are closed at once, counted), and nothing a client sends or
does raises out of its task. The snapshot is built synchronously between two awaits, so
it reads one consistent state and holds nothing across an await (no locks). The file is
made 0600 (only root asks) and removed when the daemon stops, if it is still ours.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

from ..observe.spans import StageStats
from .protocol import RequestError, RequestReader, encode_error, encode_status

CLIENTS_MAX = 8
CLIENT_TIMEOUT_S = 2.0
ACCEPT_BACKLOG = 16
READ_CHUNK = 512
ACCEPT_RETRY_S = 0.1  # out of file descriptors: wait instead of spinning
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with its NUL

Snapshot = Callable[[], dict[str, Any]]


class ControlSocketError(Exception):
    """The socket cannot be made: why (the message), and `fix`, what to do."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.fix = fix


class ControlListener:
    """A bound, listening control socket and the file it made (removed on close)."""

    def __init__(self, path: Path, sock: socket.socket) -> None:
        self.path = path
        self.sock = sock
        self._inode = os.stat(path).st_ino

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:  # not a newer daemon's
                os.unlink(self.path)


def bind_control_socket(path: Path) -> ControlListener:
    """Bind and listen at `path`: a stale socket file (its daemon gone) is replaced, a live
    one or any other file is left alone (ControlSocketError)."""
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ControlSocketError(
            f"{path} is longer than {UNIX_PATH_MAX} bytes", "pick a shorter path"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(ACCEPT_BACKLOG)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        problem = f"cannot make {path} ({exc.strerror or exc})"
        raise ControlSocketError(problem, "pick a path in a directory root can write") from None
    return ControlListener(path, sock)


def _clear_stale(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(
            f"{path} exists and is not a socket", "remove it or pick another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody listens: a crashed daemon's
        return
    except OSError:
        pass  # busy (a full backlog): somebody listens
    finally:
        probe.close()
    fix = "stop the daemon using it, or give this one another path"
    raise ControlSocketError(f"{path} is in use by a running daemon", fix)


async def run_control_server(
    listener: ControlListener,
    snapshot: Snapshot,
    stats: StageStats,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `snapshot()` to each client until cancelled; the caller closes `listener`."""
    log = structlog.get_logger().bind(stage=stats.name)
    sock = trio.socket.from_stdlib_socket(listener.sock)
    clients = trio.CapacityLimiter(CLIENTS_MAX)
    async with trio.open_nursery() as nursery:
        task_status.started()
        log.info("control_socket", path=str(listener.path))
        while True:
            try:
                conn, _ = await sock.accept()
            except OSError as exc:
                stats.drop("accept_error")
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await trio.sleep(ACCEPT_RETRY_S)
                continue
            try:
                clients.acquire_on_behalf_of_nowait(conn)
            except trio.WouldBlock:
                stats.drop("too_many_clients")
                conn.close()
                continue
            nursery.start_soon(_serve_client, conn, snapshot, stats, clients, log)


async def _serve_client(
    conn: trio.socket.SocketType,
    snapshot: Snapshot,
    stats: StageStats,
    clients: trio.CapacityLimiter,
    log: Any,
) -> None:
    try:
        with trio.move_on_after(CLIENT_TIMEOUT_S) as scope:
            stream = trio.SocketStream(conn)
            async with stream:
                reply = await _answer(stream, snapshot, stats, log)
                if reply is not None:
                    await stream.send_all(reply)
        if scope.cancelled_caught:
            stats.drop("client_timeout")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        stats.drop("client_gone")
    finally:
        clients.release_on_behalf_of(conn)
        conn.close()


async def _answer(
    stream: trio.SocketStream, snapshot: Snapshot, stats: StageStats, log: Any
) -> bytes | None:
    """The reply to the client's one request; None when it left without asking."""
    reader = RequestReader()
    try:
        request = None
        while request is None:
            data = await stream.receive_some(READ_CHUNK)
            if not data:
                stats.drop("closed_before_request")
                return None
            request = reader.feed(data)
    except RequestError as exc:
        stats.drop(exc.reason)
        return encode_error(str(exc))
    try:
        reply = encode_status(snapshot())
    except Exception:  # a bug in a snapshot must not end the daemon
        log.exception("control_snapshot_failed")
        stats.drop("snapshot_failed")
        return encode_error("the daemon could not read its state; see its log")
    stats.count("status_answered")
    return reply
