"""`ntma node`: an NTM terminal for unmodified Linux applications.

Opens the TUN device and the one UDP socket, starts the pipeline, the DNS
responder and the stats logger, and on SIGINT/SIGTERM deregisters, logs final
stats and closes (the TUN disappears with its fd).
"""

from __future__ import annotations

import fcntl
import signal
import socket
import struct
import time

import structlog
import trio

from .config import NodeConfig
from .io.fdio import UdpSocket
from .io.tun import TunDevice
from .proto.buffer import Endpoint
from .proto.node_sm import NodeSignalling, Registered
from .stages.dns import DnsResolver, run_dns_tcp, run_dns_udp
from .stages.pipeline import NodePipeline, start_node_pipeline
from .stages.spans import run_stats_logger

SIOCGIFADDR = 0x8915
DEREGISTER_GRACE_S = 1.0


def interface_endpoints(port: int, exclude: set[str]) -> list[Endpoint]:
    """This host's IPv4 addresses (one per interface) with our UDP port."""
    found: list[Endpoint] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            if name == "lo" or name in exclude:
                continue
            try:
                ifreq = fcntl.ioctl(
                    probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15])
                )
            except OSError:
                continue  # no IPv4 address on this interface
            found.append((socket.inet_ntoa(ifreq[20:24]), port))
    return found


def local_endpoints_for_listen(listen: Endpoint, exclude: set[str]):
    """What the node tells the DC about its own address(es), computed at each Register."""
    if listen[0] != "0.0.0.0":
        return lambda: [listen]
    return lambda: interface_endpoints(listen[1], exclude)


async def run_node(config: NodeConfig) -> None:
    log = structlog.get_logger().bind(role="node", fqdn=config.fqdn)
    udp = UdpSocket.bind(config.listen)
    tun = TunDevice(config.tun_name, config.mtu)
    sm = NodeSignalling(
        fqdn=config.fqdn,
        static=config.key,
        dc_public=config.dc_public_key,
        dc_endpoint=config.dc_address,
        local_endpoints=local_endpoints_for_listen(config.listen, {config.tun_name}),
        epoch_offset=time.time() - trio.current_time(),
    )
    pipe = NodePipeline(sm)
    current_vip: list[str] = []

    async def on_registered(event: Registered) -> None:
        if current_vip != [event.vip]:
            await tun.configure(event.vip, event.prefix_len)
            current_vip[:] = [event.vip]
            log.info("tun_configured", tun=tun.name, vip=event.vip, mtu=config.mtu)

    resolver = DnsResolver(
        pipe.broker, config.dns_upstream, config.ntm_suffixes, pipe.spans.stage("dns")
    )
    dns_sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await dns_sock.bind(config.dns_listen)
    dns_tcp = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dns_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await dns_tcp.bind(config.dns_listen)
    dns_tcp.listen(64)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await start_node_pipeline(nursery, pipe, tun, udp, on_registered)
                await nursery.start(run_dns_udp, dns_sock, resolver, pipe.spans.stage("dns"))
                await nursery.start(
                    run_dns_tcp, trio.SocketListener(dns_tcp), resolver, pipe.spans.stage("dns")
                )
                await nursery.start(run_stats_logger, pipe.spans, config.log.stats_interval)
                log.info(
                    "node_ready",
                    tun=tun.name,
                    listen=f"{config.listen[0]}:{config.listen[1]}",
                    dns=f"{config.dns_listen[0]}:{config.dns_listen[1]}",
                )
                async for signum in signals:
                    log.info("shutting_down", signal=signal.Signals(signum).name)
                    break
                sm.deregister(trio.current_time())
                await udp.send_batch(sm.datagrams_to_send())
                with trio.move_on_after(DEREGISTER_GRACE_S):
                    await trio.sleep(0.2)  # let the DC's ack arrive; not required
                nursery.cancel_scope.cancel()
    finally:
        pipe.spans.log_summaries(log, "stage_stats_final")
        for tunnel in list(pipe.table.by_id.values()):
            log.info(
                "tunnel_closed",
                tunnel=tunnel.tunnel_id,
                peer=tunnel.peer_fqdn,
                packets_in=tunnel.packets_in,
                packets_out=tunnel.packets_out,
            )
        dns_sock.close()
        dns_tcp.close()
        udp.close()
        tun.close()
        log.info("stopped")
