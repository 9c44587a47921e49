"""structlog set-up: JSON lines for log tooling, readable lines on a TTY."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


_METHODS = _LEVELS | {"warn": logging.WARNING, "exception": logging.ERROR, "msg": logging.INFO}


class _LevelGate:
    """The level in force, as a processor: loggers bound at start keep their class, so a
    level changed on SIGHUP (reload.py) must be looked up per call, not baked in."""

    def __init__(self) -> None:
        self.level = logging.INFO

    def __call__(self, logger: object, method: str, event: dict) -> dict:
        if _METHODS.get(method, logging.CRITICAL) < self.level:
            raise structlog.DropEvent
        return event


_GATE = _LevelGate()


def set_log_level(level: str) -> None:
    """Takes effect at once, for every logger (the config's `log.level`)."""
    _GATE.level = _LEVELS[level]


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    set_log_level(level)
    structlog.configure(
        processors=[
            _GATE,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            renderer,
        ],
        # Below debug nothing is asked for; the gate filters by the level in force.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


class RateLimitedDebug:
    """Logs a dropped-input detail at most once per interval per reason: at debug level,
    or at `level` for drops an operator should see (someone speaking for another device)."""

    def __init__(
        self,
        log: structlog.typing.FilteringBoundLogger,
        interval_s: float = 5.0,
        level: str = "debug",
    ):
        self._log, self._interval, self._last = log, interval_s, {}
        self._emit = getattr(log, level)

    def __call__(self, now: float, reason: str, **fields) -> None:
        if now - self._last.get(reason, -1e9) >= self._interval:
            self._last[reason] = now
            self._emit("input_dropped", reason=reason, **fields)
