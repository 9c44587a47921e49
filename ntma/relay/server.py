"""`ntma relay`: the Relay Server's I/O around the sans-IO Relay (serve.py's driver)."""

from __future__ import annotations

import contextlib
import time

import structlog
import trio

from ..config import RelayConfig
from ..control import open_control_socket, run_control_server
from ..control.server_status import relay_status
from ..io.fdio import UdpSocket
from ..io.packetio import DatagramIO
from ..observe.metrics import registry_for_relay
from ..observe.metrics_http import start_metrics
from ..observe.spans import Spans
from ..reload import Load, Reloader, no_reload, run_reload_on_sighup
from ..serve import run_machine, serve_until_signalled
from .relay import Relay


async def run_relay_loop(
    relay: Relay,
    udp: DatagramIO,
    spans: Spans,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    def gauges() -> dict[str, int]:
        return {"forwarded": relay.forwarded, "relays": len(relay.entries)}

    await run_machine(relay, udp, spans.stage("relay"), gauges=gauges, task_status=task_status)


async def run_relay(config: RelayConfig, load_again: Load | None = None) -> None:
    """`load_again`: the config file read anew, for SIGHUP (its log level: reload.py)."""
    log = structlog.get_logger().bind(role="relay")
    reloader = Reloader(config, load_again or no_reload(config), lambda new: {}, ())
    spans = Spans()
    with contextlib.ExitStack() as resources:
        relay = Relay(
            static=config.key,
            dc_public=config.dc_public_key,
            idle_timeout=config.idle_timeout,
            epoch_offset=time.time() - trio.current_time(),
        )
        udp = resources.enter_context(contextlib.closing(UdpSocket.bind(config.listen)))
        control = open_control_socket(config.control_socket, "relay")
        if control is not None:
            resources.callback(control.close)

        def status() -> dict:
            return relay_status(relay, trio.current_time())

        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(run_relay_loop, relay, udp, spans)
            if control is not None:
                await nursery.start(run_control_server, control, status, spans.stage("control"))
            await nursery.start(run_reload_on_sighup, reloader)
            registry = registry_for_relay(relay, spans)
            await start_metrics(nursery, config.metrics_listen, registry, spans)

        ready = {
            "listen": f"{config.listen[0]}:{config.listen[1]}",
            "public_key": config.key.public_base64(),
        }
        await serve_until_signalled(
            log,
            spans,
            stats_interval_s=config.log.stats_interval,
            start=start,
            ready=("relay_ready", ready),
            resources=resources,
        )
