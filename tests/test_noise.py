"""Noise IK (proto/noise.py) against the reference library, byte for byte, and its failures."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ntma.proto.crypto import StaticKey
from ntma.proto.noise import (
    PROLOGUE,
    Initiator,
    NoiseError,
    Responder,
    mac,
    mac1_key,
    make_cookie,
    nonce_bytes,
    open_cookie,
    seal_cookie,
    tai64n,
)

noise_ref = pytest.importorskip("noise.connection", reason="noiseprotocol (test extra) missing")


def _key(seed: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def _raw(private: X25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _reference(initiator: bool, static: X25519PrivateKey, ephemeral, remote: bytes | None):
    conn = noise_ref.NoiseConnection.from_name(b"Noise_IK_25519_AESGCM_SHA256")
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_prologue(PROLOGUE)
    conn.set_keypair_from_private_bytes(noise_ref.Keypair.STATIC, _raw(static))
    conn.set_keypair_from_private_bytes(noise_ref.Keypair.EPHEMERAL, _raw(ephemeral))
    if remote is not None:
        conn.set_keypair_from_public_bytes(noise_ref.Keypair.REMOTE_STATIC, remote)
    conn.start_handshake()
    return conn


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs")  # fixed ephemerals: a test
def test_handshake_matches_the_reference_byte_for_byte():
    si, sr = StaticKey.from_private(_key(1)), StaticKey.from_private(_key(2))
    ei, er = _key(3), _key(4)
    ours_i = Initiator(si, sr.public, ei)
    ref_i = _reference(True, si.private, ei, sr.public)
    ref_r = _reference(False, sr.private, er, None)

    msg1 = ours_i.write_init(b"register me")
    assert msg1 == bytes(ref_i.write_message(b"register me"))
    assert bytes(ref_r.read_message(msg1)) == b"register me"

    ours_r = Responder(sr)
    got = ours_r.read_init(msg1)
    assert (got.initiator_public, got.payload) == (si.public, b"register me")
    msg2, r_keys = ours_r.write_response(b"welcome", er)
    assert msg2 == bytes(ref_r.write_message(b"welcome"))

    payload, i_keys = ours_i.read_response(msg2)
    assert payload == b"welcome"
    assert i_keys.send == r_keys.receive and i_keys.receive == r_keys.send
    assert i_keys.handshake_hash == r_keys.handshake_hash
    # Transport keys agree with the reference's Split(): its first message decrypts here.
    sealed = bytes(ref_r.encrypt(b"transport"))
    assert AESGCM(i_keys.receive).decrypt(nonce_bytes(0), sealed, None) == b"transport"


def test_a_tampered_init_or_wrong_responder_fails_cleanly():
    si, sr, other = StaticKey.generate(), StaticKey.generate(), StaticKey.generate()
    msg1 = Initiator(si, sr.public, X25519PrivateKey.generate()).write_init(b"x")
    for i in (0, 40, len(msg1) - 1):
        bad = bytearray(msg1)
        bad[i] ^= 1
        with pytest.raises(NoiseError):
            Responder(sr).read_init(bytes(bad))
    with pytest.raises(NoiseError):
        Responder(other).read_init(msg1)
    with pytest.raises(NoiseError):
        Responder(sr).read_init(msg1[:50])


def test_a_low_order_ephemeral_is_refused_not_raised_as_something_else():
    sr = StaticKey.generate()
    with pytest.raises(NoiseError):
        Responder(sr).read_init(bytes(32) + bytes(64))


def test_response_from_another_key_fails():
    si, sr, other = StaticKey.generate(), StaticKey.generate(), StaticKey.generate()
    init = Initiator(si, sr.public, X25519PrivateKey.generate())
    msg1 = init.write_init(b"")
    impostor = Responder(other)
    with pytest.raises(NoiseError):
        impostor.read_init(msg1)
    real = Responder(sr)
    real.read_init(msg1)
    msg2, _ = real.write_response(b"", X25519PrivateKey.generate())
    bad = bytearray(msg2)
    bad[-1] ^= 1
    with pytest.raises(NoiseError):
        init.read_response(bytes(bad))


def test_cookie_round_trip_needs_the_init_mac1():
    responder = StaticKey.generate().public
    cookie = make_cookie(b"s" * 32, b"\xc6\x33\x64\x05\x1c\xe9")
    nonce, init_mac1 = b"n" * 24, b"m" * 16
    sealed = seal_cookie(responder, nonce, cookie, init_mac1)
    assert len(sealed) == 32
    assert open_cookie(responder, nonce, sealed, init_mac1) == cookie
    with pytest.raises(NoiseError):
        open_cookie(responder, nonce, sealed, b"x" * 16)


def test_mac1_depends_on_the_responder_key_and_every_byte():
    a, b = StaticKey.generate().public, StaticKey.generate().public
    assert mac(mac1_key(a), b"msg") != mac(mac1_key(b), b"msg")
    assert mac(mac1_key(a), b"msg") != mac(mac1_key(a), b"msh")
    assert len(mac(mac1_key(a), b"msg")) == 16


def test_tai64n_orders_bytewise_with_time():
    stamps = [tai64n(t) for t in (0.0, 0.5, 1.0, 1_700_000_000.25, 1_700_000_000.26)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert tai64n(0.0) == bytes.fromhex("400000000000000a00000000")
