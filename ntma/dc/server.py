"""`ntma dc`: the Direction Coordinator's I/O around the Coordinator state machine.

One UDP socket for signalling and one for probes, both driven by serve.run_machine; one
for DNS (the zone's A records, so a stock resolver can look up a node's VIP); a stats
line per interval, clean stop on SIGINT/SIGTERM (serve.serve_until_signalled).
"""

from __future__ import annotations

import contextlib
import functools
import socket
import time

import structlog
import trio

from ..config import DcConfig
from ..control import open_control_socket, run_control_server
from ..control.server_status import dc_status
from ..io.fdio import UdpSocket
from ..io.packetio import DatagramIO
from ..observe.log import RateLimitedDebug
from ..observe.metrics import registry_for_dc
from ..observe.metrics_http import start_metrics
from ..observe.spans import Spans
from ..proto.buffer import CodecError, Endpoint
from ..proto.dns import ResponseRateLimit, parse_query, refused, truncated, zone_answer
from ..proto.names import is_ntm_name
from ..reload import Load, Reloader, no_reload, run_reload_on_sighup
from ..serve import SidePort, run_machine, serve_until_signalled
from .coordinator import Coordinator
from .store import NodeStore


async def run_signalling_server(
    dc: Coordinator,
    udp: DatagramIO,
    spans: Spans,
    *,
    probe: DatagramIO | None = None,
    filter_probe: DatagramIO | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The Coordinator on its signalling socket and, if given, its probe port (which
    answers PROBE only, from that port: see dc/route.py) and filter port (which only sends:
    dc/probes.py), through the one driver."""
    side_ports = []
    if probe is not None:
        side_ports.append(SidePort(probe, dc.receive_probe, dc.probe_datagrams_to_send))
    if filter_probe is not None:
        side_ports.append(SidePort(filter_probe, dc.receive_filter, dc.filter_datagrams_to_send))
    await run_machine(
        dc, udp, spans.stage("dc_signalling"), side_ports=side_ports, task_status=task_status
    )


async def run_zone_dns(
    dc: Coordinator,
    sock: trio.socket.SocketType,
    spans: Spans,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    stats = spans.stage("dc_dns")
    debug = RateLimitedDebug(structlog.get_logger().bind(stage="dc_dns"))
    rrl = ResponseRateLimit()
    task_status.started()
    while True:
        try:
            data, addr = await sock.recvfrom(65535)
        except OSError:
            stats.drop("receive_error")
            continue
        started = time.perf_counter_ns()
        try:
            query = parse_query(data)
        except CodecError as exc:
            stats.drop("malformed_query")
            debug(trio.current_time(), "malformed_query", detail=str(exc))
            continue
        if not rrl.allow(addr[0], trio.current_time()):  # no amplification toward a victim
            stats.drop("rate_limited")
            reply = truncated(query)
        elif not is_ntm_name(query.name, [dc.zone]):
            reply = refused(query)
        else:
            record = dc.store.get(query.name)
            online = dc.online_record(query.name)
            vip = online.vip if online else None
            vip6 = dc.store.vip6.of(vip) if vip else None
            reply = zone_answer(query, vip, record is not None, vip6=vip6)
        try:
            await sock.sendto(reply, addr)
        except OSError:
            stats.drop("send_error")
            continue
        stats.record(1, len(reply), started)


async def run_dc(config: DcConfig, load_again: Load | None = None) -> None:
    """`load_again`: the config file read anew, for SIGHUP (reload.py)."""
    log = structlog.get_logger().bind(role="dc", zone=config.zone)
    spans = Spans()
    with contextlib.ExitStack() as resources:
        store = resources.enter_context(
            contextlib.closing(NodeStore(config.database, config.vip_pool, config.vip6_pool))
        )
        dc = _coordinator(config, store)
        udp = resources.enter_context(contextlib.closing(UdpSocket.bind(config.listen)))
        probe, filter_probe = (
            resources.enter_context(contextlib.closing(UdpSocket.bind(_side(port, config))))
            if port
            else None
            for port in (config.probe_listen, config.filter_probe_listen)
        )
        control = open_control_socket(config.control_socket, "dc")
        if control is not None:
            resources.callback(control.close)

        def apply(new: DcConfig) -> dict:
            return dc.reload(new.admission, new.subzones, new.relays, trio.current_time())

        reloader = Reloader(
            config, load_again or no_reload(config), apply, ("admission", "subzones", "relays")
        )

        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(run_reload_on_sighup, reloader)
            await nursery.start(
                functools.partial(run_signalling_server, probe=probe, filter_probe=filter_probe),
                dc,
                udp,
                spans,
            )
            if config.dns_listen is not None:
                dns_sock = resources.enter_context(
                    trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                )
                await dns_sock.bind(config.dns_listen)
                await nursery.start(run_zone_dns, dc, dns_sock, spans)
            if control is not None:
                status = functools.partial(_dc_status, dc)
                await nursery.start(run_control_server, control, status, spans.stage("control"))
            await start_metrics(nursery, config.metrics_listen, registry_for_dc(dc, spans), spans)

        ready = {
            "listen": f"{config.listen[0]}:{config.listen[1]}",
            "vip_pool": str(config.vip_pool),
            "vip6_pool": str(config.vip6_pool) if config.vip6_pool else None,
            "public_key": config.key.public_base64(),
            "admitted": sorted(config.admission),
            "relays": [f"{ep[0]}:{ep[1]}" for ep, _ in config.relays],
        }
        await serve_until_signalled(
            log,
            spans,
            stats_interval_s=config.log.stats_interval,
            start=start,
            ready=("dc_ready", ready),
            resources=resources,
        )


def _side(port: Endpoint, config: DcConfig) -> Endpoint:
    """Where a probe port binds: with a dual-stack `listen`, dual-stack on its port too, so
    nodes probe it in both families (they are told its address in one)."""
    return ("::", port[1]) if config.listen[0] == "::" else port


def _dc_status(dc: Coordinator) -> dict:
    return dc_status(dc, trio.current_time())


def _coordinator(config: DcConfig, store: NodeStore) -> Coordinator:
    return Coordinator(
        static=config.key,
        store=store,
        zone=config.zone,
        admission=config.admission,
        subzones=config.subzones,
        keepalive_s=config.keepalive_interval,
        keepalive_misses=config.keepalive_misses,
        epoch_offset=time.time() - trio.current_time(),
        probe_endpoint=config.probe_listen,
        filter_port=config.filter_probe_listen is not None,
        relays=config.relays,
    )
