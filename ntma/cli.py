"""Command line: `ntma dc|node|keygen|lab ...` (also `python -m ntma`)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import trio

from .config import (
    ConfigError,
    load_adapter_config,
    load_dc_config,
    load_node_config,
    load_relay_config,
)
from .observe.log import configure_logging
from .proto.crypto import StaticKey, write_key_file

ROLES = """roles:
  dc       Direction Coordinator: registers nodes, hands out VIPs, directs tunnels, serves DNS
  node     NTM node: TUN device with the node's VIP, local DNS responder, encrypted tunnels
  adapter  NTMobile adapter: makes an unmodified device on a second NIC a full NTM member
  relay    Relay Server: relays the tunnels the DC grants when the ends cannot meet
  check    validate a config (any role): one line per problem, each with its fix
  status   ask a running daemon what it is doing (its config's control_socket)
  keygen   make an X25519 key pair (private key file, public key printed in base64)
  lab      build, inspect or remove the network-namespace lab (up | down | status | demo)
  bench    run the benchmarks (per stage, whole pipeline in process; --lab end to end)
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ntma",
        description="NTMobile in Python/Trio.",
        epilog=ROLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="role", metavar="ROLE", parser_class=_Parser)
    for role, help_text in (
        ("dc", "run a Direction Coordinator"),
        ("node", "run an NTM node"),
        ("adapter", "run the adapter for a general node"),
        ("relay", "run a Relay Server"),
    ):
        p = sub.add_parser(role, help=help_text)
        p.add_argument("--config", required=True, type=Path, help="TOML configuration file")
        p.add_argument(
            "--log-format",
            choices=("json", "console"),
            default=None,
            help="default: json unless stderr is a terminal",
        )
    sub.choices["dc"].add_argument(
        "--reset-timestamp",
        metavar="NAME",
        help="forget the newest handshake timestamp stored for NAME's key (a node whose clock "
        "once ran ahead can register again), then exit; takes effect at the DC's next start",
    )
    check = sub.add_parser("check", help="validate a config: every problem, one line each")
    check.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    check.add_argument(
        "--role",
        dest="role_name",  # args.role is the subcommand
        choices=("dc", "node", "adapter", "relay"),
        help="default: from its tables",
    )
    status = sub.add_parser("status", help="ask a running daemon what it is doing")
    status.add_argument("--config", required=True, type=Path, help="the daemon's TOML config")
    status.add_argument("--json", action="store_true", help="JSON instead of the table")
    keygen = sub.add_parser("keygen", help="make a key pair")
    keygen.add_argument("--out", required=True, type=Path, help="private key file to write")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing file")
    sub.add_parser("lab", help="network-namespace lab", add_help=False)
    sub.add_parser("bench", help="benchmarks: per stage, pipeline, lab", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .bench.report import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["lab"]:
        from .lab import main as lab_main

        return lab_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.role is None:
        build_parser().print_help()
        return 2
    if args.role == "keygen":
        return _keygen(args.out, args.force)
    if args.role == "check":
        from .config_check import run_check

        return run_check(args.config, args.role_name)
    if args.role == "status":
        from .control.cli import status_main

        return status_main(args.config, args.json)
    loaders = {
        "dc": load_dc_config,
        "node": load_node_config,
        "adapter": load_adapter_config,
        "relay": load_relay_config,
    }
    try:
        config = loaders[args.role](args.config)
    except ConfigError as exc:
        for problem in getattr(exc, "problems", [exc]):  # one line each
            print(f"ntma {args.role}: error: {problem}", file=sys.stderr)
        return 2
    def load_again():  # SIGHUP: the same file, the same loader (reload.py)
        return loaders[args.role](args.config)

    if args.role == "dc" and args.reset_timestamp is not None:
        return _reset_timestamp(config, args.reset_timestamp)
    fmt = args.log_format
    configure_logging(config.log.level, json=None if fmt is None else fmt == "json")
    try:
        trio.run(functools.partial(_runner(args.role), config, load_again=load_again))
    except (PermissionError, ConfigError, BaseExceptionGroup) as exc:
        from .caps import permission_error, permission_line

        config_error = _config_error(exc)  # found at start: the control socket is in use, say
        if config_error is not None:
            print(f"ntma {args.role}: error: {config_error}", file=sys.stderr)
            return 2
        refused = permission_error(exc)
        if refused is None:
            raise
        print(permission_line(args.role, refused), file=sys.stderr)  # names the capability
        return 2
    return 0


def _config_error(exc: BaseException) -> ConfigError | None:
    """The ConfigError a daemon's start raised, also from inside its nursery's group."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found, _ = exc.split(ConfigError)
        if found is not None:
            return next(_leaves(found))
    return None


def _leaves(group: BaseExceptionGroup):
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _runner(role: str):
    if role == "dc":
        from .dc.server import run_dc

        return run_dc
    if role == "node":
        from .node.run import run_node

        return run_node
    if role == "relay":
        from .relay.server import run_relay

        return run_relay
    from .adapter.run import run_adapter

    return run_adapter


def _keygen(out: Path, force: bool) -> int:
    if out.exists() and not force:
        print(f"ntma keygen: error: {out} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    key = StaticKey.generate()
    try:
        write_key_file(out, key)
    except OSError as exc:
        print(
            f"ntma keygen: error: cannot write {out} ({exc.strerror}); pick a writable path",
            file=sys.stderr,
        )
        return 2
    print(key.public_base64())
    return 0


def _reset_timestamp(config, name: str) -> int:
    from .dc.store import NodeStore
    from .proto.names import normalize_fqdn

    key = config.admission.get(normalize_fqdn(name))
    if key is None:
        print(
            f"ntma dc: error: --reset-timestamp {name}: no such name in [admission]; "
            "give an admitted name",
            file=sys.stderr,
        )
        return 2
    store = NodeStore(config.database, config.vip_pool)
    try:
        store.reset_timestamp(key)
    finally:
        store.close()
    print(f"reset the stored handshake timestamp of {normalize_fqdn(name)}")
    return 0
