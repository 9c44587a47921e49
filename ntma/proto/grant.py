"""Relay grants (v2): the DC's permission for one tunnel to use one Relay Server (sans-IO).

    dc_id [8] | tunnel_id u64 | expires_ms u64 | end A key [32] | end B key [32] | tag [16]

104 bytes (docs/protocol.md 6.3). tag = HMAC-SHA256(key, everything before it)
truncated to 16 bytes, key = HKDF(X25519(DC, RS), salt b"ntma v2", info "relay grant" ‖
the two public keys sorted): only that DC and that RS can make or check a grant, and the
ends cannot forge or alter one. The RS accepts a RELAY_BIND only before the grant expires,
only for the DC it knows, and only from one of the two ends it names.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .buffer import CodecError
from .crypto import StaticKey, x25519
from .fields_v2 import GRANT_LEN

_BODY = struct.Struct("!8sQQ32s32s")
TAG_LEN = 16
SALT = b"ntma v2"
assert _BODY.size + TAG_LEN == GRANT_LEN


class GrantError(CodecError):
    """A grant that is forged, altered, expired, or for someone else."""


@dataclass(frozen=True)
class Grant:
    dc_id: bytes
    tunnel_id: int
    expires_ms: int
    end_a: bytes
    end_b: bytes

    def side_of(self, public_key: bytes) -> int:
        """0 or 1 for the two ends; GrantError for anyone else."""
        if public_key == self.end_a:
            return 0
        if public_key == self.end_b:
            return 1
        raise GrantError("sender is not an end of this grant")

    @property
    def ends(self) -> tuple[bytes, bytes]:
        return self.end_a, self.end_b


def grant_key(own: StaticKey, other_public: bytes) -> bytes:
    """The DC calls this with the RS's public key, the RS with the DC's."""
    low, high = sorted((own.public, other_public))
    return HKDF(hashes.SHA256(), 32, salt=SALT, info=b"relay grant" + low + high).derive(
        x25519(own.private, other_public)
    )


def make_grant(key: bytes, grant: Grant) -> bytes:
    body = _BODY.pack(grant.dc_id, grant.tunnel_id, grant.expires_ms, grant.end_a, grant.end_b)
    return body + hmac.new(key, body, sha256).digest()[:TAG_LEN]


def check_grant(key: bytes, blob: bytes, now_ms: int, dc_id: bytes | None = None) -> Grant:
    """The grant if it verifies, has not expired and (if given) names this DC."""
    if len(blob) != GRANT_LEN:
        raise GrantError("grant has the wrong length")
    body, tag = blob[: _BODY.size], blob[_BODY.size :]
    if not hmac.compare_digest(hmac.new(key, body, sha256).digest()[:TAG_LEN], tag):
        raise GrantError("grant tag does not verify")
    grant = Grant(*_BODY.unpack(body))
    if dc_id is not None and grant.dc_id != dc_id:
        raise GrantError("grant from another DC")
    if grant.tunnel_id == 0 or grant.end_a == grant.end_b:
        raise GrantError("grant tag does not verify")  # no DC makes these
    if now_ms > grant.expires_ms:
        raise GrantError("grant expired")
    return grant
