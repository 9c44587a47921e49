"""Packets and frames for tests and benchmarks, built with the project's own codecs.

The defaults describe one GN link: the adapter's and the GN's MACs, the GN's VIP, the
router (the pool's first address) and a peer's VIP. `devices_link` is a link with many
devices, each known by its MAC (`device_mac`) with its own name and VIP (`device_vip`).
"""

from __future__ import annotations

import struct

from ..proto.devices import DeviceRule, Devices
from ..proto.dhcp_codec import OPT_PARAM_REQUEST, OPT_REQUESTED_IP, OPT_SERVER_ID, build_dhcp
from ..proto.ether import (
    BROADCAST_MAC,
    ETH_P_ARP,
    ETH_P_IP,
    PROTO_TCP,
    build_ipv4,
    build_udp,
    checksum,
    eth_header,
    ip_packed,
)
from ..proto.gnlink import GnLink
from ..stages.gn_services import serve_gn_vip

BATCH = 64
ADAPTER_MAC = bytes.fromhex("02aa00000001")
GN_MAC = bytes.fromhex("02bb00000002")
GN_VIP, ROUTER, PEER_VIP = "10.99.0.3", "10.99.0.1", "10.99.0.2"
DHCP_PARAMS = bytes([1, 3, 6, 15, 26, 28, 51, 54])  # what dhclient asks for


def gn_link() -> GnLink:
    """A registered link whose GN has shown its MAC."""
    link = GnLink(ADAPTER_MAC)
    link.set_vip(GN_VIP, 16)
    link.devices.admit(GN_MAC)
    return link


def device_mac(i: int) -> bytes:
    """Device i's MAC (i from 1), apart from GN_MAC."""
    return bytes.fromhex("02cc0000") + i.to_bytes(2, "big")


def device_vip(i: int) -> str:
    """Device i's VIP (1 <= i <= 254), in the pool, apart from GN_VIP and PEER_VIP."""
    return f"10.99.1.{i}"


def devices_link(count: int, **dhcp: int) -> GnLink:
    """A registered link with `count` devices from the [devices] table, each with its VIP
    from the DC and already seen (its MAC admitted). With `dhcp` (lease_time, mtu) every
    device's DHCP server is ready too, as registration leaves it."""
    rules = tuple(DeviceRule(device_mac(i), f"dev{i}.ntm.example") for i in range(1, count + 1))
    link = GnLink(ADAPTER_MAC, Devices("gn.ntm.example", rules, max_devices=count))
    for i, rule in enumerate(rules, 1):
        link.devices.named(rule.fqdn, device_vip(i))
    if dhcp:
        serve_gn_vip(link, GN_VIP, 16, lease_time=dhcp["lease_time"], mtu=dhcp["mtu"])
    else:
        link.set_vip(GN_VIP, 16)
    for rule in rules:
        link.devices.admit(rule.mac)
    return link


def udp_packet(src: str, dst: str, payload_len: int) -> bytes:
    return build_udp(ip_packed(src), ip_packed(dst), 40000, 5201, bytes(payload_len))


def gn_frame(packet: bytes, src_mac: bytes = GN_MAC, dst_mac: bytes = ADAPTER_MAC) -> bytes:
    """An IPv4 packet as the GN puts it on the link."""
    return eth_header(dst_mac, src_mac, ETH_P_IP) + packet


def data_frames(payload_len: int = 1372) -> list[bytes]:
    """A batch of GN frames to a peer VIP (1400-byte IPv4 packets by default)."""
    return [gn_frame(udp_packet(GN_VIP, PEER_VIP, payload_len))] * BATCH


def arp_request_frame(
    target: str = PEER_VIP, sender_ip: str = GN_VIP, sender_mac: bytes = GN_MAC
) -> bytes:
    body = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        ETH_P_IP,
        6,
        4,
        1,
        sender_mac,
        ip_packed(sender_ip),
        bytes(6),
        ip_packed(target),
    )
    return eth_header(BROADCAST_MAC, sender_mac, ETH_P_ARP) + body


def dhcp_frame(message_type: int, xid: int, mac: bytes = GN_MAC, options=()) -> bytes:
    """A client's DHCP message, broadcast from 0.0.0.0:68 as a client in INIT sends it."""
    payload = build_dhcp(
        message_type=message_type,
        xid=xid,
        chaddr=mac,
        options=[(OPT_PARAM_REQUEST, DHCP_PARAMS), *options],
    )
    packet = build_udp(ip_packed("0.0.0.0"), ip_packed("255.255.255.255"), 68, 67, payload)
    return eth_header(BROADCAST_MAC, mac, ETH_P_IP) + packet


def dhcp_request_frame(xid: int, vip: str, server: str, mac: bytes = GN_MAC) -> bytes:
    """REQUEST in SELECTING: the offered address and the server chosen."""
    options = [(OPT_REQUESTED_IP, ip_packed(vip)), (OPT_SERVER_ID, ip_packed(server))]
    return dhcp_frame(3, xid, mac, options)


def tcp_syn(src: str, dst: str, mss: int) -> bytes:
    """A TCP SYN with an MSS option, checksums filled in."""
    options = struct.pack("!BBH", 2, 4, mss) + b"\x01\x01\x04\x02"  # MSS, NOP NOP SACK-OK
    header = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, (5 + 2) << 4, 0x02, 64240, 0, 0)
    segment = header + options
    pseudo = ip_packed(src) + ip_packed(dst) + struct.pack("!BBH", 0, PROTO_TCP, len(segment))
    csum = checksum(pseudo + segment)
    segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
    return build_ipv4(ip_packed(src), ip_packed(dst), PROTO_TCP, segment)
