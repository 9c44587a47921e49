"""IPv6 VIPs (docs/protocol.md 8; issue 13): each name's IPv6 VIP is derived from its IPv4
VIP, the same offset into the DC's IPv6 pool (a ULA prefix in its config) as into the IPv4
pool. So it is kept across restarts exactly as the IPv4 VIP is (the store keeps that one),
needs no column and no allocation of its own, and a DC without an IPv6 pool hands out none
(VIP6_NONE).

A device behind an adapter configures its own address by SLAAC in the pool's first /64 (the
link prefix every adapter advertises, 5.1): the adapter reports it (NAME_ADD `vip6`) and it
replaces the derived one for that name (`chosen`, kept by the store). A chosen address must
lie in the link prefix, outside the derived range (so it can never be another name's
derived VIP) and be no other name's choice."""

from __future__ import annotations

import ipaddress

from ..proto.fields_v2 import VIP6_NONE

LINK_PREFIX_LEN = 64  # SLAAC on Ethernet needs a /64 (RFC 4862 5.5.3, RFC 2464 4)


class Vip6Plan:
    def __init__(
        self, pool4: ipaddress.IPv4Network, pool6: ipaddress.IPv6Network | None = None
    ) -> None:
        if pool6 is not None and pool6.num_addresses < pool4.num_addresses:
            wider = 128 - (32 - pool4.prefixlen)
            raise ValueError(f"{pool6} is smaller than {pool4}: use /{wider} or wider")
        self.pool4, self.pool6 = pool4, pool6
        self.prefix6 = pool6.prefixlen if pool6 is not None else 0
        self.chosen: dict[str, str] = {}  # IPv4 VIP -> the IPv6 VIP its device chose
        self._owner: dict[str, str] = {}  # chosen IPv6 VIP -> IPv4 VIP
        self.link = self._link_prefix()

    def _link_prefix(self) -> ipaddress.IPv6Network | None:
        """The pool's first /64, where devices pick addresses; None for a longer pool."""
        if self.pool6 is None or self.pool6.prefixlen > LINK_PREFIX_LEN:
            return None
        return ipaddress.IPv6Network((self.pool6.network_address, LINK_PREFIX_LEN))

    def of(self, vip4: str) -> str:
        """The IPv6 VIP that goes with `vip4` (VIP6_NONE without an IPv6 pool)."""
        if self.pool6 is None:
            return VIP6_NONE
        chosen = self.chosen.get(vip4)
        if chosen is not None:
            return chosen
        offset = int(ipaddress.IPv4Address(vip4)) - int(self.pool4.network_address)
        return str(self.pool6.network_address + offset)

    def router(self) -> str:
        """The pool's first address after the network's, as the IPv4 pool's router."""
        return VIP6_NONE if self.pool6 is None else str(self.pool6.network_address + 1)

    def refusal(self, vip4: str, vip6: str) -> str:
        """Why `vip6` cannot be the IPv6 VIP of the name holding `vip4` ("" if it can)."""
        if self.link is None:
            return "no /64 link prefix in the IPv6 pool"
        try:
            address = ipaddress.IPv6Address(vip6)
        except ValueError:
            return "not an IPv6 address"
        if address not in self.link:
            return f"outside the link prefix {self.link}"
        if int(address) - int(self.link.network_address) < self.pool4.num_addresses:
            return "inside the range of derived VIPs"
        owner = self._owner.get(str(address))
        if owner is not None and owner != vip4:
            return "chosen by another name"
        return ""

    def choose(self, vip4: str, vip6: str) -> bool:
        """Record a checked choice; True if it changed the name's IPv6 VIP."""
        vip6 = str(ipaddress.IPv6Address(vip6))
        old = self.chosen.get(vip4)
        if old == vip6:
            return False
        if old is not None:
            self._owner.pop(old, None)
        self.chosen[vip4], self._owner[vip6] = vip6, vip4
        return True
