"""Relay grants: the DC's permission for one tunnel to use one Relay Server (sans-IO).

    tunnel id u32 | expires (ms since the epoch) u64 | end A key [32] | end B key [32]
    | tag [16] = HMAC-SHA256(key, everything before it), truncated

The key is derived from X25519(DC, RS): only that DC and that RS can make or check
grants, and the ends cannot forge or alter one. The RS accepts a RELAY_BIND only
before the grant expires and only from one of the two ends it names.
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
from .messages import GRANT_LEN

_BODY = struct.Struct("!IQ32s32s")
TAG_LEN = 16


class GrantError(CodecError):
    """A grant that is forged, altered, expired, or for someone else."""


@dataclass(frozen=True)
class Grant:
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


def grant_key(own: StaticKey, other_public: bytes) -> bytes:
    """The DC calls this with the RS's public key, the RS with the DC's."""
    low, high = sorted((own.public, other_public))
    return HKDF(hashes.SHA256(), 32, salt=b"ntma v1", info=b"relay grant" + low + high).derive(
        x25519(own.private, other_public)
    )


def make_grant(key: bytes, grant: Grant) -> bytes:
    body = _BODY.pack(grant.tunnel_id, grant.expires_ms, grant.end_a, grant.end_b)
    return body + hmac.new(key, body, sha256).digest()[:TAG_LEN]


def check_grant(key: bytes, blob: bytes, now_ms: int) -> Grant:
    if len(blob) != GRANT_LEN:
        raise GrantError("grant has the wrong length")
    body, tag = blob[: _BODY.size], blob[_BODY.size :]
    if not hmac.compare_digest(hmac.new(key, body, sha256).digest()[:TAG_LEN], tag):
        raise GrantError("grant tag does not verify")
    grant = Grant(*_BODY.unpack(body))
    if now_ms > grant.expires_ms:
        raise GrantError("grant expired")
    return grant
