"""Who may register which name at this DC (docs/protocol.md 5.1), as one pure object.

The admission list maps a name to the public key that may register it, or a sub-zone
(`*.site1.ntm.example`) to a key that may register names below it, at most `max_names`
of them (stored records, so names a device picks itself cannot exhaust the VIP pool).
One key may be admitted for several names: one party (an adapter and its devices) holds
them all in one session, its REGISTER name first and the others by NAME_ADD. A key not on
the list gets no reply at all (4.3 step 4); an admitted key asking for a name that is not
its own gets a bare REFUSED (or TOO_MANY_NAMES), and the DC logs the reason returned here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..proto.names import is_ntm_name, normalize_fqdn

SUBZONE_PREFIX = "*."


@dataclass(frozen=True)
class SubZone:
    suffix: str  # "site1.ntm.example": names below it, not the suffix itself
    key: bytes
    max_names: int


CountUnder = Callable[[str], int]  # stored names below a suffix


class Admission:
    def __init__(
        self, zone: str, admission: dict[str, bytes], subzones: Sequence[SubZone] = ()
    ) -> None:
        self.zone = normalize_fqdn(zone)
        self.replace(admission, subzones)

    def replace(self, admission: dict[str, bytes], subzones: Sequence[SubZone] = ()) -> None:
        """A new list (SIGHUP); the zone stays. Who may register what is asked each time,
        so whoever holds this object sees the new list at once."""
        self._by_name = {normalize_fqdn(name): key for name, key in admission.items()}
        self._subzones = sorted(subzones, key=lambda z: -len(z.suffix))  # longest first
        self.keys = frozenset(self._by_name.values()) | {z.key for z in self._subzones}

    def in_zone(self, fqdn: str) -> bool:
        return is_ntm_name(normalize_fqdn(fqdn), [self.zone])

    def subzone_of(self, fqdn: str) -> SubZone | None:
        return next((z for z in self._subzones if fqdn.endswith("." + z.suffix)), None)

    def refusal(
        self, fqdn: str, key: bytes, count_under: CountUnder | None = None, stored: bool = False
    ) -> str:
        """Why `key` may not register `fqdn` ("" when it may): readable, for the DC's log.
        `stored`: the name has a record already (it does not count again toward max_names)."""
        if not self.in_zone(fqdn):
            return f"name {fqdn} is outside this DC's zone {self.zone}"
        admitted = self._by_name.get(fqdn)
        if admitted is not None:
            if admitted != key:
                return f"this node's public key is not the one admitted for {fqdn}"
            return ""
        zone = self.subzone_of(fqdn)
        if zone is None:
            return f"name {fqdn} is not on the DC's admission list"
        if zone.key != key:
            return f"this node's public key is not the one admitted for *.{zone.suffix}"
        if not stored and count_under is not None and count_under(zone.suffix) >= zone.max_names:
            return f"*.{zone.suffix} has its {zone.max_names} names (max_names)"
        return ""
