"""Which labs a run builds, and the setups each carries (pure: tested without root).

The chosen setups whose needs (settings.LAB_NEEDS) are all additive share the main lab,
built with the union of those needs (vip6 if any row wants it, the most adapters any row
wants); every other set of needs is a lab of its own, built after the main lab's rows (the
run brings the lab down and up again for it). Within a lab the setups keep their order in
SETUPS, but for RUN_FIRST, which run before the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .settings import ADDITIVE_LAB_OPTIONS, LAB_NEEDS, RUN_FIRST, SETUPS


@dataclass
class LabPlan:
    """One lab of a run: its `lab_up` options and the setups measured on it, in order."""

    options: dict[str, Any] = field(default_factory=dict)
    setups: list[str] = field(default_factory=list)


def own_topology(setup: str) -> bool:
    """Whether `setup` needs a lab of its own (a need that is not additive)."""
    return any(k not in ADDITIVE_LAB_OPTIONS for k in LAB_NEEDS.get(setup, {}))


def plan_labs(setups: list[str]) -> list[LabPlan]:
    """The labs to build for `setups`, main lab first; none for no setups."""
    ordered = [s for s in SETUPS if s in setups]
    ordered.sort(key=lambda s: s not in RUN_FIRST)  # stable: SETUPS order otherwise
    main = LabPlan()
    others: list[LabPlan] = []
    for setup in ordered:
        needs = LAB_NEEDS.get(setup, {})
        if not own_topology(setup):
            for key, value in needs.items():  # True beats False, 2 adapters beat 1
                main.options[key] = max(main.options.get(key, value), value)
            main.setups.append(setup)
            continue
        same = next((p for p in others if p.options == needs), None)
        if same is None:
            others.append(LabPlan(dict(needs), [setup]))
        else:
            same.setups.append(setup)
    return [p for p in (main, *others) if p.setups]
