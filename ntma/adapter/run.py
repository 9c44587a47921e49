"""`ntma adapter`: the NTMobile adapter beside an unmodified general node (GN).

An NTM node whose application side is a real Ethernet NIC with the GN on it. It
registers the GN with the DC under the configured name, then serves the GN's
DHCP, ARP and DNS, carries its traffic to VIPs through the tunnels, and sends its
ordinary traffic through the kernel (routing, conntrack, masquerade) via a
passthrough TUN device, on which the adapter also owns the router address.

Kernel set-up it does (and undoes on exit): an nftables netdev ingress chain on
the GN interface that drops every frame after the raw socket has seen it (so the
kernel never answers or forwards the GN's frames itself), a masquerade rule for
traffic from the passthrough TUN, the router address and a route to the GN's VIP
on that TUN, and IPv4 forwarding. With IPv6 VIPs (the DC's pool has a /64): the router's
IPv6 address and the link prefix on the TUN too, and, only when this namespace has an IPv6
default route, IPv6 forwarding and NAT66 (masquerade) for the devices' ordinary IPv6: their
addresses are ULAs from the DC's pool, which the Internet does not route.
"""

from __future__ import annotations

import signal
import socket
from functools import partial
from pathlib import Path

import structlog
import trio

from ..config import AdapterConfig
from ..control import open_control_socket, run_control_server
from ..control.node_status import node_status
from ..io.addresses import has_ipv6_default_route
from ..io.fdio import UdpSocket
from ..io.rawsock import RawSocket
from ..io.tun import TunDevice, run_ip
from ..node.lifecycle import log_final, make_signalling, wait_then_deregister
from ..node.timestamps import keep_saving, restore_timestamp
from ..observe.metrics import registry_for_node
from ..observe.metrics_http import start_metrics
from ..observe.spans import run_stats_logger
from ..proto.devices import Devices
from ..proto.ether import ip_packed, ip_text
from ..proto.ether6 import ip6_text
from ..proto.gnlink import GnLink
from ..proto.node import Registered
from ..reload import SUFFIXES, Load, Reloader, no_reload, reload_suffixes, run_reload_on_sighup
from ..stages.core import NodePipeline
from ..stages.dns import DnsResolver, run_dns_tcp
from ..stages.gn_services import on_device_name, replay_held, serve_gn_vip
from ..stages.pipeline import AdapterParts, start_adapter_pipeline
from .devices import (
    devices_from_config,
    leases_path,
    load_leases,
    log_device_stats,
    rules_of,
    save_leases,
)

PASSTHROUGH_MTU = 1500
NAT_TABLE = "ntma_adapter"
GN_TABLE = "ntma_adapter_gn"
NAT6_TABLE = "ntma_adapter6"


def nft_rules(gn_interface: str, passthrough_tun: str) -> str:
    return f"""
add table ip {NAT_TABLE}
delete table ip {NAT_TABLE}
add table netdev {GN_TABLE}
delete table netdev {GN_TABLE}
table ip {NAT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        iifname "{passthrough_tun}" oifname != "{passthrough_tun}" masquerade
    }}
}}
table netdev {GN_TABLE} {{
    chain ingress {{
        type filter hook ingress device "{gn_interface}" priority 0; policy drop;
    }}
}}
"""


def nft_rules6(passthrough_tun: str) -> str:
    return f"""
add table ip6 {NAT6_TABLE}
delete table ip6 {NAT6_TABLE}
table ip6 {NAT6_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        iifname "{passthrough_tun}" oifname != "{passthrough_tun}" masquerade
    }}
}}
"""


async def _nft(script: str) -> None:
    result = await trio.run_process(
        ["nft", "-f", "-"],
        stdin=script.encode(),
        check=False,
        capture_stdout=True,
        capture_stderr=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nft: {result.stderr.decode().strip()}")


def _remove_nft_tables() -> None:
    import subprocess

    for family, table in (("ip", NAT_TABLE), ("netdev", GN_TABLE), ("ip6", NAT6_TABLE)):
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True, check=False)


def _forwarding_on(sysctl: Path) -> None:
    """Written only when off: a service user may not write sysctls whatever its capabilities,
    so under systemd they are set beforehand (contrib/systemd/99-ntma-adapter.conf)."""
    if sysctl.read_text().strip() != "1":
        sysctl.write_text("1\n")


async def _configure_passthrough(tun: TunDevice, link: GnLink) -> None:
    """The router address on the passthrough TUN, and the VIP pool routed to it: the
    kernel's replies to any device's ordinary traffic come back through it."""
    router = ip_text(link.router_ip)
    await run_ip("addr", "flush", "dev", tun.name)
    await run_ip("addr", "add", f"{router}/32", "dev", tun.name)
    await run_ip("link", "set", "dev", tun.name, "mtu", str(PASSTHROUGH_MTU), "up")
    await run_ip("route", "replace", str(link.pool), "dev", tun.name)
    _forwarding_on(Path("/proc/sys/net/ipv4/ip_forward"))


async def _configure_passthrough6(tun: TunDevice, link: GnLink) -> None:
    """The router's IPv6 address and the link prefix on the passthrough TUN (DNS over TCP,
    pings to the router, and the kernel's replies); with upstream, forwarding and NAT66."""
    v6 = link.v6
    assert v6 is not None
    await run_ip("-6", "addr", "replace", f"{ip6_text(v6.router)}/128", "dev", tun.name, "nodad")
    await run_ip("-6", "route", "replace", str(v6.network), "dev", tun.name)
    if v6.upstream:
        await _nft(nft_rules6(tun.name))
        _forwarding_on(Path("/proc/sys/net/ipv6/conf/all/forwarding"))


