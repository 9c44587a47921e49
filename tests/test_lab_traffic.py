"""The lab's traffic probe: the gap arithmetic, and a real stream over loopback."""

import json
import subprocess
import sys
import time

from ntma.lab.traffic import gap_after


def test_gap_is_the_longest_silence_ending_after_the_event():
    replies = [0.00, 0.01, 0.02, 0.50, 0.51, 0.52]
    assert abs(gap_after(replies, 0.015) - 0.48) < 1e-9
    assert abs(gap_after(replies, 0.505) - 0.01) < 1e-9  # after the silence: small ones only
    assert gap_after(replies, 0.6) is None  # never resumed
    assert abs(gap_after([0.3, 0.31], 0.1) - 0.2) < 1e-9  # silent from the event itself


def test_a_stream_over_loopback_gets_its_echoes(tmp_path):
    server = subprocess.Popen([sys.executable, "-m", "ntma.lab.traffic", "echo-server", "47999"])
    try:
        time.sleep(0.3)
        out = subprocess.run(
            [sys.executable, "-m", "ntma.lab.traffic", "stream", "127.0.0.1", "47999",
             "--pps", "100", "--seconds", "1"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    finally:
        server.kill()
        server.wait()
    result = json.loads(out.stdout)
    assert 95 <= result["sent"] <= 102
    assert result["received"] >= result["sent"] - 2
    assert gap_after(result["replies"], result["started"]) < 0.1
