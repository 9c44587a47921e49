"""`ntma lab up|down|status|move|restart|nat-reset`: an NTMobile test lab built from Linux
network namespaces.

Topology (every namespace is named ``ntma-*``; nothing is created in the root namespace)::

    ntma-inet   bridge br0, the "Internet" 198.51.100.0/24, one veth port per attached host;
                with --block-direct, an nftables bridge table there drops UDP between any two
                NTM ends' public addresses (so hole punching fails and the relay must carry it)
    ntma-dc     eth0 198.51.100.10   DC daemon (signalling :7400, NAT-type probe :7401,
                                     firewall probe :7402)
    ntma-rs     eth0 198.51.100.60   Relay Server daemon (:7500)
    ntma-web    eth0 198.51.100.20   http.server :80 + dnsmasq :53 (upstream resolver)
    ntma-mn     eth0 198.51.100.40, or 10.10.1.2 behind ntma-mn-nat (wan0 .41, lan0 10.10.1.1)
    ntma-cn     eth0 198.51.100.30, or 10.10.2.2 behind ntma-cn-nat (wan0 .31, lan0 10.10.2.1),
                or (--cn-nat same) 10.10.1.3 behind mn's NAT: ntma-mn-nat's lan0 is then a
                bridge with one port for mn and one for cn
    ntma-adapter  the NTMobile adapter (NTMA) for the general node, registered as gn.ntm.example:
                gn0 (veth peer of ntma-gn eth0, no IPv4 address) and eth0 10.10.3.2 behind
                ntma-adapter-nat (wan0 .51, lan0 10.10.3.1), or eth0 198.51.100.50 directly
    ntma-gn     the general node (GN): eth0 (MAC 02:00:00:00:0a:01) up, no address, no routes,
                no ntma code; dhclient there writes /etc/netns/ntma-gn/resolv.conf, never the
                machine's resolv.conf
    ntma-gn2 .. ntma-gnN  (--gns N, up to 8) further GNs, eth0 MAC 02:00:00:00:0a:0N, named
                gnN.ntm.example; then ntma-gnsw is the GN link: a switch (bridge sw0, no
                IPv6) with a port for the adapter's gn0 and one for each GN's eth0
    ntma-adapter2  (--adapters 2) a second adapter, registered as gnb.ntm.example: eth0
                10.10.4.2 behind ntma-adapter2-nat (wan0 .71, lan0 10.10.4.1), or 198.51.100.70
                directly, or (--adapter2-nat same) 10.10.3.3 behind the adapter's NAT; its GN
                ntma-gnb (eth0 MAC 02:00:00:00:0b:01) on its gn0

`lab move` puts mn, cn or the adapter on another network while its daemon runs on; each
host has a second public address and a second NAT slot for it (mn .42, or 10.10.11.2 behind
ntma-mn-nat2 with wan0 .43; cn .32, or 10.10.12.2 behind ntma-cn-nat2, wan0 .33; the adapter
.52, or 10.10.13.2 behind ntma-adapter-nat2, wan0 .53; adapter2 .72, or 10.10.14.2 behind
ntma-adapter2-nat2, wan0 .73), and a move alternates slots per kind
(public; behind a NAT), so it always lands on a new public address.

As in the source paper: GN -- NTMA -- NAT -- Internet (DC, RS, web, cn). NAT routers are
`cone` (nftables masquerade: endpoint-independent mapping) or `symmetric` (masquerade
fully-random: a new port per destination); either drops unsolicited UDP arriving on its WAN
side, as home routers do (see `nat_ruleset`).

One module per concern, each importing only those above it in this list:

    settings    addresses, ports, names, the NTM hosts (`NodeDef` rows), errors
    topology    namespaces and links as data, built by `build_topology` (pure)
    netns       run / ns_run / ns_exec / ip, live views, applying a topology (veth, nft)
    state       the typed lab state and its versioned JSON form (state.json); planning
    keys        one X25519 key file per daemon
    configs     the daemons' configs as `ntma.config` dataclasses, written by its writer
    daemons     start / stop / alive / wait for a log event
    lifecycle   lab_up, lab_down
    mobility    lab_move, lab_restart, lab_nat_reset (a running lab changed under its daemons)
    status      lab_status (the `--json` form), format_status
    demo        `ntma lab demo`
    cli         `ntma lab ...` (argparse, main)

Every GN's name is admitted at the DC with its adapter's key, and each adapter's config
lists its GNs in [devices] (MAC -> name). Where coming features go: a third adapter is a
row in `settings` (ADAPTER_DEFS); an IPv6-only network is `Iface`/`Namespace` rows with v6
cidrs and the NAT rules in `netns` for `ip6`.

The names below are the lab's public API: `ntma.bench` and the tests use these, never a
submodule (the lab's own tests excepted, which also test its parts).
"""

