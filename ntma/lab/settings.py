"""The lab's fixed facts: addresses, ports, names, the hosts that run NTMobile, and errors.

Everything here is data; `topology.py` turns the host rows into namespaces and links. A
further NTM host (a third node, a third adapter) is one more `NodeDef` row; the general
nodes behind an adapter are `GnDef`s derived from its row (`gn_defs`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

NS_PREFIX = "ntma-"
INET_NS = "ntma-inet"
BRIDGE = "br0"
INET_PREFIXLEN = 24
DC_NS = "ntma-dc"
DC_IP = "198.51.100.10"
WEB_NS = "ntma-web"
WEB_IP = "198.51.100.20"
RS_IP = "198.51.100.60"
RS_NS = "ntma-rs"
RS_KEY = "rs"  # the Relay Server's key name (keys/rs.key)
DC_PORT = 7400
DC_PROBE_PORT = 7401  # a second DC port: nodes compare mappings to learn their NAT type
DC_FILTER_PORT = 7402  # a third, sending only: tells a stateful firewall from none
RS_PORT = 7500
RS_IDLE_TIMEOUT = 60
NODE_PORT = 7401
ZONE = "ntm.example"
VIP_POOL = "10.99.0.0/16"
VIP6_POOL = "fd00:99::/64"  # IPv6 VIPs: the IPv4 VIP's offset in this ULA prefix, or the
# address a GN configured in it by SLAAC (a /64: the link prefix the adapters advertise)
DEFAULT_RUN_DIR = Path("/run/ntma-lab")
ETC_NETNS = Path("/etc/netns")
STATE_FILE = "state.json"
STATE_VERSION = 2  # 2: several adapters ("adapters") and general nodes ("gns")
REQUIRED_TOOLS = ("ip", "nft", "dnsmasq", "ethtool")
CONNTRACK = "conntrack"  # `lab nat-reset` (Debian's conntrack package)

#: NAT type -> nftables statement used on the NAT router's WAN interface.
NAT_RULES: dict[str, str] = {
    "cone": "masquerade",
    "symmetric": "masquerade fully-random",
}
NAT_MODES = ("none", *NAT_RULES)
#: `lab move --to` choice -> the NAT mode the host then has ("public": on the Internet).
MOVE_TARGETS: dict[str, str] = {"public": "none", "cone": "cone", "symmetric": "symmetric"}
#: A host's networks of one kind (public, or behind a NAT of its own): slot 1 at `lab up`,
#: and each move alternates, so a move always lands on a new public address.
SLOTS = (1, 2)
#: A node whose NAT mode is "same" sits behind another node's NAT (NodeDef.same_nat_as).
SAME_NAT = "same"
CN_NAT_MODES = (*NAT_MODES, SAME_NAT)
#: nftables table (bridge family, in ntma-inet) made by --block-direct.
BLOCK_DIRECT_TABLE = "ntma_block_direct"
NAT_LAN = "lan0"  # a NAT router's LAN side: a veth, or a bridge when nodes share the NAT

GN_NS = "ntma-gn"
GN_IFACE = "eth0"  # the general node's only interface
ADAPTER_GN_IFACE = "gn0"  # the adapter's side of the GN link
#: `lab up --gns N`: how many general nodes the first adapter may have on its link.
MAX_GNS = 8
#: `lab up --adapters N`: the adapters a lab may have (rows of ADAPTER_DEFS).
ADAPTER_COUNTS = (1, 2)
#: With several GNs an adapter's link is a switch: this bridge in its own namespace.
GN_SWITCH_BRIDGE = "sw0"
#: The DHCP client `lab up --dhcp` runs in a GN, by GN label (dhclient where not listed):
#: two clients on the link, as a real one has.
GN_DHCP_CLIENTS = {"gn2": "udhcpc"}
DHCP_CLIENT_DEFAULT = "dhclient"
PASSTHROUGH_TUN = "ntmpt0"
ADAPTER_LEASE_TIME = 600
#: /etc/netns/ntma-gn/resolv.conf before anything runs in ntma-gn (`ip netns exec` bind-mounts
#: it over /etc/resolv.conf, so dhclient-script writes this file, not the machine's).
GN_RESOLV_CONF = "# written by dhclient in the ntma lab\n"

TUNNEL_MTU = 1400
NODE_TUN = "ntm0"
LOG_LEVEL = "info"
STATS_INTERVAL = 2  # seconds between the daemons' stats lines (short: tests wait for them)
DC_KEEPALIVE_INTERVAL = 5
DC_KEEPALIVE_MISSES = 3

STOP_TIMEOUT_S = 5.0
LISTEN_TIMEOUT_S = 10.0
POLL_S = 0.05


class LabError(RuntimeError):
    """Building or tearing down the lab failed (message is one line)."""


class LabRefused(LabError):
    """A request the lab cannot carry out as asked (unknown name, no such NAT, a tool
    missing); refused before anything was touched (exit status 2 in the CLI)."""


class LabNotReady(LabError):
    """A daemon did not report readiness in time; the lab is left up for inspection."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class Slot:
    """A second network a host can move to: its public address there, or its NAT router's
    wan0 address and private /24 (first three octets) there."""

    direct_ip: str
    wan_ip: str
    lan_net: str


