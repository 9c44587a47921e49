"""The devices behind an adapter (sans-IO; docs/protocol.md 5.1, issue 12).

A device is known by its MAC and has one name of the adapter's session, so its own VIP
from the DC (NAME_ADD), its own DHCP server (one address, one client) and its own
counters. Rules:
- Which name a new MAC gets, first match wins: the [devices] table of the config; a name
  remembered for it (`leases`, kept across restarts); a name from its DHCP host name
  (option 12) or client FQDN (option 81) when the operator set `host_names` (a zone: the
  name is <label>.<zone>); the adapter's own REGISTER name for the first device not in the
  table, when `default_device` is on (one GN behind an adapter, the setup without a table).
  Otherwise the MAC is refused (counted by the caller) and nothing is kept for it.
- A name belongs to one MAC: a host name another device holds is refused (`name_taken`).
- At most `max_devices` devices; at most HELD_MAX DHCP frames held per device while its
  name waits for the DC (they are answered when the VIP comes).
- MAC and VIP are bound together: the data path (gnlink.py) passes a frame only when its
  source IP is the VIP of the device with its source MAC.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

from .buffer import CodecError
from .dhcp import DhcpConfig, DhcpServer
from .ether import ETH_P_IP, ETH_P_IPV6, eth_header, mac_text
from .fields_v2 import check_name
from .inbound import InboundFilter, parse_rule

HELD_MAX = 2
_LABEL_JUNK = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class DeviceRule:
    """A configured device (the config's DeviceConfig, as this layer needs it)."""

    mac: bytes
    fqdn: str
    inbound: tuple[str, ...] | None = None


@dataclass(eq=False, slots=True)
class Device:
    mac: bytes
    fqdn: str
    source: str  # table | lease | host_name | default
    inbound: InboundFilter | None = None
    vip: bytes | None = None  # packed IPv4, once the DC gave the name its VIP
    vip6: bytes | None = None  # packed IPv6: the address it configured (gnlink6.py)
    dhcp: DhcpServer | None = None
    dhcp6: object | None = None  # its dhcp6.Dhcp6Server, made when it first asks
    header: bytes = b""  # the Ethernet header of frames to it
    header6: bytes = b""  # the same for IPv6 frames
    held: list[bytes] = field(default_factory=list)  # DHCP frames waiting for the VIP
    refused: bool = False  # the DC refused its name
    packets_out: int = 0  # from the device (classified)
    bytes_out: int = 0
    packets_in: int = 0  # to the device (injected)
    bytes_in: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, object]:
        return {
            "device": self.fqdn,
            "mac": mac_text(self.mac),
            "vip": str(ipaddress.IPv4Address(self.vip)) if self.vip else None,
            "vip6": str(ipaddress.IPv6Address(self.vip6)) if self.vip6 else None,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "drops": dict(self.drops),
        }


def _filter(rules: tuple[str, ...] | None) -> InboundFilter | None:
    return None if rules is None else InboundFilter(tuple(parse_rule(r) for r in rules))


def host_label(text: str) -> str | None:
    """A DHCP host name as one DNS label (lower case, a-z 0-9 -), or None if nothing is left."""
    label = _LABEL_JUNK.sub("-", text.strip().lower().split(".")[0]).strip("-")[:63]
    return label.strip("-") or None


def client_fqdn(option81: bytes) -> str | None:
    """RFC 4702 option 81's name (ASCII, or DNS wire format when the E flag is set)."""
    if len(option81) < 4:
        return None
    flags, data = option81[0], option81[3:]
    if flags & 0x04:
        labels, i = [], 0
        while i < len(data) and data[i]:
            size = data[i]
            labels.append(data[i + 1 : i + 1 + size].decode("ascii", "replace"))
            i += 1 + size
        text = ".".join(labels)
    else:
        text = data.decode("ascii", "replace")
    return text.strip(".").lower() or None


