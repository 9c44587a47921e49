"""The capabilities each role needs instead of root, and the one line when one is missing.

contrib/systemd/ntma-<role>.service grants exactly these (tests/test_service_caps.py runs
each role as an unprivileged user with only them, and checks the units say the same).
"""

from __future__ import annotations

import re
from pathlib import Path

ROLE_CAPS: dict[str, tuple[str, ...]] = {
    "dc": ("CAP_NET_BIND_SERVICE",),  # its DNS on port 53 (none needed without dns_listen)
    "relay": (),  # one UDP socket on an unprivileged port
    "node": ("CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"),  # TUN, addresses, routes; DNS on 53
    "adapter": ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"),  # + nft; raw; 53, 67
}
_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}


def missing_caps(role: str, status: Path = Path("/proc/self/status")) -> list[str]:
    """The capabilities `role` needs that this process does not have (effective set)."""
    try:
        found = re.search(r"^CapEff:\s*([0-9a-f]+)$", status.read_text(), re.M)
    except OSError:
        found = None
    effective = int(found.group(1), 16) if found else 0
    return [cap for cap in ROLE_CAPS[role] if not effective >> _BITS[cap] & 1]


def permission_error(exc: BaseException) -> PermissionError | None:
    """The PermissionError in `exc`, also inside (nested) exception groups, or None."""
    if isinstance(exc, PermissionError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = permission_error(inner)
            if found is not None:
                return found
    return None


def permission_line(role: str, exc: PermissionError) -> str:
    """One line: what was refused, and the capabilities to grant (or the file to fix)."""
    what = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    missing = missing_caps(role)
    if str(exc.filename or "").startswith("/proc/sys/"):  # root's to write, caps or not
        sysctl = str(exc.filename).removeprefix("/proc/sys/").replace("/", ".")
        return f"ntma {role}: error: {what}; set {sysctl}=1 first (sysctl -w, or sysctl.d)"
    if missing:
        return (
            f"ntma {role}: error: {what}; it needs {' and '.join(missing)}: run it as root "
            f"or grant them (contrib/systemd/ntma-{role}.service does)"
        )
    return f"ntma {role}: error: {what}; make that file or directory accessible to this user"
