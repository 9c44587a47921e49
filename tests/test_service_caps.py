"""The systemd units' capabilities are enough, and a missing one is one clear line.

Each daemon is run on the lab as the unprivileged user nobody with exactly the capabilities
its unit in contrib/systemd/ grants (read from the unit: AmbientCapabilities), as systemd
would run it: `setpriv` sets the ambient, inheritable and bounding sets and no_new_privs.
The DC then serves DNS on port 53 and nodes register with it; a node makes its TUN device,
registers and passes traffic to cn through a tunnel. Without CAP_NET_ADMIN a node stops
with one line naming the capability and exit code 2.

Two things a real host has and this machine may not are supplied in a private mount
namespace of the daemon only: /dev/net/tun world-writable (mode 0666, as udev makes it on
Debian), and the Python interpreter reachable by nobody (a pyenv under /root is not).
The units themselves are checked with `systemd-analyze verify` where it is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from ntma.caps import ROLE_CAPS, missing_caps, permission_error
from ntma.config import load_node_config
from ntma.config_write import write_config
from ntma.lab import lab_restart, load_state, ns_run, save_state

from .netns_util import dig, wait_for

UNITS = Path(__file__).resolve().parents[1] / "contrib" / "systemd"
NOBODY = 65534
DC_DNS = "198.51.100.10"


def unit_caps(role: str) -> list[str]:
    """The capabilities ntma-<role>.service grants, as setpriv names them (net_admin)."""
    text = (UNITS / f"ntma-{role}.service").read_text()
    ambient = re.search(r"^AmbientCapabilities=(.*)$", text, re.M)
    bounding = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M)
    assert ambient and bounding, f"ntma-{role}.service names no capabilities"
    caps = ambient.group(1).split()
    assert caps == bounding.group(1).split()  # nothing in the bounding set beyond the ambient
    return [c.removeprefix("CAP_").lower() for c in caps]


def _reachable_by_all(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in path.resolve().parents)


def confined(cmd: list[str], caps: list[str], scratch: Path) -> list[str]:
    """`cmd` (python -m ntma ...) as nobody with only `caps` (see the module docstring)."""
    caps_arg = ",".join(["-all", *(f"+{c}" for c in caps)])
    setup = ["mount -t tmpfs -o mode=755 ntma-tun /dev/net", "mknod -m 666 /dev/net/tun c 10 200"]
    python = Path(sys.executable)
    if not _reachable_by_all(python):
        prefix = Path(sys.prefix)
        mirror = scratch / "python"
        mirror.mkdir(exist_ok=True)
        setup.append(f"mount --bind {prefix} {mirror}")
        setup.append(f"export LD_LIBRARY_PATH={mirror / 'lib'}")  # its libpython, not the OS's
        python = mirror / python.relative_to(prefix)
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    drop += [f"--inh-caps={caps_arg}", f"--ambient-caps={caps_arg}"]
    drop += [f"--bounding-set={caps_arg}", "--no-new-privs"]
    script = " && ".join(setup) + ' && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, "sh", *drop, str(python), *cmd[1:]]


def _own_for_nobody(run_dir: Path) -> None:
    """The daemon's files as its service user's (a unit's StateDirectory)."""
    for path in [run_dir, *run_dir.glob("keys*"), *run_dir.glob("keys/*")]:
        os.chown(path, NOBODY, NOBODY)
    for path in run_dir.glob("dc.sqlite*"):
        os.chown(path, NOBODY, NOBODY)


def _run_confined(run_dir: Path, name: str, role: str) -> None:
    state = load_state(run_dir)
    assert state is not None
    spec = state.daemons[name]
    spec.cmd = confined(spec.cmd, unit_caps(role), run_dir)
    save_state(state)
    for path in [*run_dir.glob("ctl"), *run_dir.glob("ctl/*")]:  # the root daemon's socket, left
        os.chown(path, NOBODY, NOBODY)  # by the kill: the service user's to replace
    lab_restart(run_dir, name, wait_s=30.0)


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


def _cap_eff(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^CapEff:\s+([0-9a-f]+)", status, re.M).group(1), 16)


CAP_BITS = {"net_bind_service": 10, "net_admin": 12, "net_raw": 13}


@pytest.fixture(scope="module")
def caps_lab(open_lab):
    """The lab in a run directory nobody can enter (pytest's tmp_path is root's only)."""
    if shutil.which("setpriv") is None or shutil.which("unshare") is None:
        pytest.skip("needs setpriv and unshare (util-linux)")
    run_dir = Path(tempfile.mkdtemp(prefix="ntma-caps-", dir="/tmp"))
    os.chmod(run_dir, 0o755)
    try:
        with open_lab(run_dir / "run", mn_nat="none", cn_nat="none", dhcp=True) as state:
            os.chmod(run_dir / "run", 0o755)
            _own_for_nobody(run_dir / "run")
            yield state
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.netns
def test_dc_and_node_run_as_nobody_with_only_their_units_caps(caps_lab):
    run_dir = caps_lab.run_dir
    vip_cn = caps_lab.nodes["cn"].vip if hasattr(caps_lab.nodes["cn"], "vip") else None
    _run_confined(run_dir, "dc", "dc")
    dc_pid = load_state(run_dir).daemons["dc"].pid
    assert _uid(dc_pid) == NOBODY
    assert _cap_eff(dc_pid) == 1 << CAP_BITS["net_bind_service"]
    # port 53 served, and the nodes registered again with the restarted DC
    wait_for(lambda: dig("ntma-mn", "cn.ntm.example", f"@{DC_DNS}"), 30, "the DC's DNS")
    _run_confined(run_dir, "mn", "node")  # returns once mn logged "registered"
    mn_pid = load_state(run_dir).daemons["mn"].pid
    assert _uid(mn_pid) == NOBODY
    want = (1 << CAP_BITS["net_admin"]) | (1 << CAP_BITS["net_bind_service"])
    assert _cap_eff(mn_pid) == want
    vip = dig("ntma-mn", "cn.ntm.example")  # mn's own DNS on 127.0.0.1:53 builds the tunnel
    assert vip and (vip_cn is None or vip == vip_cn)
    ping = ns_run("ntma-mn", "ping", "-c", "3", "-i", "0.2", "-W", "2", vip, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


@pytest.mark.netns
def test_the_adapter_runs_as_nobody_with_only_its_units_caps(caps_lab):
    """Raw socket, TUNs, nft, DHCP on 67 and DNS on 53 as nobody (ip_forward is already on
    in its namespace, as 99-ntma-adapter.conf makes it on a host)."""
    run_dir = caps_lab.run_dir
    _run_confined(run_dir, "adapter", "adapter")  # returns once it logged "registered"
    pid = load_state(run_dir).daemons["adapter"].pid
    assert _uid(pid) == NOBODY
    assert _cap_eff(pid) == sum(1 << CAP_BITS[c] for c in unit_caps("adapter"))
    vip = dig("ntma-gn", "cn.ntm.example")  # the adapter's DNS, which builds the tunnel
    assert vip
    ping = ns_run("ntma-gn", "ping", "-c", "3", "-i", "0.2", "-W", "2", vip, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


@pytest.mark.netns
def test_a_node_without_net_admin_says_so_in_one_line(caps_lab):
    state = caps_lab
    config = replace(  # beside the running cn: another port, TUN and DNS address
        load_node_config(state.configs["cn"]),
        listen=("0.0.0.0", 7499),
        tun_name="ntmx0",
        dns_listen=("127.0.0.2", 53),
    )
    path = state.run_dir / "configs" / "cn-nocap.toml"
    write_config(path, config, state.keys["cn"].private_key_file)
    cmd = [sys.executable, "-m", "ntma", "node", "--config", str(path)]
    caps = [c for c in unit_caps("node") if c != "net_admin"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        ["ip", "netns", "exec", "ntma-cn", *confined(cmd, caps, state.run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and "CAP_NET_ADMIN" in lines[0], lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("role", ["dc", "node", "adapter", "relay"])
def test_systemd_analyze_verifies_each_unit(tmp_path, role):
    unit = tmp_path / f"ntma-{role}.service"
    text = (UNITS / unit.name).read_text()
    exe = shutil.which("ntma") or "/usr/local/bin/ntma"  # verify wants ExecStart to exist
    unit.write_text(text.replace("/usr/local/bin/ntma", exe))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if unit.name in line or "Unknown" in line or "Invalid" in line
    ]
    assert result.returncode == 0 and not problems, result.stderr


@pytest.mark.parametrize("role", ["dc", "node", "adapter", "relay"])
def test_each_unit_grants_what_the_role_says_it_needs(role):
    assert unit_caps(role) == [c.removeprefix("CAP_").lower() for c in ROLE_CAPS[role]]


def test_the_missing_capability_is_named(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000000400\n")  # CAP_NET_BIND_SERVICE only
    assert missing_caps("node", status) == ["CAP_NET_ADMIN"]
    assert missing_caps("dc", status) == []
    group = ExceptionGroup("x", [ValueError(), ExceptionGroup("y", [PermissionError(1, "no")])])
    assert isinstance(permission_error(group), PermissionError)
    assert permission_error(ExceptionGroup("x", [ValueError()])) is None
