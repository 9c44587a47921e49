"""`ntma check --config FILE [--role ROLE]`: every problem of a config, one line each.

The checks are the loaders' own (config.py): a file that passes here is one the daemon
loads, and a file the daemon refuses fails here with the same lines. The role is --role's,
else the file's: [node], [adapter] or [relay] name their role (each of those also has a [dc]
table, the DC it talks to); a file with none of them but a [dc] table is a DC's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import (
    ConfigError,
    load_adapter_config,
    load_dc_config,
    load_node_config,
    load_relay_config,
)
from .config_doc import _load

LOADERS: dict[str, Callable[[Path], Any]] = {
    "dc": load_dc_config,
    "node": load_node_config,
    "adapter": load_adapter_config,
    "relay": load_relay_config,
}
_OWN_TABLES = ("node", "adapter", "relay")  # the roles whose [dc] table is their DC's


def detect_role(data: dict[str, Any]) -> tuple[str, str]:
    """(role, why) from the file's tables; ConfigError when they name none or several."""
    own = [name for name in _OWN_TABLES if name in data]
    if len(own) == 1:
        return own[0], f"its [{own[0]}] table"
    if own:
        tables = " and ".join(f"[{name}]" for name in own)
        raise ConfigError("--role", f"the file has {tables}", "keep one, or pass --role")
    if "dc" in data:
        return "dc", "its [dc] table and no [node], [adapter] or [relay]"
    fix = "add the role's table ([dc], [node], [adapter] or [relay]) or pass --role"
    raise ConfigError("--role", "no role's table in the file", fix)


def check_config(path: Path, role: str | None = None) -> tuple[list[ConfigError], str]:
    """(every problem found, the line saying the file is good when there are none)."""
    try:
        data, _ = _load(path)
        why = "--role"
        if role is None:
            role, why = detect_role(data)
        LOADERS[role](path)
    except ConfigError as exc:
        return list(getattr(exc, "problems", [exc])), ""
    return [], f"{path} is a valid {role} config (role from {why})"


def run_check(path: Path, role: str | None) -> int:
    """The CLI: one line per problem on stderr and exit 2, or one "ok" line and exit 0."""
    problems, summary = check_config(path, role)
    for problem in problems:
        print(f"ntma check: error: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"ntma check: ok: {summary}")
    return 0
