"""IPv6 VIPs (docs/protocol.md 8; issue 13): each name's IPv6 VIP is derived from its IPv4
VIP, the same offset into the DC's IPv6 pool (a ULA prefix in its config) as into the IPv4
pool. So it is kept across restarts exactly as the IPv4 VIP is (the store keeps that one),
needs no column and no allocation of its own, and a DC without an IPv6 pool hands out none
(VIP6_NONE)."""

from __future__ import annotations

import ipaddress

from ..proto.fields_v2 import VIP6_NONE


class Vip6Plan:
    def __init__(
        self, pool4: ipaddress.IPv4Network, pool6: ipaddress.IPv6Network | None = None
    ) -> None:
        if pool6 is not None and pool6.num_addresses < pool4.num_addresses:
            wider = 128 - (32 - pool4.prefixlen)
            raise ValueError(f"{pool6} is smaller than {pool4}: use /{wider} or wider")
        self.pool4, self.pool6 = pool4, pool6
        self.prefix6 = pool6.prefixlen if pool6 is not None else 0

    def of(self, vip4: str) -> str:
        """The IPv6 VIP that goes with `vip4` (VIP6_NONE without an IPv6 pool)."""
        if self.pool6 is None:
            return VIP6_NONE
        offset = int(ipaddress.IPv4Address(vip4)) - int(self.pool4.network_address)
        return str(self.pool6.network_address + offset)

    def router(self) -> str:
        """The pool's first address after the network's, as the IPv4 pool's router."""
        return VIP6_NONE if self.pool6 is None else str(self.pool6.network_address + 1)
