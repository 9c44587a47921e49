"""The handover benchmark's fixed facts: ports, rates, timings, the wireguard-go tunnel's
names and addresses, and the targets of issue 11.

Names and addresses are the lab's (`ntma.lab`); the wireguard-go tunnel's own addresses are
chosen apart from every lab network and from the lab bench's tunnels (`bench/lab`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ...lab import GN_NS

MN, CN, GN = "ntma-mn", "ntma-cn", GN_NS
CN_NAME = "cn.ntm.example"
ECHO_PORT = 9310  # the UDP echo server in ntma-cn (ntma.lab.traffic)
TCP_PORT = 9311  # the paced TCP sender in ntma-cn (tcpstream.py)
PPS = 100.0  # the UDP echo stream's rate
TCP_RATE = 200_000  # bytes/s: the TCP sender's pace
PRE_S = 1.0  # traffic before the event (the stream and the transfer are flowing)
AFTER_S = 3.0  # the transfer's file lasts this long after the event at TCP_RATE...
MIN_AFTER_S = 2.0  # ...and the stream runs at least this long after it
WINDOW_S = 40.0  # no echo within this long after the event (plus twice --down-for): no recovery
READY_TIMEOUT_S = 20.0  # the peer must answer a ping before a run within this long
RETURN_CHECK_S = 20.0  # after the move back: how long the path may take to work again
STOP_TIMEOUT_S = 5.0
DEFAULT_RUNS = 5
DEFAULT_DOWN_FOR_S = 5.0
DEFAULT_RUN_DIR = Path("/run/ntma-bench-handover")

#: wireguard-go between ntma-mn and ntma-cn (interface names are global: UAPI sockets).
WG_IFACES = {"mn": "wgho-mn", "cn": "wgho-cn"}
WG_IPS = {"mn": "10.93.0.1", "cn": "10.93.0.2"}
WG_PORT = 51820
WG_KEEPALIVE_S = 25

#: Target classes (issue 11, item 8; item 6 for NAT rebinding): the gap limit in seconds
#: (None: read from the lab, see `stats.gap_target`), a short label, what the class means.
TARGETS: dict[str, tuple[float | None, str, str]] = {
    "public": (0.1, "public", "the mover lands on a public address"),
    "redirect": (0.5, "re-direct", "the DC must re-direct or punch"),
    "relay": (1.0, "relay", "through the relay"),
    "restart": (2.0, "restart", "restart recovery"),
    "rebinding": (None, "keep-alive", "NAT rebinding: within one keep-alive interval"),
}

#: Tools each kind of scenario needs beyond the lab's own.
TOOLS: dict[str, tuple[str, ...]] = {
    "ntma": ("ping", "dig"),
    "wireguard-go": ("ping", "wireguard-go", "wg"),
    "adapter": ("dhclient",),
    "nat-reset": ("conntrack",),
}


class HandoverError(RuntimeError):
    """One run or scenario could not be measured (message is one line)."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def src_root() -> str:
    return str(Path(__file__).resolve().parents[3])


def _module_cmd(module: str, *args: object) -> list[str]:
    """`python3 -m MODULE ARGS` as run inside a namespace (uninstalled works too)."""
    return ["env", f"PYTHONPATH={src_root()}", sys.executable, "-m", module, *map(str, args)]


def traffic_cmd(*args: object) -> list[str]:
    return _module_cmd("ntma.lab.traffic", *args)


def tcpstream_cmd(*args: object) -> list[str]:
    return _module_cmd("ntma.bench.handover.tcpstream", *args)
