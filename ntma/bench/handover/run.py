"""`run_handover_bench`: every chosen scenario on a lab of its own, N runs in it, the lab
brought down in a `finally`; one run is: the path works, traffic starts, the event, the
traffic ends after the window, what it gave, then the move back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...lab import (
    GN_IFACE,
    LabError,
    LabState,
    lab_down,
    lab_move,
    lab_nat_reset,
    lab_restart,
    lab_up,
    log_events,
    log_size,
    ns_run,
)
from ..lab.results import tool_version
from .logtimes import clock_offset, dc_reregistered, dc_route_updated, named, since_event
from .scenarios import BY_NAME, SCENARIO_NAMES, Scenario
from .settings import (
    AFTER_S,
    CN,
    CN_NAME,
    GN,
    MIN_AFTER_S,
    MN,
    PPS,
    PRE_S,
    READY_TIMEOUT_S,
    RETURN_CHECK_S,
    TCP_RATE,
    TOOLS,
    WG_IPS,
    WINDOW_S,
    HandoverError,
    one_line,
)
from .stats import gap_target, handover_gap, resumed_at, summarise_scenario
from .traffic import (
    Processes,
    download_result,
    start_servers,
    start_traffic,
    stream_result,
    wait_ping,
    write_blob,
)
from .wireguard import WireGuard

NOTES = (
    "gap: the longest silence of a 100 pps UDP echo stream from the client to cn through "
    "the tunnel that covers or follows the event's start (a move: lab_move's started_at, "
    "before the old link goes; a restart: the SIGKILL; a NAT reset: just before the "
    "flush), `ntma.lab.traffic.gap_after`. No recovery: no echo by the end of the window.",
    "after link up: from the new link being up (lab_move's up_at; both movers: the "
    "second's) to the end of the gap, the part that is not the lab's own switch (tearing "
    "the old link down and building the new one, started_at to up_at).",
    "re-registration: from the event to the DC's first node_moved or node_registered for "
    "the mover (both movers: the later of the two), read from the DC's JSON log.",
    "TCP: one connection from the client to cn (by name for ntma) carrying a file of random "
    "bytes, paced by the sender in cn at 200 kB/s so that it is still sending for seconds "
    "after the event; survived = the whole file with the right sha256 on that connection "
    "(it never connects again) within the window.",
    "p99 is the nearest-rank 99th percentile: with fewer than 100 runs it is the largest "
    "value (the worst run). A gap target passes when every run recovered within it.",
    "wireguard-go: the same events, no DC. The end behind a NAT (or the only one that can "
    "reach the other) is given the other's endpoint and a persistent keep-alive; the other "
    "learns and follows the authenticated source. After a run without recovery its "
    "endpoint is set again by hand before the next run.",
)


#: What the movers' own logs are searched for (seconds after the event, per mover).
NODE_EVENTS = (("node_registered_s", "registered"), ("noticed_s", "network_changed"))


def missing_tools(scenario: Scenario) -> list[str]:
    needed = [*TOOLS[scenario.tool]]
    needed += TOOLS["adapter"] if scenario.client == "gn" else []
    needed += TOOLS["nat-reset"] if scenario.event == "nat-reset" else []
    return [t for t in needed if shutil.which(t) is None]


def _dig(ns: str, name: str) -> str | None:
    with contextlib.suppress(LabError):
        out = ns_run(ns, "dig", "+short", "+time=5", "+tries=2", name, check=False).stdout
        lines = out.strip().splitlines()
        return lines[-1] if lines else None
    return None


class ScenarioRun:
    """One scenario on its lab: the lab, the processes, the path the traffic takes."""

    def __init__(self, scenario: Scenario, run_dir: Path, down_for: float, window: float) -> None:
        self.sc, self.run_dir = scenario, run_dir
        self.down_for = down_for if scenario.break_before_make else 0.0
        self.window = window
        self.procs = Processes(run_dir / "bench")
        self.state: LabState | None = None
        self.wg: WireGuard | None = None
        self.client_ns = GN if scenario.client == "gn" else MN
        self.ping_target = ""  # cn's VIP, or its wireguard-go address
        self.blob: tuple[Path, str] = (Path(), "")
        self.blob_size = round(TCP_RATE * (PRE_S + self.down_for + AFTER_S))
        self.notes: list[str] = []

    @property
    def ntma(self) -> bool:
        return self.sc.tool == "ntma"

    @property
    def lab(self) -> LabState:
        if self.state is None:
            raise HandoverError("the lab is not up")
        return self.state

    # ------------------------------------------------------------------ set-up

    def up(self) -> None:
        self.state = lab_up(
            self.run_dir,
            **self.sc.lab,
            daemons=self.ntma,
            adapter=self.sc.client == "gn",
            wait_s=30.0,
        )
        self.blob = write_blob(self.procs.dir, self.blob_size)
        start_servers(self.procs, self.blob[0])
        if self.sc.client == "gn":
            self._gn_lease()
        if self.ntma:
            vip = _dig(self.client_ns, CN_NAME)
            if not vip:
                raise HandoverError(f"{CN_NAME} did not resolve from {self.client_ns}")
            self.ping_target = vip
        else:
            self.wg = WireGuard(self.procs, self.run_dir, self.sc.wg_initiator or "mn")
            self.wg.up()
            self.ping_target = WG_IPS["cn"]
        self.ready()

    def _gn_lease(self) -> None:
        files = [str(self.procs.dir / f"dhclient.{x}") for x in ("pid", "leases")]
        proc = ns_run(
            GN,
            "dhclient",
            "-1",
            "-pf",
            files[0],
            "-lf",
            files[1],
            GN_IFACE,
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            raise HandoverError(f"dhclient in {GN}: {one_line(proc.stderr) or proc.returncode}")

    def ready(self) -> None:
        """The path works: from the wireguard-go initiator first (its handshake), then from
        the client."""
        if self.wg is not None:
            ns = {"mn": MN, "cn": CN}[self.wg.initiator]
            other = WG_IPS["cn" if self.wg.initiator == "mn" else "mn"]
            wait_ping(ns, other, READY_TIMEOUT_S)
        if wait_ping(self.client_ns, self.ping_target, READY_TIMEOUT_S) is None:
            raise HandoverError(f"{self.ping_target} does not answer pings from {self.client_ns}")

    def keepalive_s(self) -> float | None:
        """The keep-alive interval the DC gave the subject (its `registered` event)."""
        if not self.ntma or not self.sc.movers:
            return None
        name = self.sc.movers[0]
        for event in log_events(self.lab.daemons[name].log, self.lab.daemons[name].log_start or 0):
            if event.get("event") == "registered" and event.get("keepalive_s"):
                return float(event["keepalive_s"])
        return None

    # ------------------------------------------------------------------ one run

    def _event(self) -> tuple[float, float | None, list[dict[str, Any]]]:
        """Do the event: its start, when the new link came up (moves), its records."""
        sc = self.sc
        if sc.event == "restart":
            assert sc.subject
            record = lab_restart(self.run_dir, sc.subject, wait_s=20.0)
            if record["killed_at"] is None:
                raise HandoverError(f"{sc.subject}'s daemon was not running")
            return record["killed_at"], None, [record]
        if sc.event == "nat-reset":
            assert sc.subject
            at = time.monotonic()
            return at, None, [lab_nat_reset(self.run_dir, sc.subject)]
        records = [
            lab_move(self.run_dir, m.node, m.to, down_for=self.down_for if i == 0 else 0.0)
            for i, m in enumerate(sc.moves)
        ]
        return records[0]["started_at"], records[-1]["up_at"], records

    def _log_offsets(self) -> dict[str, int]:
        if not self.ntma:
            return {}
        return {name: log_size(self.lab, name) for name in ("dc", *self.sc.movers)}

    def _log_times(self, offsets: dict[str, int], t: float, clock: float) -> dict[str, Any]:
        """Re-registration and what the logs say of the event, in seconds after t."""
        if not self.ntma:
            return {"reregistration_s": None}
        hosts, daemons = self.lab.hosts(), self.lab.daemons
        dc_log, out = daemons["dc"].log, {}
        rereg, seen = [], []
        for name in self.sc.movers:
            fqdn = hosts[name].fqdn
            found = since_event(dc_log, offsets["dc"], t, clock, dc_reregistered(fqdn))
            rereg.append(found[0] if found else None)
            seen.append(found[1] if found else None)
            own = daemons[name].log, offsets[name]
            for key, event in NODE_EVENTS:
                hit = since_event(*own, t, clock, named(event))
                out.setdefault(key, {})[name] = hit[0] if hit else None
            updated = since_event(dc_log, offsets["dc"], t, clock, dc_route_updated(fqdn))
            out.setdefault("route_updated_s", {})[name] = updated[0] if updated else None
        out["reregistration_s"] = None if None in rereg else max(rereg)
        out["reregistration_events"] = seen
        return out

    def run_once(self, k: int) -> dict[str, Any]:
        host = CN_NAME if self.ntma else WG_IPS["cn"]
        offsets = self._log_offsets()
        longest = PRE_S + 2 * self.down_for + self.window + 5.0
        traffic = start_traffic(self.procs, self.client_ns, host, f"run{k}", longest)
        record: dict[str, Any] = {"run": k}
        time.sleep(PRE_S)
        clock = clock_offset()
        t, up_at, events = self._event()  # on an error, `down` stops the traffic
        record["event"] = events if len(events) > 1 else events[0]
        earliest = t + self.down_for + MIN_AFTER_S
        deadline = t + 2 * self.down_for + self.window
        while time.monotonic() < deadline:
            if traffic.tcp.poll() is not None and time.monotonic() >= earliest:
                break
            time.sleep(0.05)
        end = time.monotonic()
        stream = stream_result(self.procs, traffic)
        tcp = download_result(self.procs, traffic, self.blob_size, self.blob[1], t)
        replies = stream["replies"]
        gap = handover_gap(replies, t, end, 1 / PPS)
        resumed = resumed_at(replies, t) if gap is not None else None
        record.update(
            event_at=round(t, 6),
            gap_s=None if gap is None else round(gap, 4),
            echoes_before=sum(t - PRE_S <= r < t for r in replies),
            observed_after_event_s=round(end - t, 2),
            sent=stream["sent"],
            received=stream["received"],
            send_errors=stream.get("send_errors"),
            tcp=tcp,
            **self._log_times(offsets, t, clock),
        )
        if up_at is not None:  # a move: how much of the gap came after the new link was up
            after = None if resumed is None else round(resumed - up_at, 4)
            record["resumed_after_link_up_s"] = after
        if not record["echoes_before"]:
            record["error"] = "no echo in the second before the event: the path was not working"
        return record

    def go_back(self, record: dict[str, Any]) -> None:
        """The move back (so the next run moves the same way), and the path working again."""
        sc = self.sc
        back: dict[str, Any] = {}
        record["return"] = back
        for m in reversed(sc.moves):
            rec = lab_move(self.run_dir, m.node, m.back)
            back.setdefault("moves", []).append(
                {k: rec[k] for k in ("node", "from", "to", "new_public_address")}
            )
        if self.wg is not None and record.get("gap_s") is None:
            back["wireguard_endpoint_set"] = self.wg.repoint()  # it cannot find it itself
        back["recovered_s"] = wait_ping(self.client_ns, self.ping_target, RETURN_CHECK_S)
        if back["recovered_s"] is None:
            self.notes.append(
                f"{sc.name} run {record['run']}: the path did not work within "
                f"{RETURN_CHECK_S:g} s after the move back"
                + ("; cn resolved again" if self.ntma else "; endpoint set again")
            )
            if self.ntma:
                _dig(self.client_ns, CN_NAME)
            elif self.wg is not None:
                back["wireguard_endpoint_set"] = self.wg.repoint()
        self.ready()

    def runs(self, n: int) -> list[dict[str, Any]]:
        out = []
        for k in range(1, n + 1):
            try:
                record = self.run_once(k)
            except (HandoverError, LabError) as exc:
                out.append({"run": k, "error": one_line(f"{type(exc).__name__}: {exc}")})
                break  # the lab may be half changed: the remaining runs are not made
            out.append(record)
            if k < n:
                try:
                    if self.sc.moves:
                        self.go_back(record)
                    else:
                        self.ready()
                except (HandoverError, LabError) as exc:
                    record["return_error"] = one_line(f"{type(exc).__name__}: {exc}")
                    break
        if len(out) < n:
            self.notes.append(f"{self.sc.name}: {len(out)} of {n} runs made (see the errors)")
        return out

    def down(self) -> None:
        self.procs.stop_all()
        if self.wg is not None:
            self.wg.down()
        lab_down(self.run_dir)


def _scenario_info(sc: Scenario) -> dict[str, Any]:
    info = dataclasses.asdict(sc)
    info["moves"] = [dataclasses.asdict(m) for m in sc.moves]
    return info


def run_scenario(
    sc: Scenario, run_dir: Path, runs: int, down_for: float, window: float
) -> tuple[dict[str, Any], list[str]]:
    entry: dict[str, Any] = {"what": sc.what, "tool": sc.tool, "scenario": _scenario_info(sc)}
    missing = missing_tools(sc)
    if missing:
        entry["skipped"] = f"{', '.join(missing)} not installed"
        return entry, []
    started = time.monotonic()
    srun = ScenarioRun(sc, run_dir, down_for, window)
    try:
        srun.up()
        keepalive = srun.keepalive_s()
        entry["target"] = gap_target(sc, down_for, keepalive)
        entry["runs"] = srun.runs(runs)
        entry["summary"] = summarise_scenario(sc, entry["runs"], entry["target"])
    except Exception as exc:  # one scenario's failure must not stop the others
        entry["error"] = one_line(f"{type(exc).__name__}: {exc}")
    finally:
        try:
            srun.down()
        except Exception as exc:
            srun.notes.append(one_line(f"{sc.name}: lab down failed: {exc}"))
        entry["lab_run_dir"] = str(run_dir)
        entry["seconds_taken"] = round(time.monotonic() - started, 1)
    return entry, srun.notes


def versions() -> dict[str, Any]:
    return {
        "wireguard-go": tool_version("wireguard-go", "--version"),
        "wireguard-tools": tool_version("wg", "--version"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpus_used": sorted(os.sched_getaffinity(0)),
    }


def run_handover_bench(
    run_dir: Path,
    *,
    runs: int = 5,
    scenarios: Iterable[str] | None = None,
    down_for: float = 5.0,
    window: float = WINDOW_S,
) -> dict[str, Any]:
    """Every chosen scenario (default: all, in the documented order) `runs` times, each on
    a lab of its own under run_dir/<scenario>. A scenario that fails gets {"error": ...}
    and the others still run; one whose tools are missing gets {"skipped": ...}."""
    chosen = list(SCENARIO_NAMES if scenarios is None else scenarios)
    unknown = [s for s in chosen if s not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown} (choose from {SCENARIO_NAMES})")
    if runs < 1:
        raise ValueError("runs must be 1 or more")
    chosen = [s for s in SCENARIO_NAMES if s in chosen]
    run_dir = Path(run_dir).absolute()
    started = time.monotonic()
    results: dict[str, Any] = {}
    notes: list[str] = [*NOTES]
    for name in chosen:
        results[name], more = run_scenario(BY_NAME[name], run_dir / name, runs, down_for, window)
        notes += more
    result = {
        "scenarios": results,
        "parameters": {
            "runs": runs,
            "down_for_s": down_for,
            "window_s": window,
            "pps": PPS,
            "tcp_rate_bytes_per_s": TCP_RATE,
            "traffic_before_event_s": PRE_S,
            "scenarios": chosen,
        },
        "versions": versions(),
        "notes": notes,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
