"""`ntma node`: an NTM terminal for unmodified Linux applications.

Opens the TUN device and the one UDP socket, starts the pipeline, the DNS
responder and the stats logger, and on SIGINT/SIGTERM deregisters, logs final
stats and closes (the TUN disappears with its fd).
"""

from __future__ import annotations

import signal
import socket
from functools import partial

import structlog
import trio

from ..config import NodeConfig
from ..control import open_control_socket, run_control_server
from ..control.node_status import node_status
from ..io.fdio import UdpSocket
from ..io.tun import TunDevice
from ..observe.metrics import registry_for_node
from ..observe.metrics_http import start_metrics
from ..observe.spans import run_stats_logger
from ..proto.ether6 import IPV6_MIN_MTU
from ..proto.fields_v2 import VIP6_NONE
from ..proto.node import Registered
from ..reload import SUFFIXES, Load, Reloader, no_reload, reload_suffixes, run_reload_on_sighup
from ..stages.core import NodePipeline
from ..stages.dns import DnsResolver, run_dns_tcp, run_dns_udp
from ..stages.pipeline import start_node_pipeline
from .lifecycle import log_final, make_signalling, wait_then_deregister
from .timestamps import keep_saving, restore_timestamp


async def run_node(config: NodeConfig, load_again: Load | None = None) -> None:
    """`load_again`: the config file read anew, for SIGHUP (reload.py)."""
    log = structlog.get_logger().bind(role="node", fqdn=config.fqdn)
    udp = UdpSocket.bind(config.listen)
    tun = TunDevice(config.tun_name, config.mtu)
    sm = make_signalling(
        fqdn=config.fqdn,
        key=config.key,
        dc_public_key=config.dc_public_key,
        dc_address=config.dc_address,
        dc_address6=config.dc_address6,
        listen=config.listen,
        exclude={config.tun_name},
    )
    pipe = NodePipeline(sm, watch_exclude=frozenset({config.tun_name}))
    stamps = restore_timestamp(sm.wire.initiations, config.key_path)
    current_vip: list[str] = []

    async def on_registered(event: Registered) -> None:
        vips = [event.vip, event.vip6]
        if current_vip != vips:
            vip6 = "" if event.vip6 == VIP6_NONE else event.vip6
            if vip6 and config.mtu < IPV6_MIN_MTU:  # the kernel takes IPv6 off such a link
                log.warning("tun_ipv6_off", mtu=config.mtu, fix=f"set mtu >= {IPV6_MIN_MTU}")
                vip6 = ""
            await tun.configure(event.vip, event.prefix_len, vip6, event.prefix6)
            current_vip[:] = vips
            log.info(
                "tun_configured", tun=tun.name, vip=event.vip, vip6=vip6 or None, mtu=config.mtu
            )

    resolver = DnsResolver(
        pipe.broker, config.dns_upstream, config.ntm_suffixes, pipe.spans.stage("dns")
    )
    reloader = Reloader(
        config, load_again or no_reload(config), partial(reload_suffixes, resolver), SUFFIXES
    )
    dns_sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await dns_sock.bind(config.dns_listen)
    dns_tcp = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dns_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await dns_tcp.bind(config.dns_listen)
    dns_tcp.listen(64)
    control = open_control_socket(config.control_socket, "node")
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await start_node_pipeline(nursery, pipe, tun, udp, on_registered)
                await nursery.start(run_dns_udp, dns_sock, resolver, pipe.spans.stage("dns"))
                await nursery.start(
                    run_dns_tcp, trio.SocketListener(dns_tcp), resolver, pipe.spans.stage("dns")
                )
                await nursery.start(run_stats_logger, pipe.spans, config.log.stats_interval)
                if control is not None:

                    def status() -> dict:
                        return node_status(sm, pipe.spans, trio.current_time())

                    await nursery.start(
                        run_control_server, control, status, pipe.spans.stage("control")
                    )
                await nursery.start(run_reload_on_sighup, reloader)
                registry = registry_for_node(sm, pipe.spans, "node")
                await start_metrics(nursery, config.metrics_listen, registry, pipe.spans)
                if stamps is not None:
                    nursery.start_soon(keep_saving, sm.wire.initiations, stamps, log)
                log.info(
                    "node_ready",
                    tun=tun.name,
                    listen=f"{config.listen[0]}:{config.listen[1]}",
                    dns=f"{config.dns_listen[0]}:{config.dns_listen[1]}",
                )
                await wait_then_deregister(signals, pipe, udp, log)
                nursery.cancel_scope.cancel()
    finally:
        log_final(pipe, log)
        dns_sock.close()
        dns_tcp.close()
        if control is not None:
            control.close()
        udp.close()
        tun.close()
        log.info("stopped")
