"""The control socket every daemon may open (`control_socket` in its config) and
`ntma status` asks: protocol.py (the wire), server.py (the daemon's task), client.py
(the CLI's side), node_status.py and server_status.py (what each role shows), render.py
(the readable table)."""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from .server import ControlListener, ControlSocketError, bind_control_socket, run_control_server

__all__ = ["ControlListener", "open_control_socket", "run_control_server"]


def open_control_socket(path: Path | None, role: str) -> ControlListener | None:
    """The role's control socket bound (None when its config sets none); a ConfigError
    naming `<role>.control_socket` when it cannot be, for the CLI's one-line error."""
    if path is None:
        return None
    try:
        return bind_control_socket(path)
    except ControlSocketError as exc:
        raise ConfigError(f"{role}.control_socket", str(exc), exc.fix) from None
