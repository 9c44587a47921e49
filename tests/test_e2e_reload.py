"""SIGHUP on the lab (issue 14, reload.py): the DC re-reads its admission list, so a node taken
off it is cut off and a node put back registers without a DC restart; a broken file keeps the
DC serving on its running config; the adapter takes a new [devices] table (a new device's
name asked for, a removed one's given back)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import log_events, ns_run, wait_log_events

from .netns_util import dig, wait_for

pytestmark = pytest.mark.netns

DC_IP = "198.51.100.10"


def _config_of(state: Any, name: str) -> Path:
    cmd = state.daemons[name].cmd
    return Path(cmd[cmd.index("--config") + 1])


def _offsets(state: Any, *names: str) -> dict[str, int]:
    return {name: state.daemons[name].log.stat().st_size for name in names}


def _hangup(state: Any, name: str, wanted: str) -> dict[str, Any]:
    """SIGHUP to the daemon; its next `wanted` event (reloaded, reload_failed)."""
    since = _offsets(state, name)
    os.kill(state.daemons[name].pid, signal.SIGHUP)
    return wait_log_events(state, {name: wanted}, since=since, timeout=10)[name]


def test_the_dc_reloads_its_admission_list_and_refuses_a_broken_file(tmp_path, open_lab):
    with open_lab(tmp_path / "run", mn_nat="none", cn_nat="none") as state:
        dc_pid = state.daemons["dc"].pid
        config = _config_of(state, "dc")
        original = config.read_text()
        cn_line = next(ln for ln in original.splitlines() if ln.startswith('"cn.ntm.example"'))

        config.write_text(original.replace(cn_line + "\n", ""))
        reloaded = _hangup(state, "dc", "reloaded")
        assert reloaded["revoked"] == ["cn.ntm.example"] and reloaded["needs_restart"] == []
        # The machine's own events go out at its next wake-up (within its 1 s sweep).
        wait_log_events(state, {"dc": "node_revoked"}, timeout=5)
        wait_for(lambda: dig("ntma-mn", "cn.ntm.example", f"@{DC_IP}") == "", 10,
                 "the DC's zone to stop answering for cn")

        config.write_text(original.replace("[admission]", "[admission\n"))  # not TOML
        failed = _hangup(state, "dc", "reload_failed")
        assert failed["kept"] == "the running config" and failed["problems"]
        mn_vip = dig("ntma-cn", "mn.ntm.example", f"@{DC_IP}")
        assert mn_vip.startswith("10.99."), mn_vip  # still serving, mn still admitted

        since = _offsets(state, "cn")
        config.write_text(original)
        assert _hangup(state, "dc", "reloaded")["admitted"] == 3
        # cn's next REGISTER (its retries run every few seconds) is answered at once.
        wait_log_events(state, {"cn": "registered"}, since=since, timeout=45)
        assert state.daemons["dc"].pid == dc_pid  # no restart
        ping = ns_run(
            "ntma-mn", "ping", "-c", "2", "-W", "5", "cn.ntm.example", check=False, timeout=30
        )
        assert ping.returncode == 0, ping.stdout


def test_the_adapter_reloads_its_devices_table(tmp_path, open_lab):
    with open_lab(tmp_path / "run", gns=2) as state:
        config = _config_of(state, "adapter")
        original = config.read_text()
        assert "gn2.ntm.example" in original
        lines = original.splitlines(keepends=True)
        gn2 = next(i for i, ln in enumerate(lines) if "gn2.ntm.example" in ln)
        without = "".join(ln for i, ln in enumerate(lines) if i != gn2)
        config.write_text(without.replace('level = "info"', 'level = "debug"'))
        reloaded = _hangup(state, "adapter", "reloaded")
        assert reloaded["devices_removed"] == ["gn2.ntm.example"], reloaded
        assert reloaded["log_level"] == "debug"
        wait_log_events(state, {"dc": "name_removed"}, timeout=10)
        config.write_text(original)
        reloaded = _hangup(state, "adapter", "reloaded")
        assert reloaded["devices_added"] == ["gn2.ntm.example"], reloaded
        wait_for(
            lambda: [e for e in log_events(state.daemons["dc"].log)
                     if e.get("event") == "name_added" and e.get("name") == "gn2.ntm.example"][1:],
            10,
            "the DC's second name_added for gn2 (the first was at the adapter's start)",
        )
