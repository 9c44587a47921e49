"""`run_lab_bench`: build the lab, measure every setup in turn, tear it all down. A setup
that needs a topology of its own (`plan.py`) runs after the others, on a lab brought down
and up again for it."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...lab import LabError, daemon_alive, lab_down, lab_up, log_size, stop_daemon
from .plan import LabPlan, plan_labs
from .results import compute_ratios, merge_light, missing_tools, read_table2, tool_versions
from .session import BenchRun
from .settings import (
    ADAPTER_STOP_TIMEOUT_S,
    NTMA_SETUPS,
    OFFLOAD_NOTE,
    RATIO_NOTE,
    SETUPS,
    WG_IFACES,
    one_line,
)
from .setups import SETUP_FUNCS, route_gn
from .tunnels import cleanup_wg


def _start_lab(run_: BenchRun, want_ntma: bool, options: dict[str, Any]) -> None:
    """Lab with DC and nodes (the adapters are started by the ntma setups, so their failure
    is those setups' error); if the daemons do not come up, the ntma setups fail and the lab
    is rebuilt without them for the others. `options`: the plan's `lab_up` options (2
    adapters for the adapter-to-adapter row, vip6, the IPv6 underlay's topology)."""
    try:
        run_.state = lab_up(run_.run_dir, daemons=want_ntma, adapter=False, wait_s=30.0, **options)
    except LabError as exc:
        if not want_ntma:
            raise
        lab_down(run_.run_dir)
        run_.state = lab_up(run_.run_dir, daemons=False, **options)
        run_.ntma_error = f"lab daemons did not come up: {one_line(exc)}"
    # The run dir may hold logs of earlier runs (daemons append): read only this run's.
    run_.adapter_log_offset = log_size(run_.lab, "adapter")


def _stop_lab_daemons(run_: BenchRun) -> None:
    """After the ntma setups: the DC, relay, nodes and adapters are not needed any more;
    quiet the machine."""
    state = run_.state
    for name, d in (state.daemons if state else {}).items():
        if name not in ("web", "dnsmasq") and d.pid:
            with contextlib.suppress(Exception):
                stop_daemon(state, name, timeout=ADAPTER_STOP_TIMEOUT_S)


def _table2_of_the_ntma_row(run_: BenchRun) -> dict[str, Any]:
    """The adapter stopped (it logs its final path_stats, over the ntma row's traffic only:
    the adapter-to-adapter row starts it again), then Table 2 from its log."""
    state = run_.lab
    if state.daemons["adapter"].pid and daemon_alive(state, "adapter"):
        try:
            stop_daemon(state, "adapter", timeout=ADAPTER_STOP_TIMEOUT_S)
        except Exception as exc:
            run_.notes.append(one_line(f"stopping the adapter failed: {exc}"))
    table2 = read_table2(state.daemons["adapter"].log, run_.adapter_log_offset)
    merge_light(table2, run_.table2_light)
    return table2


def _clean_up(run_: BenchRun) -> None:
    """Every process this run started stopped, wireguard-go's sockets gone."""
    run_.stop_all()
    for side in WG_IFACES:
        with contextlib.suppress(Exception):
            cleanup_wg(side)


def _bring_up(run_: BenchRun, plan: LabPlan, first: bool) -> dict[str, Any]:
    """The plan's lab up, with the servers in ntma-cn; a lab after the first replaces the
    one before (down, then up). What it took, for the result's "labs"."""
    record: dict[str, Any] = {"setups": plan.setups, "options": plan.options}
    if not first:
        started = time.monotonic()
        _clean_up(run_)
        lab_down(run_.run_dir)
        run_.new_lab()
        record["down_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    want_ntma = any(s in NTMA_SETUPS for s in plan.setups)
    _start_lab(run_, want_ntma, plan.options)
    run_.start_servers()
    record["up_s"] = round(time.monotonic() - started, 1)
    return record


def _measure(run_: BenchRun, name: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    """One setup into `entry`; Table 2 if it is the ntma row."""
    table2 = None
    t0 = time.monotonic()
    try:
        if name not in NTMA_SETUPS and not run_.gn_routed:
            _leave_ntma(run_)
        SETUP_FUNCS[name](run_, entry)
    except Exception as exc:  # one setup's failure must not stop the others
        entry["error"] = one_line(f"{type(exc).__name__}: {exc}")
    finally:
        if name == "ntma":
            table2 = _table2_of_the_ntma_row(run_)
        entry["seconds_taken"] = round(time.monotonic() - t0, 1)
    return table2


def _leave_ntma(run_: BenchRun) -> None:
    """Before the first setup without NTMobile: the lab's daemons stop, and ntma-adapter
    becomes a plain router for the GN."""
    _stop_lab_daemons(run_)
    route_gn(run_)


def run_lab_bench(
    run_dir: Path,
    *,
    seconds: float = 5.0,
    rtt_count: int = 1000,
    setups: Iterable[str] | None = None,
    arp_count: int = 1000,
) -> dict[str, Any]:
    """Build the lab, measure each setup in turn (see the module doc), tear it all down.

    A setup that fails gets {"error": "..."} and the others still run; a setup whose tools
    are missing gets {"skipped": "..."}. Each lab the run built is in "labs" (its options,
    setups, and the seconds to bring it up, and the one before it down); a setup measured
    on a lab brought up for it after another has that lab's "lab_rebuilt_s". Returns a
    JSON-able dict (see `format_lab_report`); "setups" in SETUPS order.
    """
    chosen = list(SETUPS if setups is None else setups)
    unknown = [s for s in chosen if s not in SETUPS]
    if unknown:
        raise ValueError(f"unknown setups {unknown} (choose from {SETUPS})")
    chosen = [s for s in SETUPS if s in chosen]  # always in the documented order
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_ = BenchRun(run_dir, seconds, rtt_count, arp_count)
    results: dict[str, dict[str, Any]] = {name: {} for name in chosen}
    for name in chosen:
        missing = missing_tools(name)
        if missing:
            results[name]["skipped"] = f"{', '.join(missing)} not installed"
    table2: dict[str, Any] | None = None
    labs: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        plans = plan_labs([n for n in chosen if "skipped" not in results[n]])
        for i, plan in enumerate(plans):
            try:
                labs.append(_bring_up(run_, plan, first=i == 0))
            except Exception as exc:
                if i == 0:
                    raise
                why = one_line(f"its lab did not come up: {type(exc).__name__}: {exc}")
                for name in plan.setups:
                    results[name]["error"] = why
                continue
            for name in plan.setups:
                if i:
                    results[name]["lab_rebuilt_s"] = round(labs[-1]["down_s"] + labs[-1]["up_s"], 1)
                table2 = _measure(run_, name, results[name]) or table2
    finally:
        _clean_up(run_)
        lab_down(run_dir)
    summary = compute_ratios(results)
    result = {
        "setups": results,
        "ratios": summary,
        "table2": table2,
        "labs": labs,
        "parameters": {
            "seconds": run_.seconds,
            "rtt_count": rtt_count,
            "rtt_payload_bytes": 64,
            "arp_count": arp_count,
            "setups": chosen,
        },
        "versions": tool_versions(),
        "notes": [RATIO_NOTE, *([OFFLOAD_NOTE] if "plain" in chosen else []), *run_.notes],
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    (run_.bench_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