from __future__ import annotations

from ..observe.logread import LogEvent, events_named, log_events, read_events
from .cli import build_parser, main
from .daemons import (
    daemon_alive,
    exit_report,
    log_size,
    pid_alive,
    start_daemon,
    stop_daemon,
    wait_listening,
    wait_log_events,
)
from .keys import generate_key, write_private
from .lifecycle import lab_down, lab_up
from .mobility import RESTARTABLE, lab_move, lab_nat_reset, lab_restart
from .netns import (
    block_direct_ruleset,
    ip,
    live_namespaces,
    nat_ruleset,
    ns_addresses,
    ns_exec,
    ns_run,
    root_link_names,
    run,
)
from .settings import (
    ADAPTER2_DEF,
    ADAPTER_DEF,
    ADAPTER_DEFS,
    ADAPTER_GN_IFACE,
    BLOCK_DIRECT_TABLE,
    DC_IP,
    DC_PORT,
    DEFAULT_RUN_DIR,
    ETC_NETNS,
    GN_IFACE,
    GN_NS,
    GN_RESOLV_CONF,
    MAX_GNS,
    MOVE_TARGETS,
    NODE_DEFS,
    RS_IP,
    STATS_INTERVAL,
    VIP6_POOL,
    WEB_IP,
    ZONE,
    GnDef,
    LabError,
    LabNotReady,
    LabRefused,
    NodeDef,
    gn_defs,
)
from .state import (
    AdapterState,
    DaemonSpec,
    GnState,
    HostState,
    KeyRecord,
    LabState,
    load_state,
    new_state,
    save_state,
)
from .status import FALLBACK_FIELDS, ROUTE_FIELDS, format_status, lab_events, lab_status
from .topology import (
    Topology,
    build_topology,
    lab_gns,
    move_topology,
    ntm_public_addresses,
    resolve_nat_modes,
)
from .traffic import gap_after

__all__ = [
    "ADAPTER2_DEF",
    "ADAPTER_DEF",
    "ADAPTER_DEFS",
    "ADAPTER_GN_IFACE",
    "BLOCK_DIRECT_TABLE",
    "DC_IP",
    "DC_PORT",
    "DEFAULT_RUN_DIR",
    "ETC_NETNS",
    "FALLBACK_FIELDS",
    "GN_IFACE",
    "GN_NS",
    "GN_RESOLV_CONF",
    "MAX_GNS",
    "MOVE_TARGETS",
    "NODE_DEFS",
    "RESTARTABLE",
    "ROUTE_FIELDS",
    "RS_IP",
    "STATS_INTERVAL",
    "VIP6_POOL",
    "WEB_IP",
    "ZONE",
    "AdapterState",
    "DaemonSpec",
    "GnDef",
    "GnState",
    "HostState",
    "KeyRecord",
    "LabError",
    "LabNotReady",
    "LabRefused",
    "LabState",
    "LogEvent",
    "NodeDef",
    "Topology",
    "block_direct_ruleset",
    "build_parser",
    "build_topology",
    "daemon_alive",
    "events_named",
    "exit_report",
    "format_status",
    "gap_after",
    "generate_key",
    "gn_defs",
    "ip",
    "lab_down",
    "lab_events",
    "lab_gns",
    "lab_move",
    "lab_nat_reset",
    "lab_restart",
    "lab_status",
    "lab_up",
    "live_namespaces",
    "load_state",
    "log_events",
    "log_size",
    "main",
    "move_topology",
    "nat_ruleset",
    "new_state",
    "ns_addresses",
    "ns_exec",
    "ns_run",
    "ntm_public_addresses",
    "pid_alive",
    "read_events",
    "resolve_nat_modes",
    "root_link_names",
    "run",
    "save_state",
    "start_daemon",
    "stop_daemon",
    "wait_listening",
    "wait_log_events",
    "write_private",
]
