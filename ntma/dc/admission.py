"""Who may register which name at this DC (docs/protocol.md 5.1), as one pure object.

The admission list maps a name to the one public key that may register it. A key not on
the list gets no reply at all (4.3 step 4); an admitted key asking for a name that is not
its own gets a bare REFUSED, and the DC logs the reason returned here.
"""

from __future__ import annotations

from ..proto.names import is_ntm_name, normalize_fqdn


class Admission:
    def __init__(self, zone: str, admission: dict[str, bytes]) -> None:
        self.zone = normalize_fqdn(zone)
        self._by_name = {normalize_fqdn(name): key for name, key in admission.items()}
        self.keys = frozenset(self._by_name.values())

    def in_zone(self, fqdn: str) -> bool:
        return is_ntm_name(normalize_fqdn(fqdn), [self.zone])

    def refusal(self, fqdn: str, key: bytes) -> str:
        """Why `key` may not register `fqdn` ("" when it may): readable, for the DC's log."""
        if not self.in_zone(fqdn):
            return f"name {fqdn} is outside this DC's zone {self.zone}"
        admitted = self._by_name.get(fqdn)
        if admitted is None:
            return f"name {fqdn} is not on the DC's admission list"
        if admitted != key:
            return f"this node's public key is not the one admitted for {fqdn}"
        return ""
