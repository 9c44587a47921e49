"""Noise IK (Noise_IK_25519_AESGCM_SHA256) for protocol v2: handshakes, mac1/mac2, cookies.

Pure code: no I/O, no clock, no randomness of its own (ephemeral keys, nonces and the
cookie secret are passed in). Follows the Noise specification (revision 34), sections 4
and 5, for the pattern

    IK:  <- s
         ...
         -> e, es, s, ss      (message 1: the initiator's static key travels encrypted)
         <- e, ee, se         (message 2)

and WireGuard's mac1/mac2/cookie construction (docs/protocol.md section 4), with the
primitives `cryptography` and `hashlib` have: keyed BLAKE2s for MACs, AES-256-GCM for the
cookie (a fresh key per reply, derived from its random nonce, since there is no XChaCha).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .crypto import AuthError, StaticKey, ephemeral_public, x25519

PROTOCOL_NAME = b"Noise_IK_25519_AESGCM_SHA256"
PROLOGUE = b"ntma v2"
KEY_LEN = 32
TAG_LEN = 16
MAC_LEN = 16
COOKIE_NONCE_LEN = 24
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
MSG1_OVERHEAD = KEY_LEN + KEY_LEN + TAG_LEN + TAG_LEN  # e, enc(s), payload tag
MSG2_OVERHEAD = KEY_LEN + TAG_LEN  # e, payload tag


class NoiseError(AuthError):
    """A handshake message that does not authenticate (or a low-order key in it)."""


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise's HKDF with two outputs."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    return out1, _hmac(temp, out1 + b"\x02")


def nonce_bytes(counter: int) -> bytes:
    """Noise's AESGCM nonce: 32 zero bits, then the 64-bit counter big-endian."""
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


class _Symmetric:
    """Noise's SymmetricState with its CipherState folded in (k, n)."""

    def __init__(self, prologue: bytes) -> None:
        h = PROTOCOL_NAME.ljust(32, b"\x00") if len(PROTOCOL_NAME) <= 32 else None
        self.h = h if h is not None else _hash(PROTOCOL_NAME)
        self.ck = self.h
        self._aead: AESGCM | None = None
        self._n = 0
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf2(self.ck, ikm)
        self._aead, self._n = AESGCM(temp_k), 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self._aead is not None  # IK always mixes a key before the first encryption
        ciphertext = self._aead.encrypt(nonce_bytes(self._n), plaintext, self.h)
        self._n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self._aead is not None
        try:
            plaintext = self._aead.decrypt(nonce_bytes(self._n), ciphertext, self.h)
        except InvalidTag as exc:
            raise NoiseError("handshake message failed authentication") from exc
        self._n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        return _hkdf2(self.ck, b"")


def expand_transport_key(key: bytes, label: bytes) -> bytes:
    """A data or signalling key from a Split() key: Noise's HKDF with `key` as the
    chaining key, first output (docs/protocol.md 4.2)."""
    return _hkdf2(key, label)[0]


@dataclass(frozen=True)
class SessionKeys:
    """Transport keys after a handshake, from this end's point of view."""

    send: bytes
    receive: bytes
    handshake_hash: bytes  # Noise's h: the same at both ends; binds the session


class Initiator:
    """One IK handshake from the initiator's side: write_init(), then read_response()."""

    def __init__(
        self,
        static: StaticKey,
        responder_public: bytes,
        ephemeral: X25519PrivateKey,
        prologue: bytes = PROLOGUE,
    ) -> None:
        self._static, self._rs, self._e = static, responder_public, ephemeral
        self.ephemeral_public = ephemeral_public(ephemeral)
        self._sym = _Symmetric(prologue)
        self._sym.mix_hash(responder_public)  # pre-message "<- s"

    def write_init(self, payload: bytes) -> bytes:
        """Message 1: e, es, s, ss, then the encrypted payload."""
        sym, e_pub = self._sym, ephemeral_public(self._e)
        sym.mix_hash(e_pub)
        sym.mix_key(_dh(self._e, self._rs))
        encrypted_static = sym.encrypt_and_hash(self._static.public)
        sym.mix_key(_dh(self._static.private, self._rs))
        return e_pub + encrypted_static + sym.encrypt_and_hash(payload)

    def read_response(self, message: bytes) -> tuple[bytes, SessionKeys]:
        """Message 2: e, ee, se, then the payload. Raises NoiseError, leaving this handshake
        as it was (a forged response must not spoil the real one that may follow)."""
        if len(message) < MSG2_OVERHEAD:
            raise NoiseError("handshake response too short")
        sym, re = copy.copy(self._sym), message[:KEY_LEN]
        sym.mix_hash(re)
        sym.mix_key(_dh(self._e, re))
        sym.mix_key(_dh(self._static.private, re))
        payload = sym.decrypt_and_hash(message[KEY_LEN:])
        k1, k2 = sym.split()
        return payload, SessionKeys(send=k1, receive=k2, handshake_hash=sym.h)


