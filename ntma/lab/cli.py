"""`ntma lab up|down|status|move|restart|nat-reset`: an NTMobile test lab built from Linux
network namespaces.

The lab's command line (`ntma lab ...` hands its arguments to `main`): argparse, one
handler per command, and errors as one line (exit status 2 for a layout that cannot be
built or a request refused before anything was touched, 1 for a lab that would not come
up or a step that failed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .demo import run_demo
from .lifecycle import lab_down, lab_nat_modes, lab_up
from .mobility import RESTARTABLE, lab_move, lab_nat_reset, lab_restart
from .settings import (
    ADAPTER_COUNTS,
    CN_NAT_MODES,
    DEFAULT_RUN_DIR,
    MAX_GNS,
    MOVE_TARGETS,
    NAT_MODES,
    NTM_DEFS,
    LabError,
    LabNotReady,
    LabRefused,
    one_line,
)
from .status import format_status, lab_status
from .topology import check_layout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntma lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--run-dir",
        type=Path,
        default=DEFAULT_RUN_DIR,
        help=f"state, keys, configs, logs (default {DEFAULT_RUN_DIR})",
    )
    up = sub.add_parser("up", parents=[common], help="build the lab (replacing a running one)")
    _add_layout_arguments(up)
    up.add_argument(
        "--no-daemons",
        action="store_true",
        help="only topology, web host and dnsmasq (no DC / nodes / adapter)",
    )
    up.add_argument(
        "--no-adapter",
        action="store_true",
        help="do not start the adapter daemons (their namespaces and GNs are still built)",
    )
    up.add_argument(
        "--dhcp",
        action="store_true",
        help="run a DHCP client in every GN (dhclient; udhcpc in ntma-gn2) and wait until "
        "each has a lease (within --wait)",
    )
    for host in ("mn", "cn", "adapter"):
        up.add_argument(
            f"--{host}-net",
            choices=("v4", "v6", "dual"),
            default="v4",
            help=f"{host}'s address families (v6, dual: public only, with --{host}-nat none; "
            "the DC, RS and web host are then dual-stack)",
        )
    up.add_argument(
        "--vip6",
        action="store_true",
        help="the DC hands out IPv6 VIPs too (fd00:99::/64): nodes answer AAAA and carry "
        "IPv6 between VIPs; clients then prefer IPv6, so servers must listen on it",
    )
    up.add_argument(
        "--wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long to wait for dc_ready / registered (default 20)",
    )
    sub.add_parser("down", parents=[common], help="stop everything, delete ntma-* namespaces")
    status = sub.add_parser(
        "status", parents=[common], help="show the lab (exit status 3 when it is down)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    demo = sub.add_parser("demo", parents=[common], help="bring up, show it working, tear down")
    _add_layout_arguments(demo)
    _add_mobility_parsers(sub, common)
    return parser


def _add_mobility_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """NODE and --to are checked by the commands themselves (one line, exit status 2)."""
    json_out = argparse.ArgumentParser(add_help=False)
    json_out.add_argument("--json", action="store_true", help="machine-readable output")
    hosts = "{" + ",".join(NTM_DEFS) + "}"
    move = sub.add_parser(
        "move",
        parents=[common, json_out],
        help="move a running NTM host to another network (its daemon keeps running)",
    )
    move.add_argument("node", metavar=hosts)
    move.add_argument("--to", required=True, metavar="{" + ",".join(MOVE_TARGETS) + "}")
    move.add_argument(
        "--down-for",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="time without a network between leaving the old one and joining (default 0)",
    )
    restart = sub.add_parser(
        "restart",
        parents=[common, json_out],
        help="kill a daemon hard (SIGKILL) and start it again, waiting until it is ready",
    )
    restart.add_argument("node", metavar="{" + ",".join(RESTARTABLE) + "}")
    restart.add_argument("--wait", type=float, default=20.0, metavar="SECONDS")
    reset = sub.add_parser(
        "nat-reset",
        parents=[common, json_out],
        help="flush the conntrack table (the mappings) of a host's own NAT router",
    )
    reset.add_argument("node", metavar=hosts)


def _add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mn-nat",
        choices=NAT_MODES,
        default="cone",
        help="cone: masquerade; symmetric: masquerade fully-random (default cone)",
    )
    parser.add_argument(
        "--cn-nat",
        choices=CN_NAT_MODES,
        default="none",
        help="same: cn behind mn's NAT, on its LAN (needs --mn-nat cone|symmetric; default none)",
    )
    parser.add_argument(
        "--adapter-nat",
        choices=NAT_MODES,
        default="cone",
        help="how the adapter (and the GNs behind it) reaches the Internet (default cone)",
    )
    parser.add_argument(
        "--gns",
        type=int,
        default=1,
        metavar="N",
        help=f"general nodes on the adapter's link, 1..{MAX_GNS}: ntma-gn, ntma-gn2, ... "
        "(gn.ntm.example, gn2.ntm.example, ...; more than one share a switch; default 1)",
    )
    parser.add_argument(
        "--adapters",
        type=int,
        default=1,
        choices=ADAPTER_COUNTS,
        help="2: a second adapter, ntma-adapter2, with its GN ntma-gnb (gnb.ntm.example)",
    )
    parser.add_argument(
        "--adapter2-nat",
        choices=CN_NAT_MODES,
        default="cone",
        help="how adapter2 reaches the Internet; same: behind the adapter's NAT (needs "
        "--adapter-nat cone|symmetric; default cone)",
    )
    parser.add_argument(
        "--block-direct",
        action="store_true",
        help="drop UDP between the NTM ends on the Internet segment (DC, RS, web stay "
        "reachable): hole punching fails, so tunnels must fall back to the relay",
    )


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        lab_up(
            args.run_dir,
            mn_nat=args.mn_nat,
            cn_nat=args.cn_nat,
            adapter_nat=args.adapter_nat,
            block_direct=args.block_direct,
            daemons=not args.no_daemons,
            adapter=not args.no_adapter,
            wait_s=args.wait,
            dhcp=args.dhcp,
            vip6=args.vip6,
            mn_net=args.mn_net,
            cn_net=args.cn_net,
            adapter_net=args.adapter_net,
            **layout_options(args),
        )
    except LabNotReady as exc:
        print(f"ntma lab: error: {exc} (lab left up; `ntma lab down` to remove)", file=sys.stderr)
        return 1
    print(format_status(lab_status(args.run_dir)))
    print(f"lab up in {time.monotonic() - t0:.1f}s")
    return 0


def layout_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"gns": args.gns, "adapters": args.adapters, "adapter2_nat": args.adapter2_nat}


def cmd_down(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    lab_down(args.run_dir)
    print(f"lab down in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = lab_status(args.run_dir)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0 if status["up"] else 3


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(
        args.run_dir,
        mn_nat=args.mn_nat,
        cn_nat=args.cn_nat,
        adapter_nat=args.adapter_nat,
        block_direct=args.block_direct,
        **layout_options(args),
    )


def _print_record(record: dict[str, object], as_json: bool, summary: str) -> int:
    print(json.dumps(record) if as_json else summary)
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    r = lab_move(args.run_dir, args.node, args.to, args.down_for)
    summary = (
        f"{r['node']}: {r['from']} {r['old_public_address']} -> {r['to']} "
        f"{r['new_public_address']} (address {r['new_address']}); down after "
        f"{r['down_at'] - r['started_at']:.3f}s, up {r['up_at'] - r['down_at']:.3f}s later"
    )
    return _print_record(r, args.json, summary)


def cmd_restart(args: argparse.Namespace) -> int:
    r = lab_restart(args.run_dir, args.node, args.wait)
    took = f"{r['ready_at'] - r['killed_at']:.2f}s after the kill" if r["killed_at"] else "started"
    summary = f"{r['daemon']}: pid {r['old_pid']} -> {r['pid']}, {r['ready_event']} ({took})"
    return _print_record(r, args.json, summary)


def cmd_nat_reset(args: argparse.Namespace) -> int:
    r = lab_nat_reset(args.run_dir, args.node)
    summary = f"{r['node']}: {r['flushed']} conntrack entries flushed in {r['nat_ns']}"
    return _print_record(r, args.json, summary)


HANDLERS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "demo": cmd_demo,
    "move": cmd_move,
    "restart": cmd_restart,
    "nat-reset": cmd_nat_reset,
}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("up", "demo"):
        try:  # a layout that cannot be built: one line, exit status 2, nothing touched
            check_layout(args.gns, args.adapters)
            lab_nat_modes(
                args.mn_nat, args.cn_nat, args.adapter_nat, args.adapter2_nat, args.adapters
            )
        except LabError as exc:
            print(f"ntma lab {args.command}: error: {exc}", file=sys.stderr)
            return 2
    try:
        return HANDLERS[args.command](args)
    except LabRefused as exc:  # nothing touched: like a bad command line
        print(f"ntma lab {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except (LabError, OSError) as exc:
        print(f"ntma lab: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ntma lab: interrupted", file=sys.stderr)
        return 130
