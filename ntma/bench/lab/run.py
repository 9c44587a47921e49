"""`run_lab_bench`: build the lab, measure every setup in turn, tear it all down."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...lab import LabError, daemon_alive, lab_down, lab_up, log_size, stop_daemon
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


def _start_lab(run_: BenchRun, want_ntma: bool, adapters: int) -> None:
    """Lab with DC and nodes (the adapters are started by the ntma setups, so their failure
    is those setups' error); if the daemons do not come up, the ntma setups fail and the lab
    is rebuilt without them for the others. `adapters`: 2 for the adapter-to-adapter row."""
    try:
        run_.state = lab_up(
            run_.run_dir, daemons=want_ntma, adapter=False, wait_s=30.0, adapters=adapters
        )
    except LabError as exc:
        if not want_ntma:
            raise
        lab_down(run_.run_dir)
        run_.state = lab_up(run_.run_dir, daemons=False, adapters=adapters)
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
    are missing gets {"skipped": "..."}. Returns a JSON-able dict (see `format_lab_report`).
    """
    chosen = list(SETUPS if setups is None else setups)
    unknown = [s for s in chosen if s not in SETUPS]
    if unknown:
        raise ValueError(f"unknown setups {unknown} (choose from {SETUPS})")
    chosen = [s for s in SETUPS if s in chosen]  # always in the documented order
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_ = BenchRun(run_dir, seconds, rtt_count, arp_count)
    results: dict[str, dict[str, Any]] = {}
    table2: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        want_ntma = any(s in chosen and not missing_tools(s) for s in NTMA_SETUPS)
        _start_lab(run_, want_ntma, adapters=2 if "ntma-a2a" in chosen else 1)
        run_.start_servers()
        for name in chosen:
            entry: dict[str, Any] = {}
            results[name] = entry
            missing = missing_tools(name)
            if missing:
                entry["skipped"] = f"{', '.join(missing)} not installed"
                continue
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
    finally:
        run_.stop_all()
        for side in WG_IFACES:
            with contextlib.suppress(Exception):
                cleanup_wg(side)
        lab_down(run_dir)
    summary = compute_ratios(results)
    result = {
        "setups": results,
        "ratios": summary,
        "table2": table2,
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
