"""`ntma bench` (in process part) runs end to end and reports every stage."""

import json
import subprocess
import sys


def test_bench_writes_json_markdown_and_covers_every_stage(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ntma", "bench", "--seconds", "0.1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    stages = {r["stage"] for r in report["stages"]}
    assert stages == {
        "classify",
        "arp",
        "dhcp",
        "encapsulate",
        "decapsulate",
        "inject",
        "signalling",
        "dns",
    }
    assert all(r["packets"] > 0 and r["median_ns"] > 0 for r in report["stages"])
    pipeline = report["pipeline"]
    assert pipeline["saturation"]["delivered"] > 0
    assert pipeline["light_load"]["latency_median_ns"] > 0
    assert pipeline["channel_hop_ns"] > 0
    assert pipeline["trio_memory_channel_hop_ns"] > 0
    assert pipeline["scheduler_pass_ns"] > 0
    assert "| encapsulate |" in (tmp_path / "bench.md").read_text()
