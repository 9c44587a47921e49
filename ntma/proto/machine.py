"""The one contract every sans-IO machine follows: the node's signalling, the DC, the RS.

A machine does no I/O and reads no clock. Its driver (a Trio task) feeds it and drains it:

    receive(datagram, addr, now)   a datagram arrived from addr
    handle_timer(now)              get_timer() has passed (a driver may call it early)
    get_timer() -> float | None    when handle_timer wants to run next (None: no timer)
    datagrams_to_send()            what to send now, as (bytes, endpoint) pairs
    events()                       typed events since the last call, oldest first
    drops                          a Counter of inputs dropped, by reason

Rules shared by all three: an input that cannot be understood or is not allowed is
dropped and counted under a short reason, never raised out of receive(); `now` is
monotonic seconds from the driver's clock; what a machine needs of randomness and
key generation is injected, so tests can make it deterministic.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any, ClassVar, Protocol, TypeVar

from .buffer import Endpoint


@dataclasses.dataclass(frozen=True)
class Event:
    """Base of every machine's events. `log_name` is the name it is logged under (derived from the
    class name unless a subclass sets it), at `log_level`; `log_fields()` the fields a driver
    logs."""

    log_name: ClassVar[str] = ""
    log_level: ClassVar[str] = "info"  # a structlog method name: debug, info, warning, error

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "log_name" not in cls.__dict__:
            cls.log_name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    def log_fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class Drops(Counter[str]):
    """Inputs dropped, by reason."""

    def drop(self, reason: str, count: int = 1) -> None:
        self[reason] += count


E_co = TypeVar("E_co", bound=Event, covariant=True)


class Machine(Protocol[E_co]):
    drops: Drops

    def receive(self, datagram: bytes, addr: Endpoint, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]: ...
    def events(self) -> list[E_co]: ...
