"""Every fuzz target, codecs first; importing this module registers them all."""

from __future__ import annotations

from . import codecs, codecs6, machines  # noqa: F401  (each module registers its targets on import)
from .registry import TARGETS, Target


def all_targets() -> dict[str, Target]:
    return dict(TARGETS)


def smoke_targets() -> dict[str, Target]:
    """The targets the CI smoke runs (a target that found a crash joins once it is fixed)."""
    return {name: t for name, t in TARGETS.items() if t.smoke}
