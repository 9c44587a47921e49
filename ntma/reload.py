"""SIGHUP: a running daemon reads its config file again and applies what it can change
without a restart (README, "Reload: SIGHUP": the DC its admission list and relays; a node or an
adapter its log level and names; every role its log level).

The file is loaded by the same loader as at start, so a broken file is refused whole: the
daemon logs `reload_failed` with every problem, one string each, and keeps the config it
runs. A good file is applied by the role's `apply(new)`, which returns what changed; keys
that differ but only take effect at a start are listed in `reloaded`'s `needs_restart`.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterable
from typing import Any

import structlog
import trio

from .config import ConfigError
from .observe.log import set_log_level

Load = Callable[[], Any]  # the role's loader on the file it started from
Apply = Callable[[Any], dict[str, Any]]  # applies a new config; returns what changed


class Reloader:
    """The config in force, and how to replace it; one per daemon."""

    def __init__(self, config: Any, load: Load, apply: Apply, reloadable: Iterable[str]) -> None:
        self.config = config
        self._load = load
        self._apply = apply
        self._reloadable = {"log", *reloadable}
        self._log = structlog.get_logger().bind(task="reload")

    def reload(self) -> bool:
        """Once: True if the new file was applied."""
        try:
            new = self._load()
        except ConfigError as exc:
            problems = [str(p) for p in getattr(exc, "problems", [exc])]
            self._log.warning("reload_failed", problems=problems, kept="the running config")
            return False
        changes = self._apply(new)
        if new.log.level != self.config.log.level:
            set_log_level(new.log.level)
            changes["log_level"] = new.log.level
        needs_restart = [
            f.name
            for f in dataclasses.fields(new)
            if f.name not in self._reloadable
            and _value(getattr(new, f.name)) != _value(getattr(self.config, f.name))
        ]
        self.config = dataclasses.replace(
            self.config, **{name: getattr(new, name) for name in self._reloadable}
        )
        self._log.info("reloaded", **changes, needs_restart=needs_restart)
        return True


def _value(field: Any) -> Any:
    """What a config field is for comparing: a key by its public half."""
    return getattr(field, "public", field)


async def run_reload_on_sighup(
    reloader: Reloader, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGHUP) as hangups:
        task_status.started()
        async for _ in hangups:
            reloader.reload()


SUFFIXES = ("ntm_suffixes",)  # a node's names: which DNS names it resolves through the DC


def reload_suffixes(resolver: Any, new: Any) -> dict[str, Any]:
    """A node's or an adapter's `dns.ntm_suffixes`, for the next query on."""
    if list(new.ntm_suffixes) == list(resolver.suffixes):
        return {}
    resolver.suffixes = list(new.ntm_suffixes)
    return {"ntm_suffixes": resolver.suffixes}


def no_reload(config: Any) -> Load:
    """For a daemon started without a file (tests, the lab's in-process runs): a SIGHUP
    finds the config unchanged."""
    return lambda: config
