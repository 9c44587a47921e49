"""The README's main demo command works end to end on the lab."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns


def test_lab_demo_tells_the_story_and_cleans_up(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ntma", "lab", "demo", "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from cn, through the NTMobile tunnel" in result.stdout
    assert "Demo succeeded" in result.stdout
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ntma-" not in left