async def run_adapter(config: AdapterConfig, load_again: Load | None = None) -> None:
    """`load_again`: the config file read anew, for SIGHUP (reload.py)."""
    log = structlog.get_logger().bind(role="adapter", fqdn=config.fqdn)
    raw = RawSocket(config.gn_interface)
    leases_file = leases_path(config)
    devices = devices_from_config(config, load_leases(leases_file, log))
    link = GnLink(adapter_mac=raw.mac, devices=devices)
    passthrough = TunDevice(config.passthrough_tun, PASSTHROUGH_MTU)
    udp = UdpSocket.bind(config.listen)
    sm = make_signalling(
        fqdn=config.fqdn,
        key=config.key,
        dc_public_key=config.dc_public_key,
        dc_address=config.dc_address,
        dc_address6=config.dc_address6,
        listen=config.listen,
        exclude={config.passthrough_tun, config.gn_interface},
    )
    for name in devices.names_to_add():  # asked as soon as the adapter is registered
        sm.add_name(name, 0.0)
    pipe = NodePipeline(sm, watch_exclude=frozenset({config.passthrough_tun, config.gn_interface}))
    stamps = restore_timestamp(sm.wire.initiations, config.key_path)
    resolver = DnsResolver(
        pipe.broker,
        config.dns_upstream,
        config.ntm_suffixes,
        pipe.spans.stage("dns"),
        local=devices.vip_of_name,
    )
    parts = AdapterParts(
        raw, passthrough, resolver, link, config.mtu, partial(save_leases, leases_file)
    )
    pipe.on_name = partial(on_device_name, link, parts)
    control = open_control_socket(config.control_socket, "adapter")
    reloader = Reloader(
        config,
        load_again or no_reload(config),
        partial(_reload, resolver, devices, pipe),
        (*SUFFIXES, "devices"),
    )
    await _nft(nft_rules(config.gn_interface, config.passthrough_tun))
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def on_registered(event: Registered) -> None:
                    lease_time, mtu = config.lease_time, config.mtu
                    if not serve_gn_vip(
                        link, event.vip, event.prefix_len, lease_time=lease_time, mtu=mtu
                    ):
                        return
                    router = ip_text(link.router_ip)
                    await _configure_passthrough(passthrough, link)
                    await _serve_ipv6(link, passthrough, event, config.mtu, log)
                    await nursery.start(_serve_tcp_dns, router, resolver, pipe, devices)
                    replay_held(link, parts, config.fqdn)
                    log.info(
                        "gn_ready",
                        vip=event.vip,
                        router=router,
                        mtu=config.mtu,
                        gn_interface=config.gn_interface,
                        devices=len(config.devices),
                    )

                await start_adapter_pipeline(nursery, pipe, parts, udp, on_registered)
                await nursery.start(run_stats_logger, pipe.spans, config.log.stats_interval)
                await nursery.start(log_device_stats, devices, config.log.stats_interval)
                if control is not None:

                    def status() -> dict:
                        return node_status(sm, pipe.spans, trio.current_time(), devices)

                    await nursery.start(
                        run_control_server, control, status, pipe.spans.stage("control")
                    )
                await nursery.start(run_reload_on_sighup, reloader)
                registry = registry_for_node(sm, pipe.spans, "adapter")
                await start_metrics(nursery, config.metrics_listen, registry, pipe.spans)
                if stamps is not None:
                    nursery.start_soon(keep_saving, sm.wire.initiations, stamps, log)
                log.info(
                    "adapter_ready",
                    gn_interface=config.gn_interface,
                    mac=":".join(f"{b:02x}" for b in raw.mac),
                    listen=f"{config.listen[0]}:{config.listen[1]}",
                )
                await wait_then_deregister(signals, pipe, udp, log)
                nursery.cancel_scope.cancel()
    finally:
        log_final(pipe, log)
        _remove_nft_tables()
        if control is not None:
            control.close()
        raw.close()
        udp.close()
        passthrough.close()
        log.info("stopped")


def _reload(
    resolver: DnsResolver, devices: Devices, pipe: NodePipeline, new: AdapterConfig
) -> dict:
    """SIGHUP: the DNS suffixes, and the [devices] table: new names asked for, names no
    device holds any more given back (NAME_REMOVE)."""
    changes = reload_suffixes(resolver, new)
    added, removed = devices.reconfigure(rules_of(new))
    for name in added:
        pipe.ask_name(name)
    for name in removed:
        pipe.give_back_name(name)
    if added or removed:
        changes |= {"devices_added": added, "devices_removed": removed}
    return changes


async def _serve_ipv6(link: GnLink, tun: TunDevice, event: Registered, mtu: int, log) -> None:
    """IPv6 for the devices when the DC's pool allows it (gnlink.set_ipv6 says why not)."""
    why_not = link.set_ipv6(event.vip6, event.prefix6, mtu, has_ipv6_default_route())
    if why_not:
        log.info("gn_ipv6_off", reason=why_not)
        return
    assert link.v6 is not None
    await _configure_passthrough6(tun, link)
    v6 = link.v6
    log.info("gn_ipv6", prefix=str(v6.network), router=ip6_text(v6.router), upstream=v6.upstream)


async def _serve_tcp_dns(
    router: str,
    resolver: DnsResolver,
    pipe: NodePipeline,
    devices: Devices,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """DNS over TCP for the GN, on the router address (reached through the passthrough TUN)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((router, 53))
    sock.listen(64)
    def name_of(source: str) -> str:
        return devices.name_of_vip(ip_packed(source)) if source != "?" else ""

    await run_dns_tcp(
        trio.SocketListener(sock),
        resolver,
        pipe.spans.stage("dns"),
        name_of,
        task_status=task_status,
    )
