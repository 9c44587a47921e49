"""Fixtures shared by the tests that build the namespace lab (marked ``netns``).

Every ``netns`` test is skipped, with the reason, when this machine cannot build the lab:
not root, a tool missing, or namespaces refused (e.g. a container without CAP_SYS_ADMIN).
The lab itself is opened with the `open_lab` fixture, which always tears it down.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import LabState, lab_down, lab_up, root_link_names

#: What the lab and the tests on it run (the lab's own tools, and the probes the tests use).
NETNS_TOOLS = (
    "ip",
    "nft",
    "dnsmasq",
    "dig",
    "curl",
    "nc",
    "iperf3",
    "tcpdump",
    "ethtool",
    "dhclient",
)


@functools.cache
def netns_skip_reason() -> str | None:
    """Why this machine cannot run the lab tests, or None (asked once per session)."""
    if os.geteuid() != 0:
        return "netns tests need root"
    missing = [t for t in NETNS_TOOLS if shutil.which(t) is None]
    if missing:
        return f"netns tests need {', '.join(missing)} (install them; .ci/run does)"
    name = f"ntma-probe-{os.getpid()}"  # root alone is not enough: probe once
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"cannot create network namespaces: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        reason = netns_skip_reason()
        if reason is not None:
            pytest.skip(reason)


@contextlib.contextmanager
def _open_lab(run_dir: Path, **options: Any) -> Iterator[LabState]:
    """The lab up with its daemons (`lab_up` options), torn down whatever happens."""
    options.setdefault("wait_s", 30.0)
    try:
        yield lab_up(run_dir, **options)
    finally:
        lab_down(run_dir)


@pytest.fixture(scope="session")
def open_lab() -> Callable[..., AbstractContextManager[LabState]]:
    """`with open_lab(run_dir, mn_nat="none", ...) as state:` (any scope may use it)."""
    return _open_lab


@pytest.fixture(scope="session")
def root_links_before() -> list[str]:
    """Root-namespace interfaces before any lab was built by this test session."""
    return root_link_names()
