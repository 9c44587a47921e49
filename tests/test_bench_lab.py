"""The end-to-end lab benchmark: the adapter, plain routing and the userspace tunnels, in one
short run (the figures themselves are not checked, only that every setup was measured and
that nothing is left behind); and the markdown report on a fixed result (no root)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ntma.bench.lab import (
    SETUP_LABELS,
    SETUPS,
    TABLE2_PATHS,
    compute_ratios,
    format_lab_report,
    missing_tools,
    read_table2,
    run_lab_bench,
)
from ntma.lab import live_namespaces

BENCH_TOOLS = ("tincd", "wireguard-go", "wg", "iperf3", "dhclient", "udhcpc")
_missing = [t for t in BENCH_TOOLS if shutil.which(t) is None]
needs_bench_tools = pytest.mark.skipif(
    bool(_missing),
    reason=f"the lab benchmark needs {', '.join(_missing)} (scripts/install.sh installs them)",
)

#: Processes of ours that must be gone after the run: (comm, a word of their command line).
OURS = (("tincd", "ntmabench"), ("wireguard-go", "wgntma"), ("openvpn", "tun-ovpn"))


def _leftover_processes() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(comm == name and word in cmdline for name, word in OURS):
            found.append(f"{pid} {cmdline.strip()}")
    return found


@pytest.mark.netns
@needs_bench_tools
def test_lab_bench_measures_every_setup_and_leaves_nothing(tmp_path):
    result = run_lab_bench(tmp_path / "run", seconds=1, rtt_count=50, arp_count=200)
    setups = result["setups"]
    expected = [s for s in SETUPS if not missing_tools(s)]  # openvpn is optional
    assert set(expected) <= set(setups)
    errors = {name: setups[name].get("error") for name in expected if "error" in setups[name]}
    assert not errors, f"{errors}; notes: {result['notes']}"
    for name in expected:
        entry = setups[name]
        assert entry["tcp_bps"]["forward"] > 0 and entry["tcp_bps"]["reverse"] > 0, name
        assert entry["rtt_us"]["median"] > 0, name
        assert entry["rtt_us"]["lost"] < 0.1 * entry["rtt_us"]["count"], name
        ratios = entry["ratios"]
        assert ratios["tcp_vs_plain"]["forward"] > 0 and ratios["tcp_vs_plain"]["reverse"] > 0
        assert ratios["tcp_vs_best_peer"]["forward"] > 0
        assert ratios["rtt_overhead_us"] is not None
    assert setups["plain"]["ratios"]["tcp_vs_plain"]["forward"] == 1.0
    for name in ("tinc", "wireguard-go"):
        assert setups[name]["udp_datagrams_into_cn"] > 1000, f"{name}: data not over UDP?"
    a2a = setups["ntma-a2a"]  # GN -> gnb through both adapters, behind cone NATs
    assert a2a["route"] == "punch" and a2a["target"] == a2a["gnb_address"]
    assert a2a["udp_datagrams_into_adapter2"] > 1000, "adapter to adapter: data not over UDP?"
    assert "udp_datagrams_into_cn" not in a2a
    _check_ipv6_rows(result)
    best = result["ratios"]["best_peer"]
    assert best["tcp_forward"]["setup"] in ("tinc", "wireguard-go")
    table2 = result["table2"]["paths"]
    assert set(table2) == set(TABLE2_PATHS)
    if table2["arp_processing"]["ours"] is not None:  # the adapter logs path_stats
        assert table2["arp_processing"]["ours"]["count"] >= 200
        assert table2["packet_relay"]["ours_before_bulk"]["median_us"] > 0
    assert result["versions"]["tinc"] and result["versions"]["wireguard-go"]
    report = format_lab_report(result)
    for name in expected:
        assert f"| {SETUP_LABELS.get(name, name)} |" in report
    assert live_namespaces() == []
    assert _leftover_processes() == []
    assert not list(Path("/var/run/wireguard").glob("wgntma-*"))


def _check_ipv6_rows(result: dict) -> None:
    """ntma-v6: IPv6 inside (to cn's IPv6 VIP, the probe's datagrams IPv6 into cn, the
    outer IPv4); ntma-u6: on its own lab, the tunnel's outer packets IPv6 to cn's address."""
    setups = result["setups"]
    v6, u6 = setups["ntma-v6"], setups["ntma-u6"]
    assert v6["target"].startswith("fd00:99::") and v6["gn_address"].startswith("fd00:99::")
    assert v6["outer"] == "ipv4" and v6["udp_datagrams_into_cn"] > 1000
    assert v6["udp6_datagrams_into_cn"] >= v6["rtt_us"]["count"] - v6["rtt_us"]["lost"]
    assert u6["route"] == "direct" and u6["peer_endpoint"].rsplit(":", 1)[0] == "2001:db8::30"
    assert u6["outer"] == "ipv6" and u6["udp6_datagrams_into_cn"] > 1000, "outer not IPv6?"
    assert "." in u6["target"]  # cn's IPv4 VIP
    labs = result["labs"]
    assert [lab["setups"] for lab in labs][-1] == ["ntma-u6"]
    if len(labs) > 1:  # brought down and up again for it
        assert u6["lab_rebuilt_s"] == round(labs[-1]["down_s"] + labs[-1]["up_s"], 1) > 0
    report = format_lab_report(result)
    assert "ntma IPv6 underlay: from the GN to cn's IPv4 VIP" in report
    assert "route direct, to 2001:db8::30:" in report


@pytest.mark.netns
@needs_bench_tools
def test_lab_bench_runs_the_ipv6_rows_alone(tmp_path):
    """`ntma bench --lab --setups ntma-v6,ntma-u6`: the main lab with vip6 for the first,
    then a lab of its own for the second."""
    result = run_lab_bench(tmp_path / "run", seconds=1, rtt_count=50, setups=["ntma-u6", "ntma-v6"])
    setups = result["setups"]
    assert list(setups) == ["ntma-v6", "ntma-u6"]  # the report's order
    errors = {name: e["error"] for name, e in setups.items() if "error" in e}
    assert not errors, f"{errors}; notes: {result['notes']}"
    for entry in setups.values():
        assert entry["tcp_bps"]["forward"] > 0 and entry["tcp_bps"]["reverse"] > 0
        assert entry["rtt_us"]["lost"] < 0.1 * entry["rtt_us"]["count"]
    assert [lab["options"] for lab in result["labs"]][0] == {"vip6": True}
    assert result["table2"] is None  # that is the ntma row's
    _check_ipv6_rows(result)
    assert live_namespaces() == []


def _entry(median: float, fwd: float, rev: float) -> dict:
    return {
        "target": "x",
        "rtt_us": {"median": median, "p99": median * 3, "mean": median, "lost": 0, "count": 1000},
        "tcp_bps": {"forward": fwd, "reverse": rev},
    }


def test_format_lab_report_on_a_fixed_result():
    setups = {
        "ntma": _entry(400.0, 500e6, 600e6),
        "ntma-a2a": {**_entry(700.0, 300e6, 300e6), "route": "punch"},
        "plain": _entry(50.0, 2000e6, 10000e6),
        "tinc": _entry(120.0, 530e6, 460e6),
        "wireguard-go": _entry(180.0, 340e6, 360e6),
        "openvpn": {"error": "BenchError: timed out | waiting"},
    }
    ratios = compute_ratios(setups)
    assert ratios["best_peer"]["tcp_forward"] == {"setup": "tinc", "bps": 530e6}
    assert ratios["best_peer"]["rtt_overhead"] == {"setup": "tinc", "us": 70.0}
    assert setups["ntma"]["ratios"]["tcp_vs_plain"] == {"forward": 0.25, "reverse": 0.06}
    assert setups["ntma"]["ratios"]["tcp_vs_best_peer"]["forward"] == 0.943
    assert setups["ntma"]["ratios"]["rtt_overhead_us"] == 350.0
    assert setups["ntma"]["ratios"]["rtt_overhead_vs_best_peer"] == 5.0
    assert "ratios" not in setups["openvpn"]
    result = {
        "setups": setups,
        "ratios": ratios,
        "table2": {
            "paths": {
                "arp_processing": {
                    "paper_us": 246.1,
                    "ours": {"count": 1002, "mean_us": 45.2, "median_us": 44.2, "p99_us": 71.4},
                    "ours_before_bulk": {
                        "count": 1002,
                        "median_us": 43.0,
                        "p99_us": 70.0,
                        "send_median_us": 20.5,
                    },
                },
                "packet_relay": {"paper_us": 12.0, "ours": None},
            },
            "note": "no path_stats for packet_relay",
        },
        "parameters": {"seconds": 5, "rtt_count": 1000, "rtt_payload_bytes": 64},
        "versions": {
            "tinc": "1.0.36",
            "wireguard-go": "0.0.20220316",
            "kernel": "6.1.0",
            "cpus": 2,
            "cpus_used": [1],
        },
        "notes": ["Only ratios within one run mean anything."],
    }
    report = format_lab_report(result)
    for name in setups:
        assert f"| {SETUP_LABELS.get(name, name)} |" in report
    a2a_row = "| ntma adapter to adapter | 700.0 | 2100.0 | 0 | 300.0 | 300.0 | 0.15 | 0.03 |"
    assert a2a_row in report
    assert "through both adapters; the DC's route: punch." in report
    assert "| ntma | 400.0 | 1200.0 | 0 | 500.0 | 600.0 | 0.25 | 0.06 | 0.94 |" in report
    assert "BenchError: timed out / waiting" in report  # a pipe would break the table
    assert "| 1002 | 45.2 | 44.2 | 71.4 | 43.0 | 20.5 | 70.0 | 246.1 |" in report
    assert "| – | – | – | – | – | – | 12.0 |" in report  # no figures for packet_relay
    assert "no path_stats for packet_relay" in report
    assert "tinc 1.0.36" in report and "Kernel 6.1.0, 2 CPUs, all processes on CPU 1." in report
    assert "cpus_used" not in report
    assert "Only ratios within one run mean anything." in report


def test_read_table2_takes_the_last_event_per_path_after_the_offset(tmp_path):
    def event(name: str, path: str, count: int, ns: int) -> str:
        fields = {"event": name, "path": path, "count": count, "mean_ns": ns}
        return json.dumps({**fields, "p50_ns": ns, "p99_ns": 2 * ns}) + "\n"

    log = tmp_path / "adapter.log"
    old = event("path_stats_final", "packet_relay", 9, 999_000)  # an earlier run's
    log.write_text(old + "not json\n")
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write(event("path_stats", "packet_relay", 10, 20_000))
        f.write(json.dumps({"event": "stage_stats", "stage": "classify"}) + "\n")
        f.write(event("path_stats_final", "packet_relay", 12, 21_500))
        arp = json.loads(event("path_stats", "arp_processing", 1000, 45_000))
        f.write(json.dumps({**arp, "send_p50_ns": 19_000}) + "\n")
        f.write(event("path_stats", "packet_relay", 99, 1))  # torn last line: no newline
    log.write_text(log.read_text().rstrip("\n"))
    table2 = read_table2(log, offset)
    relay = table2["paths"]["packet_relay"]
    assert relay == {
        "paper_us": 12.0,
        "ours": {"count": 12, "mean_us": 21.5, "median_us": 21.5, "p99_us": 43.0},
    }
    assert table2["paths"]["arp_processing"]["ours"]["median_us"] == 45.0
    assert table2["paths"]["arp_processing"]["ours"]["send_median_us"] == 19.0
    assert table2["paths"]["tunnel_send"]["ours"] is None
    assert table2["note"] == "no path_stats for tunnel_send, response_relay"
    empty = read_table2(tmp_path / "missing.log")
    assert all(row["ours"] is None for row in empty["paths"].values())
    assert empty["note"] == "the adapter logged no path_stats events"
