"""Seeds for the IPv6 targets (codecs6.py): ND packets (the Linux kernel's captures and the
adapter's own RA and NAs), IPv6 frames on the GN link, DHCPv6 messages (ISC dhclient's
captures and hand-built ones). Constants shared with the IPv4 seeds come from seeds.py."""

from __future__ import annotations

from ..proto import dhcp6_codec as dhcp6
from ..proto import ndp
from ..proto.ether import ETH_P_IPV6, eth_header
from ..proto.ether6 import build_udp6
from .seeds import ADAPTER_MAC, GN_MAC, VECTORS

# --- DHCPv6 ---------------------------------------------------------------------------------

DHCP6_ADDRESS = bytes.fromhex("fd000099" + "00" * 11 + "23")  # the device's, in fd00:99::/64
DHCP6_OTHER = bytes.fromhex("fd000099" + "00" * 11 + "24")


def dhcp6_payloads() -> list[bytes]:
    """ISC dhclient -6's captured messages (and dnsmasq's answers), those again with the
    server id made the adapter's (so they pass validation), and our builder's."""
    captured = [bytes.fromhex(p.read_text()) for p in sorted((VECTORS / "dhcp6").glob("*.hex"))]
    ours, client = dhcp6.duid_ll(ADAPTER_MAC), dhcp6.duid_ll(GN_MAC)
    out = list(captured)
    for payload in captured:
        msg = dhcp6.parse_dhcp6(payload)
        if msg.server_id is not None:
            options = [(c, ours if c == dhcp6.OPT_SERVERID else v) for c, v in msg.options]
            out.append(dhcp6.build_dhcp6(msg.msg_type, msg.xid, options))
    addresses = [(dhcp6.OPT_IAADDR, dhcp6.iaaddr_value(a, 0, 0)) for a in (DHCP6_OTHER,)]
    ia_na = (dhcp6.OPT_IA_NA, dhcp6.ia_value(dhcp6.OPT_IA_NA, 1, 0, 0, addresses))
    others = [
        (dhcp6.OPT_IA_TA, dhcp6.ia_value(dhcp6.OPT_IA_TA, 2)),
        (dhcp6.OPT_IA_PD, dhcp6.ia_value(dhcp6.OPT_IA_PD, 3)),
    ]
    head = [(dhcp6.OPT_CLIENTID, client)]
    for kind, options in (
        (dhcp6.SOLICIT, [*head, ia_na, *others, (dhcp6.OPT_RAPID_COMMIT, b"")]),
        (dhcp6.REQUEST, [*head, (dhcp6.OPT_SERVERID, ours), ia_na, *others]),
        (dhcp6.RENEW, [*head, (dhcp6.OPT_SERVERID, ours), ia_na]),
        (dhcp6.REBIND, [*head, ia_na]),
        (dhcp6.CONFIRM, [*head, ia_na]),
        (dhcp6.RELEASE, [*head, (dhcp6.OPT_SERVERID, ours), ia_na]),
        (dhcp6.INFORMATION_REQUEST, [(dhcp6.OPT_ORO, b"\x00\x17")]),
    ):
        out.append(dhcp6.build_dhcp6(kind, 0x123456, options))
    return out


def dhcp6_request() -> bytes:
    """The device's REQUEST to the adapter: after it, the device holds the lease."""
    options = [
        (dhcp6.OPT_CLIENTID, dhcp6.duid_ll(GN_MAC)),
        (dhcp6.OPT_SERVERID, dhcp6.duid_ll(ADAPTER_MAC)),
        (dhcp6.OPT_IA_NA, dhcp6.ia_value(dhcp6.OPT_IA_NA, 1)),
    ]
    return dhcp6.build_dhcp6(dhcp6.REQUEST, 0x654321, options)


def ipv6_frames() -> list[bytes]:
    """IPv6 on the GN link (fd00:99::/64): ND, and the GN's data to a peer, the router's
    DNS, the Internet and a multicast group, from its SLAAC address and an unlearnt one."""
    eth = eth_header(ADAPTER_MAC, GN_MAC, ETH_P_IPV6)
    out = [eth + packet for packet in nd_packets()]
    prefix = bytes.fromhex("fd000099" + "00" * 8)
    gn6, peer6, router6 = (prefix + i.to_bytes(8, "big") for i in (0xFFFE000B, 3, 1))
    internet = bytes.fromhex("20010db8" + "00" * 11 + "20")
    mdns = bytes.fromhex("ff02" + "00" * 13 + "fb")
    for dst, port in ((peer6, 8080), (router6, 53), (internet, 80), (mdns, 5353)):
        out.append(eth + build_udp6(gn6, dst, 40000, port, b"x"))
    out.append(eth + build_udp6(prefix + b"\x12" * 8, peer6, 40000, 8080, b"x"))
    out.append(eth + bytes(40))
    return out


def nd_packets() -> list[bytes]:
    """IPv6 packets (Ethernet payloads) of Neighbor Discovery: the Linux kernel's captured
    RS, DAD NS, resolution NS and NA, and the adapter's own RA and NAs."""
    out = [bytes.fromhex(p.read_text())[14:] for p in sorted((VECTORS / "ndp").glob("*.hex"))]
    prefix = bytes.fromhex("fd000099" + "00" * 12)  # fd00:99::/64, the GN's
    gn, target, dns = (prefix[:15] + bytes([n]) for n in (0x0B, 0x01, 0x53))
    on_link = ((bytes.fromhex("fd000098" + "00" * 12), 48),)
    to_all = (ADAPTER_MAC, ndp.multicast_mac(ndp.ALL_NODES), ndp.ALL_NODES)
    ra = ndp.build_ra(
        *to_all, prefix=prefix, on_link=on_link, router_lifetime=1800, mtu=1400, rdnss=(dns,)
    )
    na = ndp.build_na(ADAPTER_MAC, GN_MAC, gn, target, solicited=True, router=True)
    dad_answer = ndp.build_na(*to_all, target, solicited=False, router=False)
    return out + [ra[14:], na[14:], dad_answer[14:]]
