"""`ntma status`'s side of the control socket: ask once, read the one answer."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from .protocol import RequestError, decode_response, encode_request

ANSWER_MAX = 64 * 1024 * 1024  # a DC with every table full stays well below
ASK_TIMEOUT_S = 5.0


class NotRunning(Exception):
    """Nobody answers at the socket: the daemon is not running (or has no socket)."""


class ControlError(Exception):
    """The daemon answered, but not with a status (or not in time)."""


def ask_status(path: Path, timeout: float = ASK_TIMEOUT_S) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NotRunning(f"no daemon is listening on {path}") from None
        except PermissionError:
            raise ControlError(f"no permission to connect to {path}; run as root") from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path} ({exc.strerror or exc})") from None
        try:
            sock.sendall(encode_request("status"))
            answer = _read_all(sock)
        except TimeoutError:
            raise ControlError(f"the daemon at {path} did not answer in {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"the daemon at {path} hung up ({exc.strerror or exc})") from None
    try:
        return decode_response(answer)
    except RequestError as exc:
        raise ControlError(f"the daemon at {path}: {exc}") from None


def _read_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > ANSWER_MAX:
            raise OSError(0, f"answer larger than {ANSWER_MAX} bytes")
        chunks.append(chunk)
