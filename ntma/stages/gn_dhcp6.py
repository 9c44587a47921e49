"""DHCPv6 for the devices that ask (proto/dhcp6.py: one server per device; issue 13).

SLAAC is how the devices configure themselves (gnlink6.py); a client that runs DHCPv6 too
(`dhclient -6`) gets the same address: the device's learnt IPv6 VIP, or, before it has one,
the modified EUI-64 of its MAC in the link prefix (what Linux's SLAAC picks), which then
becomes its IPv6 VIP when leased. Stateless clients get the DNS server (prefix::1). Replies
go from the adapter's link-local address to the client's, on the client's MAC. Only a
device's own frames reach its server (admitted by MAC, as for DHCPv4); the server bounds
its replies itself (a burst of 10, then 1 per second; none over 998 bytes).
"""

from __future__ import annotations

from ..observe.spans import StageStats
from ..proto.buffer import CodecError
from ..proto.devices import Device
from ..proto.dhcp6 import Declined6, Dhcp6Config, Dhcp6Server, Event, Ignored6, Leased6, Released6
from ..proto.ether import ETH_HEADER, ETH_P_IPV6, eth_header, mac_text
from ..proto.ether6 import build_udp6, parse_udp6
from ..proto.gnlink import GnLink
from ..proto.ndp import interface_id

DHCP6_CLIENT_PORT, DHCP6_SERVER_PORT = 546, 547


def answer_dhcp6(
    frames: list[bytes], link: GnLink, stats: StageStats, now: float
) -> tuple[list[bytes], list[Device], list[tuple[Device, Event]]]:
    """(reply frames, devices whose IPv6 VIP a lease just made, events to log)."""
    replies: list[bytes] = []
    learnt: list[Device] = []
    events: list[tuple[Device, Event]] = []
    v6 = link.v6
    if v6 is None:
        stats.drop("ipv6_off", len(frames))
        return replies, learnt, events
    for frame in frames:
        mac = frame[6:12]
        device = link.by_mac.get(mac) or link.devices.admit(mac)[0]
        if device is None:
            stats.drop("foreign_mac")
            continue
        server = device.dhcp6
        if server is None:
            server = device.dhcp6 = Dhcp6Server(Dhcp6Config(link.adapter_mac, (v6.router,)))
        address = device.vip6 or v6.prefix + interface_id(mac)
        server.set_address(address)
        packet = frame[ETH_HEADER:]
        try:
            _, _, payload = parse_udp6(packet)
            reply = server.handle(payload, now)
        except CodecError:
            stats.drop("malformed")
            continue
        for event in server.events():
            if isinstance(event, Leased6) and device.vip6 is None and _free(link, address):
                link.devices.learned_vip6(device, address)
                learnt.append(device)
            events.append((device, event))
        if reply is not None:
            client = packet[8:24]
            udp = build_udp6(v6.router_ll, client, DHCP6_SERVER_PORT, DHCP6_CLIENT_PORT, reply)
            replies.append(eth_header(mac, link.adapter_mac, ETH_P_IPV6) + udp)
    return replies, learnt, events


def _free(link: GnLink, address: bytes) -> bool:
    assert link.v6 is not None
    return not link.v6.reserved(address) and address not in link.devices.by_vip


def log_dhcp6_events(events: list[tuple[Device, Event]], log, stats: StageStats) -> None:
    for device, event in events:
        if isinstance(event, Leased6):
            log.info(
                "dhcp6_lease",
                device=device.fqdn,
                mac=mac_text(device.mac),
                ip=event.address,
                valid_s=event.valid,
                renewal=event.renewal,
            )
        elif isinstance(event, Released6 | Declined6):
            name = f"dhcp6_{type(event).__name__.lower().rstrip('6')}"
            log.info(name, device=device.fqdn, ip=event.address)
        elif isinstance(event, Ignored6):
            stats.drop(f"ignored: {event.reason}")

