"""Static keys, key files and X25519 (sans-IO).

- Static keys: X25519, one per node, DC and RS. Key files hold base64 of the 32 raw
  private bytes.
- `x25519` turns a low-order peer key into AuthError (bad input, not a crash);
  `AuthError` is what every AEAD failure raises (proto/noise.py, proto/session.py).
- Handshakes, sessions and their keys are protocol v2's: proto/noise.py,
  proto/handshake.py, proto/session.py (docs/protocol.md section 4).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .buffer import CodecError

KEY_LEN = 32
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


class KeyError_(ValueError):
    """A key file or key string that is not a base64 X25519 key."""


@dataclass(frozen=True)
class StaticKey:
    private: X25519PrivateKey
    public: bytes  # raw 32 bytes

    @classmethod
    def generate(cls) -> StaticKey:
        return cls.from_private(X25519PrivateKey.generate())

    @classmethod
    def from_private(cls, private: X25519PrivateKey) -> StaticKey:
        return cls(private, private.public_key().public_bytes(_RAW, _RAW_PUB))

    @classmethod
    def from_base64(cls, text: str) -> StaticKey:
        raw = decode_key(text)
        return cls.from_private(X25519PrivateKey.from_private_bytes(raw))

    def private_base64(self) -> str:
        raw = self.private.private_bytes(_RAW, _RAW_PRIV, serialization.NoEncryption())
        return base64.b64encode(raw).decode()

    def public_base64(self) -> str:
        return base64.b64encode(self.public).decode()


def decode_key(text: str) -> bytes:
    """Base64 of a raw 32-byte X25519 key, or KeyError_."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyError_("not valid base64") from exc
    if len(raw) != KEY_LEN:
        raise KeyError_(f"decodes to {len(raw)} bytes, expected {KEY_LEN}")
    return raw


def load_key_file(path: Path) -> StaticKey:
    return StaticKey.from_base64(path.read_text())


def write_key_file(path: Path, key: StaticKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode above only applies when the file is created
    with os.fdopen(fd, "w") as f:
        f.write(key.private_base64() + "\n")


class AuthError(CodecError):
    """AEAD verification failed: tampered, wrong key, or garbage."""


def x25519(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519; a low-order (weak) peer key is bad input, not a crash."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise AuthError("peer public key is invalid or of low order") from exc


def ephemeral_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(_RAW, _RAW_PUB)