class Devices:
    def __init__(
        self,
        own_name: str = "",
        configured: tuple[DeviceRule, ...] = (),
        *,
        default_device: bool = True,
        host_names: str | None = None,
        inbound: tuple[str, ...] | None = None,
        max_devices: int = 64,
        leases: dict[bytes, str] | None = None,
    ) -> None:
        self.own_name = own_name
        self.by_mac: dict[bytes, Device] = {}
        self.by_vip: dict[bytes, Device] = {}  # packed IPv4 and IPv6 VIPs
        self.by_name: dict[str, Device] = {}
        self.vips: dict[str, bytes] = {}  # name -> packed VIP, as the DC gave them
        self.adapter_mac = b"\x00" * 6
        self.dhcp_config: DhcpConfig | None = None
        self.leases: dict[bytes, str] = dict(leases or {})  # mac -> name, kept by the caller
        self.leases_changed = False
        self._table = {rule.mac: rule for rule in configured}
        self._default_device = default_device
        self._host_names = host_names
        self._inbound = inbound
        self._max = max_devices

    # --- names --------------------------------------------------------------------------

    def names_to_add(self) -> list[str]:
        """Names to ask the DC for at start: the table's and the remembered ones."""
        names = [rule.fqdn for rule in self._table.values()]
        names += [n for mac, n in self.leases.items() if mac not in self._table]
        return [n for n in dict.fromkeys(names) if n != self.own_name]

    def reconfigure(self, configured: tuple[DeviceRule, ...]) -> tuple[list[str], list[str]]:
        """A new [devices] table (SIGHUP): returns (names to ask the DC for, names to give
        back). A device whose rule is gone or renamed is forgotten at once (its packets
        then drop as an unknown device's) and is named anew when it shows itself again."""
        old, self._table = self._table, {rule.mac: rule for rule in configured}
        added = [r.fqdn for m, r in self._table.items() if old.get(m) != r]
        removed = [r.fqdn for m, r in old.items() if self._table.get(m) != r]
        for mac, rule in old.items():
            device = self.by_mac.get(mac)
            if device is not None and self._table.get(mac) != rule:
                self._forget(device)
        return [n for n in added if n != self.own_name], [
            n for n in removed if n != self.own_name and n not in self._names_in_use(b"")
        ]

    def _forget(self, device: Device) -> None:
        del self.by_mac[device.mac]
        self.by_name.pop(device.fqdn, None)
        for vip in (device.vip, device.vip6):
            if vip is not None and self.by_vip.get(vip) is device:
                del self.by_vip[vip]
        self.vips.pop(device.fqdn, None)
        if self.leases.pop(device.mac, None) is not None:
            self.leases_changed = True

    def _name_for(
        self, mac: bytes, host_name: str | None, fqdn: str | None
    ) -> tuple[str | None, str]:
        """(name, source) for a new MAC, or (None, why not)."""
        rule = self._table.get(mac)
        if rule is not None:
            return rule.fqdn, "table"
        remembered = self.leases.get(mac)
        if remembered is not None and remembered not in self._names_in_use(mac):
            return remembered, "lease"
        wanted = self._host_name(host_name, fqdn)
        if wanted:
            if wanted in self._names_in_use(mac):
                return None, "name_taken"
            return wanted, "host_name"
        if self._default_device and self.own_name not in self.by_name:
            return self.own_name, "default"
        return None, "unknown_device"

    def _host_name(self, host_name: str | None, fqdn: str | None) -> str | None:
        zone = self._host_names
        if zone is None:
            return None
        candidates = []
        if fqdn and fqdn.endswith("." + zone):
            candidates.append(fqdn)
        label = host_label(host_name or "")
        if label:
            candidates.append(f"{label}.{zone}")
        for name in candidates:
            try:
                check_name(name)
            except CodecError:
                continue
            return name
        return None

    def _names_in_use(self, mac: bytes) -> set[str]:
        """Names another MAC holds or is configured with."""
        taken = {rule.fqdn for m, rule in self._table.items() if m != mac}
        return taken | {d.fqdn for m, d in self.by_mac.items() if m != mac}

    # --- devices ------------------------------------------------------------------------

    def admit(
        self, mac: bytes, host_name: str | None = None, fqdn: str | None = None
    ) -> tuple[Device | None, str]:
        """The device with this MAC, made now if it may have a name; (None, why) if not.
        A new device without a VIP yet needs its name asked for (source tells why)."""
        device = self.by_mac.get(mac)
        if device is not None:
            return device, ""
        if len(self.by_mac) >= self._max:
            return None, "too_many_devices"
        name, source = self._name_for(mac, host_name, fqdn)
        if name is None:
            return None, source
        rule = self._table.get(mac)
        device = Device(mac, name, source, _filter(rule.inbound if rule else self._inbound))
        device.header = eth_header(mac, self.adapter_mac, ETH_P_IP)
        device.header6 = eth_header(mac, self.adapter_mac, ETH_P_IPV6)
        self.by_mac[mac] = device
        self.by_name[name] = device
        if source == "host_name" and self.leases.get(mac) != name:
            self.leases[mac] = name
            self.leases_changed = True
        vip = self.vips.get(name)
        if vip is not None:
            self._ready(device, vip)
        return device, source

    def claim_static(self, mac: bytes, src_ip: bytes) -> Device | None:
        """A frame from an unknown MAC: a configured device, or the default device using
        the adapter's own VIP without DHCP (a static address), shows itself."""
        if mac in self._table:
            return self.admit(mac)[0]
        own = self.vips.get(self.own_name)
        if own is not None and src_ip == own and self._default_device:
            device, _ = self.admit(mac)
            return device if device is not None and device.source == "default" else None
        return None

    def named(self, fqdn: str, vip: str) -> Device | None:
        """The DC gave one of our names its VIP: the device holding it (if it showed up
        already) is ready; its held DHCP frames are the caller's to answer now."""
        packed = ipaddress.IPv4Address(vip).packed
        old = self.vips.get(fqdn)
        self.vips[fqdn] = packed
        device = self.by_name.get(fqdn)
        if device is None:
            return None
        if old is not None and old != packed and self.by_vip.get(old) is device:
            del self.by_vip[old]
        self._ready(device, packed)
        return device

    def learned_vip6(self, device: Device, vip6: bytes) -> None:
        """The device configured this IPv6 address (gnlink6.py checked it is free)."""
        if device.vip6 is not None and self.by_vip.get(device.vip6) is device:
            del self.by_vip[device.vip6]
        device.vip6 = vip6
        self.by_vip[vip6] = device

    def refused(self, fqdn: str) -> Device | None:
        device = self.by_name.get(fqdn)
        if device is not None:
            device.refused = True
            device.held.clear()
        return device

    def set_dhcp(self, config: DhcpConfig) -> None:
        """The pool is known (the adapter registered): every ready device serves DHCP."""
        self.dhcp_config = config
        for device in self.by_mac.values():
            if device.vip is not None:
                self._ready(device, device.vip)

    def _ready(self, device: Device, vip: bytes) -> None:
        device.vip = vip
        device.refused = False
        self.by_vip[vip] = device
        if self.dhcp_config is None:
            return
        if device.dhcp is None or device.dhcp.config != self.dhcp_config:
            device.dhcp = DhcpServer(self.dhcp_config)
        device.dhcp.set_address(str(ipaddress.IPv4Address(vip)))

    def hold(self, device: Device, frame: bytes) -> bool:
        """Keep a DHCP frame until the device's VIP comes; False if it held enough."""
        if len(device.held) >= HELD_MAX:
            device.held.pop(0)
            device.held.append(frame)
            return False
        device.held.append(frame)
        return True

    def take_held(self, device: Device) -> list[bytes]:
        held, device.held = device.held, []
        return held

    def name_of_vip(self, vip: bytes) -> str:
        device = self.by_vip.get(vip)
        return device.fqdn if device is not None else ""

    def vip_of_name(self, fqdn: str) -> bytes | None:
        return self.vips.get(fqdn)