@dataclass(frozen=True)
class InitReceived:
    """What a responder learnt from a valid message 1."""

    initiator_public: bytes
    payload: bytes


class Responder:
    """One IK handshake from the responder's side: read_init(), then write_response()."""

    def __init__(self, static: StaticKey, prologue: bytes = PROLOGUE) -> None:
        self._static = static
        self._sym = _Symmetric(prologue)
        self._sym.mix_hash(static.public)  # pre-message "<- s"
        self._re: bytes | None = None
        self._rs: bytes | None = None

    def read_init(self, message: bytes) -> InitReceived:
        """Message 1. Raises NoiseError; costs two X25519 (es, ss)."""
        if len(message) < MSG1_OVERHEAD:
            raise NoiseError("handshake init too short")
        sym, re = self._sym, message[:KEY_LEN]
        sym.mix_hash(re)
        sym.mix_key(_dh(self._static.private, re))
        rs = sym.decrypt_and_hash(message[KEY_LEN : 2 * KEY_LEN + TAG_LEN])
        sym.mix_key(_dh(self._static.private, rs))
        payload = sym.decrypt_and_hash(message[2 * KEY_LEN + TAG_LEN :])
        self._re, self._rs = re, rs
        return InitReceived(rs, payload)

    def write_response(
        self, payload: bytes, ephemeral: X25519PrivateKey
    ) -> tuple[bytes, SessionKeys]:
        """Message 2: e, ee, se, then the encrypted payload."""
        assert self._re is not None and self._rs is not None, "read_init first"
        sym, e_pub = self._sym, ephemeral_public(ephemeral)
        sym.mix_hash(e_pub)
        sym.mix_key(_dh(ephemeral, self._re))
        sym.mix_key(_dh(ephemeral, self._rs))
        message = e_pub + sym.encrypt_and_hash(payload)
        k1, k2 = sym.split()
        return message, SessionKeys(send=k2, receive=k1, handshake_hash=sym.h)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return x25519(private, public)
    except AuthError as exc:  # low-order point: the result would be all zeros
        raise NoiseError(str(exc)) from exc


# --- mac1, mac2 and cookies (WireGuard's construction) ---------------------------------


def mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=MAC_LEN).digest()


def mac1_key(responder_public: bytes) -> bytes:
    """Key of mac1 on messages to this public key: anyone who knows the key can make it,
    and checking it costs a hash, no X25519."""
    return _hash(LABEL_MAC1 + responder_public)


def cookie_key(responder_public: bytes) -> bytes:
    return _hash(LABEL_COOKIE + responder_public)


def make_cookie(secret: bytes, source: bytes) -> bytes:
    """The cookie a responder under load gives `source` (address and port bytes); `secret`
    is replaced every COOKIE_SECRET_S, so cookies age out with it."""
    return mac(secret, source)


def seal_cookie(responder_public: bytes, nonce: bytes, cookie: bytes, init_mac1: bytes) -> bytes:
    """The encrypted cookie of a COOKIE_REPLY: only the sender of the init (which knows the
    init's mac1) can open it. A key per reply, from its random 24-byte nonce."""
    key = _hmac(cookie_key(responder_public), nonce)
    return AESGCM(key).encrypt(nonce_bytes(0), cookie, init_mac1)


def open_cookie(responder_public: bytes, nonce: bytes, sealed: bytes, init_mac1: bytes) -> bytes:
    key = _hmac(cookie_key(responder_public), nonce)
    try:
        return AESGCM(key).decrypt(nonce_bytes(0), sealed, init_mac1)
    except InvalidTag as exc:
        raise NoiseError("cookie reply failed authentication") from exc


# --- timestamps ---------------------------------------------------------------------------

TAI64_BASE = 2**62 + 10  # TAI64 label of the Unix epoch (TAI is 10 s ahead of UTC in 1970)
TIMESTAMP_LEN = 12


def tai64n(epoch_seconds: float) -> bytes:
    """A 12-byte TAI64N timestamp; compares bytewise in time order."""
    seconds = int(epoch_seconds)
    nanos = int((epoch_seconds - seconds) * 1e9)
    return (TAI64_BASE + seconds).to_bytes(8, "big") + nanos.to_bytes(4, "big")