@dataclass(frozen=True)
class NodeDef:
    """An NTM host (node or adapter) and where it attaches (directly or behind its own NAT).

    The address fields are the host's slot-1 networks (where `lab up` puts it); `slot2` holds
    the networks `lab move` alternates to; `at_slot(2)` is the host as seen from there."""

    name: str  # "mn"
    direct_ip: str  # eth0 address on the Internet segment when nat == "none"
    wan_ip: str  # the NAT router's wan0 address
    lan_net: str  # first three octets of the private /24: router .1, node .2
    default_nat: str
    port: int = NODE_PORT
    role: str = "node"  # node | adapter
    label: str | None = None  # DNS label registered with the DC, when not `name`
    same_nat_as: str | None = None  # nat "same": behind this node's NAT router...
    same_nat_host: int = 3  # ...at <its lan_net>.<same_nat_host>
    slot2: Slot | None = None
    slot: int = 1  # which slot the address fields above are
    gn_mac_base: str | None = None  # adapters: its GNs' MACs are <base>:01, <base>:02, ...

    @property
    def ns(self) -> str:
        return NS_PREFIX + self.name

    @property
    def nat_ns(self) -> str:
        """Its NAT router's namespace on this slot (slot 2's has a name of its own: a move
        from one NAT to the other never rebuilds the router it is leaving)."""
        return f"{NS_PREFIX}{self.name}-nat" + ("" if self.slot == 1 else str(self.slot))

    def at_slot(self, slot: int) -> NodeDef:
        if slot == self.slot:
            return self
        if slot != 2 or self.slot2 is None:
            raise LabError(f"{self.name} has no network slot {slot} (choose {SLOTS})")
        s = self.slot2
        return replace(
            self, direct_ip=s.direct_ip, wan_ip=s.wan_ip, lan_net=s.lan_net, slot2=None, slot=2
        )

    @property
    def fqdn(self) -> str:
        return f"{self.label or self.name}.{ZONE}"


NODE_DEFS: tuple[NodeDef, ...] = (
    NodeDef(
        "mn",
        "198.51.100.40",
        "198.51.100.41",
        "10.10.1",
        default_nat="cone",
        slot2=Slot("198.51.100.42", "198.51.100.43", "10.10.11"),
    ),
    NodeDef(
        "cn",
        "198.51.100.30",
        "198.51.100.31",
        "10.10.2",
        default_nat="none",
        same_nat_as="mn",
        slot2=Slot("198.51.100.32", "198.51.100.33", "10.10.12"),
    ),
)
#: The adapter registers the general node behind it as gn.ntm.example (the first device;
#: `--gns N` adds gn2 ... gnN, each with a name of its own).
ADAPTER_DEF = NodeDef(
    "adapter",
    "198.51.100.50",
    "198.51.100.51",
    "10.10.3",
    "cone",
    role="adapter",
    label="gn",
    slot2=Slot("198.51.100.52", "198.51.100.53", "10.10.13"),
    gn_mac_base="02:00:00:00:0a",
)
#: `--adapters 2`: a second adapter with one GN, gnb.ntm.example; "same" puts it behind the
#: first adapter's NAT router (at 10.10.3.3).
ADAPTER2_DEF = NodeDef(
    "adapter2",
    "198.51.100.70",
    "198.51.100.71",
    "10.10.4",
    "cone",
    role="adapter",
    label="gnb",
    same_nat_as="adapter",
    slot2=Slot("198.51.100.72", "198.51.100.73", "10.10.14"),
    gn_mac_base="02:00:00:00:0b",
)
ADAPTER_DEFS: tuple[NodeDef, ...] = (ADAPTER_DEF, ADAPTER2_DEF)
#: Every NTM end the lab knows, by name: the nodes, then the adapters (a lab has the first
#: `--adapters` of them: `lab_defs`).
NTM_DEFS: dict[str, NodeDef] = {d.name: d for d in (*NODE_DEFS, *ADAPTER_DEFS)}


def lab_defs(adapters: int = 1) -> dict[str, NodeDef]:
    """The NTM ends of a lab with `adapters` adapters, by name (nodes first)."""
    return {d.name: d for d in (*NODE_DEFS, *ADAPTER_DEFS[:adapters])}


@dataclass(frozen=True)
class GnDef:
    """A general node: label "gn2" is namespace ntma-gn2 and name gn2.ntm.example."""

    label: str
    mac: str  # its eth0's, fixed (the adapter's [devices] table is keyed by it)
    adapter: str  # the adapter whose link it is on

    @property
    def ns(self) -> str:
        return NS_PREFIX + self.label

    @property
    def fqdn(self) -> str:
        return f"{self.label}.{ZONE}"

    @property
    def dhcp_client(self) -> str:
        return GN_DHCP_CLIENTS.get(self.label, DHCP_CLIENT_DEFAULT)


def gn_defs(adapter: NodeDef, count: int = 1) -> tuple[GnDef, ...]:
    """The `count` GNs on `adapter`'s link: the first is named like the adapter's label
    (gn, gnb), the others get a number (gn2, gn3...); MACs <gn_mac_base>:01, :02, ..."""
    if adapter.gn_mac_base is None or adapter.label is None:
        raise LabError(f"{adapter.name} is not an adapter")
    return tuple(
        GnDef(
            adapter.label + (str(i) if i > 1 else ""),
            f"{adapter.gn_mac_base}:{i:02x}",
            adapter.name,
        )
        for i in range(1, count + 1)
    )
