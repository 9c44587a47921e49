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


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
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
