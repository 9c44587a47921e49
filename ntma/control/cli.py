"""`ntma status --config FILE [--json]`: the daemon of that config, asked over its
control socket. Exit 2 with one line when the config is bad, sets no socket, or its
daemon is not running; 1 when the daemon answered badly or not in time."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from ..config import (
    ConfigError,
    load_adapter_config,
    load_dc_config,
    load_node_config,
    load_relay_config,
)
from .client import ControlError, NotRunning, ask_status
from .render import render

LOADERS = {
    "dc": load_dc_config,
    "node": load_node_config,
    "adapter": load_adapter_config,
    "relay": load_relay_config,
}


def role_of(path: Path) -> str:
    """The role a config is for, by its tables: [node], [adapter] and [relay] also have a
    [dc] table (the DC they talk to), so only a config with none of them is the DC's."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return "dc"  # the loader then names what is wrong with the file
    return next((role for role in ("node", "adapter", "relay") if role in data), "dc")


def control_socket_of(path: Path) -> tuple[str, Path]:
    """(role, socket path) of the config at `path`, fully validated; ConfigError else."""
    role = role_of(path)
    socket_path = LOADERS[role](path).control_socket
    if socket_path is None:
        raise ConfigError(
            f"{role}.control_socket",
            "not set, so the daemon opens no control socket",
            f'add control_socket = "/run/ntma/{role}.sock" to [{role}] and restart the daemon',
        )
    return role, socket_path


def status_main(config: Path, as_json: bool) -> int:
    try:
        role, socket_path = control_socket_of(config)
    except ConfigError as exc:
        print(f"ntma status: error: {exc}", file=sys.stderr)
        return 2
    try:
        status = ask_status(socket_path)
    except NotRunning:
        print(
            f"ntma status: error: the {role} is not running (nothing listens on {socket_path}); "
            f"start it with 'ntma {role} --config {config}'",
            file=sys.stderr,
        )
        return 2
    except ControlError as exc:
        print(f"ntma status: error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(status, indent=2) + "\n" if as_json else render(status))
    return 0
