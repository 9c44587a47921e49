"""Keys and AEAD for signalling and tunnels (sans-IO; randomness is injectable).

- Static keys: X25519, one per node and per DC. Key files hold base64 of the
  32 raw private bytes.
- Signalling: the key for a pair of static keys is HKDF(X25519(a, B)), so both
  ends derive it without a handshake; it authenticates the sender's static key.
- Tunnels: HKDF over X25519(ephemeral_i, ephemeral_r) || X25519(static_i, static_r)
  gives one key per direction. The ephemeral part gives forward secrecy, the static
  part binds the tunnel to the keys the DC vouched for. The DC never sees it.
- Data: AES-256-GCM with a 64-bit counter nonce; AEAD objects are built once per key.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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


def _hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(hashes.SHA256(), length, salt=b"ntma v1", info=info).derive(ikm)


class AuthError(CodecError):
    """AEAD verification failed: tampered, wrong key, or garbage."""


class SignalBox:
    """AEAD for signalling between one pair of static keys (either direction)."""

    NONCE_LEN = 12

    def __init__(self, local: StaticKey, peer_public: bytes) -> None:
        low, high = sorted((local.public, peer_public))
        key = _hkdf(x25519(local.private, peer_public), b"signalling" + low + high)
        self._aead = AESGCM(key)

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag as exc:
            raise AuthError("signalling message failed authentication") from exc


@dataclass(frozen=True)
class TunnelKeys:
    send: bytes
    receive: bytes


def derive_tunnel_keys(
    *,
    tunnel_id: int,
    initiator: bool,
    static: StaticKey,
    peer_static: bytes,
    ephemeral: X25519PrivateKey,
    peer_ephemeral: bytes,
) -> TunnelKeys:
    """Both ends call this with mirrored arguments and get mirrored keys."""
    my_eph = ephemeral.public_key().public_bytes(_RAW, _RAW_PUB)
    eph_i, eph_r = (my_eph, peer_ephemeral) if initiator else (peer_ephemeral, my_eph)
    stat_i, stat_r = (static.public, peer_static) if initiator else (peer_static, static.public)
    ee = x25519(ephemeral, peer_ephemeral)
    ss = x25519(static.private, peer_static)
    info = b"tunnel" + tunnel_id.to_bytes(4, "big") + stat_i + stat_r + eph_i + eph_r
    okm = _hkdf(ee + ss, info, 64)
    i2r, r2i = okm[:32], okm[32:]
    return TunnelKeys(send=i2r, receive=r2i) if initiator else TunnelKeys(send=r2i, receive=i2r)


def x25519(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519; a low-order (weak) peer key is bad input, not a crash."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise AuthError("peer public key is invalid or of low order") from exc


def ephemeral_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(_RAW, _RAW_PUB)
