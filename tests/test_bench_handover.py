"""`ntma bench --handover`: the statistics, the targets and their checks, the markdown
table, the command line (no root); and one scenario run for real on the lab (netns)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ntma.bench.handover import (
    SCENARIO_NAMES,
    SCENARIOS,
    check_gap,
    check_tcp,
    format_handover_report,
    gap_target,
    median,
    nearest_rank,
    summarise,
)
from ntma.bench.handover.logtimes import dc_reregistered, event_monotonic, since_event
from ntma.bench.handover.scenarios import BY_NAME
from ntma.bench.handover.settings import TARGETS
from ntma.bench.handover.stats import handover_gap, resumed_at, summarise_scenario
from ntma.bench.handover.traffic import download_failure
from ntma.bench.report import parse_args
from ntma.lab import live_namespaces

REPO = Path(__file__).parents[1]


# ---------------------------------------------------------------- statistics


def test_order_statistics_count_a_missing_run_as_the_largest():
    assert median([0.3, 0.1, 0.2]) == 0.2
    assert median([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.25)
    assert median([0.1, None, 0.2]) == 0.2  # the missing run is the largest
    assert median([0.1, None]) is None  # the middle lands on it
    assert median([]) is None
    assert nearest_rank([0.05, 0.01, 0.03, 0.02, 0.04], 99) == 0.05  # with 5 runs: the max
    assert nearest_rank(list(range(1, 201)), 99) == 198
    assert nearest_rank([0.01, 0.02, None], 99) is None
    assert nearest_rank([0.01, 0.02, None], 50) == 0.02
    assert summarise([0.02, None, 0.01]) == {"n": 3, "missing": 1, "median": 0.02, "p99": None}
    assert summarise([]) == {"n": 0, "missing": 0, "median": None, "p99": None}


def test_checks_need_every_run_within_the_limit():
    assert check_gap(summarise([0.05, 0.09]), 0.1) is True
    assert check_gap(summarise([0.05, 0.11]), 0.1) is False  # the worst run counts
    assert check_gap(summarise([0.05, None]), 0.1) is False  # one never recovered
    assert check_gap(summarise([0.05]), None) is None  # no limit known
    assert check_gap(summarise([]), 0.1) is None
    assert check_tcp(5, 5) is True
    assert check_tcp(4, 5) is False
    assert check_tcp(0, 0) is None


def test_the_gap_ends_where_the_stream_resumed_and_a_silence_to_the_end_is_no_recovery():
    replies = [0.00, 0.01, 0.02, 0.50, 0.51, 0.52]
    assert handover_gap(replies, 0.015, end=0.53, interval=0.01) == pytest.approx(0.48)
    assert resumed_at(replies, 0.015) == 0.50
    # An echo or two after the event's start, then silence until the stream stopped: the
    # path broke just after t and never came back.
    broken = [0.00, 0.01, 0.02, 0.03]
    assert handover_gap(broken, 0.025, end=5.0, interval=0.01) is None
    # The stream stopped a few intervals after its last echo: not an outage.
    assert handover_gap(replies, 0.015, end=0.56, interval=0.01) == pytest.approx(0.48)
    assert handover_gap([], 0.0, end=1.0, interval=0.01) is None
    assert resumed_at([0.3, 0.31], 0.1) == 0.3  # silent from the event itself


def test_targets_per_scenario():
    assert gap_target(BY_NAME["mn-cone-to-public-cn-public"], 5.0, 5.0)["gap_s"] == 0.1
    assert gap_target(BY_NAME["mn-public-to-cone-cn-cone"], 5.0, 5.0)["gap_s"] == 0.5
    assert gap_target(BY_NAME["relayed"], 5.0, 5.0)["gap_s"] == 1.0
    assert gap_target(BY_NAME["restart"], 5.0, 5.0)["gap_s"] == 2.0
    rebinding = gap_target(BY_NAME["nat-reset"], 5.0, 15.0)
    assert rebinding["gap_s"] == 15.0 and "15 s on this lab" in rebinding["why"]
    assert gap_target(BY_NAME["nat-reset"], 5.0, None)["gap_s"] is None
    bbm = gap_target(BY_NAME["break-before-make"], 7.0, 5.0)
    assert bbm["gap_s"] == pytest.approx(7.1) and "7 s without a network" in bbm["why"]


def test_the_scenario_table():
    assert len(set(SCENARIO_NAMES)) == len(SCENARIOS) >= 14
    for sc in SCENARIOS:
        assert sc.target in TARGETS, sc.name
        assert sc.tool in ("ntma", "wireguard-go"), sc.name
        assert bool(sc.moves) == (sc.event == "move"), sc.name
        assert sc.movers, sc.name
        assert (sc.wg_initiator is not None) == (sc.tool == "wireguard-go"), sc.name
        assert all(m.node in ("mn", "cn", "adapter") for m in sc.moves)
    assert BY_NAME["both-move"].movers == ("mn", "cn")
    assert BY_NAME["restart"].movers == ("cn",)
    assert BY_NAME["adapter-cone-to-public"].client == "gn"
    wg = [sc.name for sc in SCENARIOS if sc.tool == "wireguard-go"]
    assert wg and all(name.startswith("wg-") for name in wg)


def _run(k: int, gap: float | None, rereg: float | None, survived: bool, **more) -> dict:
    run = {"run": k, "gap_s": gap, "reregistration_s": rereg, "tcp": {"survived": survived}}
    return run | more


def test_summarise_scenario_leaves_out_runs_with_errors():
    sc = BY_NAME["mn-cone-to-public-cn-cone"]
    runs = [
        _run(1, 0.08, 0.12, True, resumed_after_link_up_s=0.01),
        _run(2, 0.13, 0.13, True, resumed_after_link_up_s=0.05),
        {"run": 3, "error": "LabError: boom"},
    ]
    target = gap_target(sc, 5.0, 5.0)
    s = summarise_scenario(sc, runs, target)
    assert (s["runs"], s["measured"], s["tcp_survived"]) == (3, 2, 2)
    assert s["gap_s"]["p99"] == 0.13 and s["after_link_up_s"]["p99"] == 0.05
    # a move is judged after its new link is up: 50 ms passes the 100 ms of "public",
    # though the gap from the move's start (130 ms, the lab's switch in it) would not
    assert s["checks"] == {"gap": True, "gap_judged_on": "after_link_up", "tcp": True}
    slow = [_run(1, 0.2, 0.2, True, resumed_after_link_up_s=0.15)]
    assert summarise_scenario(sc, slow, target)["checks"]["gap"] is False
    restart = summarise_scenario(BY_NAME["restart"], [_run(1, 0.3, 0.3, False)], target)
    assert restart["after_link_up_s"]["n"] == 0  # not a move
    assert restart["checks"]["tcp"] is False
    assert restart["checks"]["gap_judged_on"] == "gap"


# ---------------------------------------------------------------- the TCP verdict


def _download(**fields) -> dict:
    base = {
        "expected_bytes": 1000,
        "bytes": 1000,
        "sha256_ok": True,
        "connects": 1,
        "seconds": 4.0,
        "finished_after_event_s": 3.0,
    }
    return base | fields


def test_a_download_survives_only_whole_on_its_one_connection_across_the_event():
    assert download_failure(_download(), running=False, error=None) is None
    running = download_failure(_download(bytes=400), running=True, error=None)
    assert running == "still running at the end of the window (400 of 1000 bytes)"
    broken = download_failure(_download(bytes=10), False, "ConnectionResetError: reset")
    assert broken == "ConnectionResetError: reset (10 of 1000 bytes)"
    assert "sha256 wrong" in download_failure(_download(sha256_ok=False), False, None)
    assert "999 bytes of 1000" in download_failure(_download(bytes=999), False, None)
    late = _download(finished_after_event_s=-0.5)
    assert download_failure(late, False, None) == "finished before the event"


def test_the_paced_sender_keeps_its_pace_and_the_reader_checks_the_whole_file(tmp_path):
    data = os.urandom(20_000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    module = "ntma.bench.handover.tcpstream"
    server = subprocess.Popen(
        [sys.executable, "-m", module, "serve", str(port), str(blob), "--rate", "40000"]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the sender does not listen"
                time.sleep(0.05)
        out = subprocess.run(
            [sys.executable, "-m", module, "get", "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    finally:
        server.kill()
        server.wait()
    got = json.loads(out.stdout)
    assert got["bytes"] == len(data) and got["error"] is None
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert 0.4 <= got["seconds"] < 2.0  # 20 kB at 40 kB/s: the sender's pace, not the wire's


# ---------------------------------------------------------------- logs on the monotonic clock


def test_log_times_on_the_monotonic_clock(tmp_path):
    log = tmp_path / "dc.log"
    offset_clock = 1_000_000.0  # wall time - monotonic time
    lines = [
        {"event": "node_moved", "fqdn": "mn.ntm.example", "timestamp": "1970-01-12T13:46:40Z"},
        {"event": "node_nat", "fqdn": "mn.ntm.example", "timestamp": "1970-01-12T13:46:41Z"},
        {"event": "node_moved", "fqdn": "cn.ntm.example", "timestamp": "1970-01-12T13:46:42Z"},
        {"event": "node_moved", "fqdn": "mn.ntm.example", "timestamp": "1970-01-12T13:46:43.25Z"},
    ]
    log.write_text("not json\n" + "".join(json.dumps(e) + "\n" for e in lines))
    assert event_monotonic(lines[0], offset_clock) == pytest.approx(0.0)
    assert event_monotonic({"event": "x"}, offset_clock) is None
    assert event_monotonic({"timestamp": "yesterday"}, offset_clock) is None
    found = since_event(log, 0, 0.5, offset_clock, dc_reregistered("mn.ntm.example"))
    assert found == (pytest.approx(2.75), "node_moved")  # the one before t is not counted
    assert since_event(log, 0, 0.5, offset_clock, dc_reregistered("gn.ntm.example")) is None


# ---------------------------------------------------------------- the markdown table


def _entry(name: str, gaps: list, rereg: list, survived: int, tool: str = "ntma") -> dict:
    sc = BY_NAME[name]
    pairs = enumerate(zip(gaps, rereg, strict=True), 1)
    runs = [_run(k, g, r, k <= survived) for k, (g, r) in pairs]
    for run in runs:
        if tool == "wireguard-go" and not run["tcp"]["survived"]:
            run["tcp"]["why"] = "still running at the end of the window"
    target = gap_target(sc, 5.0, 5.0)
    return {
        "what": sc.what,
        "tool": tool,
        "target": target,
        "runs": runs,
        "summary": summarise_scenario(sc, runs, target),
    }


def test_format_handover_report_on_a_fixed_result():
    result = {
        "scenarios": {
            "mn-cone-to-public-cn-public": _entry(
                "mn-cone-to-public-cn-public", [0.05, 0.08, 0.02], [0.1, 0.12, 0.11], 3
            ),
            "restart": _entry("restart", [0.35, 2.5, 0.3], [0.33, 0.34, None], 2),
            "wg-mn-public-to-cone-cn-cone": _entry(
                "wg-mn-public-to-cone-cn-cone",
                [None, None, None],
                [None] * 3,
                0,
                tool="wireguard-go",
            ),
            "relayed": {"what": "mn | cn", "tool": "ntma", "error": "LabNotReady: dc | down"},
            "nat-reset": {"what": "x", "tool": "ntma", "skipped": "conntrack not installed"},
        },
        "parameters": {"runs": 3, "window_s": 30.0, "down_for_s": 5.0, "pps": 100.0},
        "versions": {"kernel": "6.1.0", "cpus": 2, "wireguard-go": "0.0.20220316"},
        "notes": ["p99 is the worst run."],
    }
    report = format_handover_report(result)
    assert (
        "| mn-cone-to-public-cn-public | mn cone -> public, cn public | ntma | 3 | 50 ms "
        "| 80 ms | ≤ 100 ms (public): pass | – | 110 ms | 120 ms | 3/3: pass |"
    ) in report
    assert "| 350 ms | 2.50 s | ≤ 2.00 s (restart): FAIL |" in report
    assert "| 340 ms | none | 2/3: FAIL |" in report  # one restart never re-registered
    assert (
        "| no recovery | no recovery | ≤ 500 ms (re-direct): FAIL | – | n/a (no DC) "
        "| n/a (no DC) | 0/3: FAIL |"
    ) in report
    assert "| relayed | mn / cn | ntma | LabNotReady: dc / down |" in report
    assert "| nat-reset | x | ntma | skipped: conntrack not installed |" in report
    assert "- restart run 3: TCP failed" in report
    assert "- wg-mn-public-to-cone-cn-cone run 1: TCP still running at the end" in report
    assert "within 30.0 s of the event" in report and "wireguard-go 0.0.20220316" in report
    assert "- p99 is the worst run." in report
    header = next(line for line in report.splitlines() if line.startswith("| scenario"))
    for line in report.splitlines():
        if line.startswith("| "):  # every row as wide as the header, errors too
            assert line.count("|") == header.count("|"), line


# ---------------------------------------------------------------- the command line


def test_handover_arguments_and_their_defaults(tmp_path):
    args = parse_args(["--handover", "--out", str(tmp_path)])
    assert (args.runs, args.down_for, args.scenarios) == (5, 5.0, None)
    assert args.json == tmp_path / "handover.json" and args.markdown == tmp_path / "handover.md"
    assert args.run_dir == Path("/run/ntma-bench-handover")
    args = parse_args(
        [
            "--handover",
            "--runs",
            "2",
            "--scenarios",
            "restart, relayed",
            "--down-for",
            "30",
            "--json",
            "a.json",
            "--markdown",
            "b.md",
            "--run-dir",
            "/tmp/x",
        ]
    )
    assert (args.runs, args.scenarios, args.down_for) == (2, ["restart", "relayed"], 30.0)
    assert (args.json, args.markdown) == (Path("a.json"), Path("b.md"))
    assert args.run_dir == Path("/tmp/x")
    assert parse_args([]).handover is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--handover", "--runs", "0"], "must be 1 or more"),
        (["--handover", "--runs", "x"], "not a whole number"),
        (["--handover", "--scenarios", "restart,nope"], "unknown scenario 'nope'"),
        (["--handover", "--scenarios", ","], "no scenario named"),
        (["--handover", "--down-for", "-1"], "0 to 600 seconds"),
        (["--runs", "3"], "--runs needs --handover"),
        (["--scenarios", "restart"], "--scenarios needs --handover"),
        (["--handover", "--lab"], "separate runs"),
    ],
)
def test_bad_handover_arguments_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- on the lab


@pytest.mark.netns
def test_one_scenario_once_on_the_lab(tmp_path):
    """As a user runs it: its own process (it configures logging for the whole process,
    which would leave the later tests' log captures empty)."""
    out_json, out_md = tmp_path / "h.json", tmp_path / "h.md"
    argv = ["--handover", "--runs", "1", "--scenarios", "mn-cone-to-public-cn-public"]
    argv += ["--json", str(out_json), "--markdown", str(out_md), "--run-dir", str(tmp_path / "run")]
    proc = subprocess.run(
        [sys.executable, "-m", "ntma", "bench", *argv],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out_json.read_text())["handover"]
    entry = result["scenarios"]["mn-cone-to-public-cn-public"]
    assert "error" not in entry, entry.get("error")
    (run,) = entry["runs"]
    assert "error" not in run, run["error"]
    assert run["echoes_before"] > 50 and run["received"] > 0.8 * run["sent"]
    assert run["gap_s"] is not None, "the stream never resumed after mn moved"
    assert run["tcp"]["survived"], run["tcp"]
    assert run["reregistration_s"] is not None and run["reregistration_events"] == ["node_moved"]
    assert entry["summary"]["measured"] == 1
    assert "| mn-cone-to-public-cn-public |" in out_md.read_text()
    assert "| mn-cone-to-public-cn-public |" in proc.stdout
    assert live_namespaces() == []
