"""Runs fuzz targets: counts inputs, groups crashes by exception type and location, and
keeps the first input of each crash and the slowest input."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Mutator
from .registry import PropertyFailure, Target

_PACKAGE = str(Path(__file__).resolve().parents[1])  # .../ntma


@dataclass
class Crash:
    kind: str  # exception type
    location: str  # file:line of the innermost ntma frame
    message: str
    first_input: bytes
    count: int = 0
    before: tuple[bytes, ...] = ()  # earlier inputs the crash needs (stateful targets)


@dataclass
class Result:
    target: str
    inputs: int = 0
    crashes: dict[tuple[str, str], Crash] = field(default_factory=dict)
    slowest_us: float = 0.0
    slowest_input: bytes = b""
    seconds: float = 0.0


def crash_location(exc: BaseException) -> str:
    """For an exception, the innermost frame in ntma/ outside the fuzz harness; for a
    property that failed, the line of the target that checked it."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, PropertyFailure):
        ours = [f for f in frames if not f.filename.endswith("registry.py")]
    else:
        ours = [f for f in frames if f.filename.startswith(_PACKAGE) and "/fuzz/" not in f.filename]
    frame = (ours or frames)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


def crash_key(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, crash_location(exc)


def run_one(target: Target, data: bytes) -> BaseException | None:
    """The crash this input causes, or None (handled or refused as the target declares)."""
    try:
        target.run(data)
    except target.rejects:
        return None
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        return exc
    return None


def run_target(
    target: Target, *, inputs: int, seed: int = 0, seconds: float | None = None
) -> Result:
    """Feed `inputs` mutated inputs (fewer if `seconds` runs out) to target."""
    result = Result(target.name)
    seed_inputs = target.seeds()
    mutator = Mutator(seed_inputs, seed, target.max_input)
    started = time.perf_counter()
    deadline = None if seconds is None else started + seconds
    # The seeds themselves first: a valid input that crashes is the plainest reproducer.
    for index in range(inputs):
        data = seed_inputs[index] if index < len(seed_inputs) else mutator.next_input()
        t0 = time.perf_counter_ns()
        exc = run_one(target, data)
        elapsed_us = (time.perf_counter_ns() - t0) / 1000
        result.inputs += 1
        if elapsed_us > result.slowest_us:
            result.slowest_us, result.slowest_input = elapsed_us, data
        if exc is not None:
            key = crash_key(exc)
            crash = result.crashes.get(key)
            if crash is None:
                before = minimal_history(target, getattr(exc, "fuzz_history", ()), data, key)
                crash = result.crashes[key] = Crash(*key, str(exc)[:200], data, before=before)
            crash.count += 1
        if deadline is not None and index % 256 == 0 and time.perf_counter() > deadline:
            break
    result.seconds = time.perf_counter() - started
    return result


def replay(target: Target, inputs: list[bytes]) -> BaseException | None:
    """Feed inputs to a fresh state in order; the crash the last one causes, or None."""
    if target.reset is not None:
        target.reset()
    for data in inputs[:-1]:
        run_one(target, data)
    exc = run_one(target, inputs[-1])
    if target.reset is not None:
        target.reset()
    return exc


def minimal_history(
    target: Target, history: tuple[bytes, ...], data: bytes, key: tuple[str, str]
) -> tuple[bytes, ...]:
    """The earlier inputs a stateful crash needs, each dropped that it does not need (one
    greedy pass; history is at most one fixture's lifetime, so this stays cheap)."""
    if target.reset is None:
        return ()
    kept = list(history)
    for i in reversed(range(len(kept))):
        trial = kept[:i] + kept[i + 1 :]
        exc = replay(target, [*trial, data])
        if exc is not None and crash_key(exc) == key:
            kept = trial
    return tuple(kept)


def format_table(results: list[Result]) -> str:
    rows = [("target", "inputs", "crashes", "slowest µs", "inputs/s")]
    for r in results:
        rate = r.inputs / r.seconds if r.seconds else 0.0
        rows.append(
            (r.target, str(r.inputs), str(len(r.crashes)), f"{r.slowest_us:.0f}", f"{rate:.0f}")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_crashes(results: list[Result]) -> str:
    lines = []
    for r in results:
        for crash in r.crashes.values():
            inputs = " ".join(d.hex() for d in (*crash.before, crash.first_input))
            lines.append(
                f"{r.target}: {crash.kind} at {crash.location} x{crash.count}: {crash.message}\n"
                f"    python -m ntma.fuzz --repro {r.target} {inputs}"
            )
    return "\n".join(lines)
