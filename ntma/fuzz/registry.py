"""Fuzz targets: a name, a function taking one input's bytes, its seeds, what it may raise.

A target function returns normally when the input was handled (accepted or dropped) and
raises one of its `rejects` exceptions when it refused it; anything else is a crash. A
target may also check properties and raise PropertyFailure (a crash too): whatever
decodes re-encodes, replies stay within their bound, a machine sends only where it may.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..proto.buffer import CodecError


class PropertyFailure(AssertionError):
    """A target's stated property does not hold for this input."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise PropertyFailure(what)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    seeds: Callable[[], list[bytes]]
    rejects: tuple[type[BaseException], ...] = (CodecError,)
    smoke: bool = True  # part of the CI smoke test (a target that found a crash waits for its fix)
    doc: str = ""
    max_input: int = 4096  # the longest input the engine makes for it
    reset: Callable[[], object] | None = None  # a stateful target: start from a fresh state


TARGETS: dict[str, Target] = {}


def target(
    name: str,
    seeds: Callable[[], list[bytes]],
    *,
    rejects: tuple[type[BaseException], ...] = (CodecError,),
    smoke: bool = True,
    max_input: int = 4096,
    reset: Callable[[], object] | None = None,
) -> Callable[[Callable[[bytes], object]], Callable[[bytes], object]]:
    """Register the decorated function as target `name`."""

    def register(run: Callable[[bytes], object]) -> Callable[[bytes], object]:
        if name in TARGETS:
            raise ValueError(f"fuzz target {name} registered twice")
        doc = (run.__doc__ or "").strip().splitlines()
        TARGETS[name] = Target(
            name, run, seeds, rejects, smoke, doc[0] if doc else "", max_input, reset
        )
        return run

    return register
