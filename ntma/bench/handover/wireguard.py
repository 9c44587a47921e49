"""wireguard-go between ntma-mn and ntma-cn, for the roaming comparison: one end (the
initiator) is given the other's public endpoint and a persistent keep-alive (it is the one
behind a NAT, or the only one that can reach the other); the responder learns the
initiator's endpoint from its authenticated packets, and follows it when it changes
(WireGuard's roaming). Nothing tells either end where a peer went: after a run without
recovery the initiator is pointed at the responder's new address by hand (`repoint`), as
its user would have to.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from ...lab import LabError, ip, load_state, ns_run, run, write_private
from ..lab.session import link_exists
from ..lab.tunnels import clear_stale_wg_socket, wg_socket
from .settings import (
    CN,
    MN,
    WG_IFACES,
    WG_IPS,
    WG_KEEPALIVE_S,
    WG_PORT,
    HandoverError,
)
from .traffic import Processes

SIDES = {"mn": MN, "cn": CN}


def _other(side: str) -> str:
    return "cn" if side == "mn" else "mn"


def _socket(side: str) -> Path:
    return wg_socket(WG_IFACES[side])


def public_address(run_dir: Path, side: str) -> str:
    state = load_state(run_dir)
    if state is None:
        raise HandoverError(f"no lab in {run_dir}")
    return state.hosts()[side].public_address


class WireGuard:
    """The two wireguard-go ends of one scenario."""

    def __init__(self, procs: Processes, run_dir: Path, initiator: str) -> None:
        self.procs, self.run_dir = procs, run_dir
        self.initiator, self.responder = initiator, _other(initiator)
        self.public: dict[str, str] = {}

    def up(self) -> None:
        base = self.procs.dir / "wireguard"
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        for side in SIDES:
            private = run("wg", "genkey").stdout.strip()
            write_private(base / f"{side}.key", private + "\n")
            self.public[side] = run("wg", "pubkey", input=private + "\n").stdout.strip()
            clear_stale_wg_socket(WG_IFACES[side], HandoverError)
        for side, ns in SIDES.items():
            self.procs.spawn(
                f"wireguard-go-{side}",
                ns,
                "env",
                "WG_PROCESS_FOREGROUND=1",
                "LOG_LEVEL=error",
                "wireguard-go",
                WG_IFACES[side],
            )
        deadline = time.monotonic() + 10.0
        for side, ns in SIDES.items():
            while not (link_exists(ns, WG_IFACES[side]) and _socket(side).exists()):
                if time.monotonic() >= deadline:
                    tail = self.procs.tail(f"wireguard-go-{side}")
                    raise HandoverError(f"wireguard-go did not make {WG_IFACES[side]}: {tail}")
                time.sleep(0.05)
        # The responder first: an init reaching a responder without the peer configured is
        # retried only after 5 s (REKEY_TIMEOUT).
        for side in (self.responder, self.initiator):
            other = _other(side)
            peer = ["peer", self.public[other], "allowed-ips", f"{WG_IPS[other]}/32"]
            if side == self.initiator:
                peer += ["persistent-keepalive", str(WG_KEEPALIVE_S)]
                peer += ["endpoint", self._endpoint()]
            key = str(base / f"{side}.key")
            self._wg(side, "listen-port", str(WG_PORT), "private-key", key, *peer)
            ns, iface = SIDES[side], WG_IFACES[side]
            ip(ns, "addr", "add", f"{WG_IPS[side]}/32", "dev", iface)
            ip(ns, "link", "set", iface, "up")
            ip(ns, "route", "replace", f"{WG_IPS[other]}/32", "dev", iface)

    def _endpoint(self) -> str:
        return f"{public_address(self.run_dir, self.responder)}:{WG_PORT}"

    def _wg(self, side: str, *args: str) -> None:
        ns_run(SIDES[side], "wg", "set", WG_IFACES[side], *args)

    def repoint(self) -> str:
        """Give the initiator the responder's current endpoint (a user's manual fix)."""
        endpoint = self._endpoint()
        self._wg(self.initiator, "peer", self.public[self.responder], "endpoint", endpoint)
        return endpoint

    def down(self) -> None:
        for side, ns in SIDES.items():
            with contextlib.suppress(LabError):
                if link_exists(ns, WG_IFACES[side]):
                    ns_run(ns, "ip", "link", "del", WG_IFACES[side], check=False)
            with contextlib.suppress(OSError):
                _socket(side).unlink(missing_ok=True)
