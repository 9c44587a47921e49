"""The v2 initiator's side (proto/initiate.py): resends, cookies, responses, indexes."""

from __future__ import annotations

import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntma.proto.buffer import CodecError
from ntma.proto.crypto import StaticKey
from ntma.proto.gate import Admitted, HandshakeGate, SendCookie
from ntma.proto.handshake import build_resp, open_init
from ntma.proto.initiate import Indexes, Initiations, next_timestamp, rekey_timeout
from ntma.proto.noise import tai64n
from ntma.proto.session import REKEY_TIMEOUT

NODE, DC = StaticKey.generate(), StaticKey.generate()
_count = itertools.count(1)


def _random(n: int) -> bytes:
    return next(_count).to_bytes(n, "big")


def _inits() -> Initiations:
    return Initiations(NODE, Indexes(_random))


def test_resends_the_same_bytes_then_expires():
    inits = _inits()
    pending = inits.start(DC.public, b"hello", 200, now=0.0, clock_epoch=1e9)
    assert len(pending.datagram) == 200
    sent = []
    for t in (0.4, 0.5, 1.0, 1.5, 3.5, 4.9):
        sent += [(t, p.datagram) for p in inits.due(t)]
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5]
    assert all(d == pending.datagram for _, d in sent)
    deadline = rekey_timeout(pending.sender_index)
    assert REKEY_TIMEOUT <= deadline <= REKEY_TIMEOUT + 0.333
    assert inits.next_deadline() == deadline
    assert inits.expired(deadline - 0.001) == []
    assert inits.expired(deadline) == [pending] and not inits.pending


def test_rekey_timeouts_are_jittered_across_handshakes():
    spread = {rekey_timeout(i) for i in range(1, 2000, 7)}
    assert (
        len(spread) > 100 and min(spread) >= REKEY_TIMEOUT and max(spread) <= REKEY_TIMEOUT + 0.333
    )


def test_a_response_completes_once_and_a_forgery_spoils_nothing():
    inits = _inits()
    pending = inits.start(DC.public, b"register", 0, now=0.0, clock_epoch=1e9)
    gate = HandshakeGate(DC, 0.0, _random)
    admitted = gate.admit(pending.datagram, ("198.51.100.7", 1), 0.0)
    assert isinstance(admitted, Admitted)
    opened = open_init(admitted.frame, DC)
    assert opened.body == b"register" and opened.initiator_public == NODE.public
    resp, dc_keys = build_resp(
        opened,
        X25519PrivateKey.generate(),
        sender_index=77,
        receiver_index=pending.sender_index,
        body=b"welcome",
    )
    forged = bytearray(resp)
    forged[50] ^= 1
    with pytest.raises(CodecError):
        inits.on_response(bytes(forged))
    done = inits.on_response(resp)
    assert done is not None
    got, their_index, body, keys = done
    assert got is pending and their_index == 77 and body == b"welcome"
    assert keys.send == dc_keys.receive
    assert inits.on_response(resp) is None  # once


def test_a_cookie_rebuilds_the_init_with_mac2():
    inits = _inits()
    gate = HandshakeGate(DC, 0.0, _random, budget_per_s=1)
    gate.admit(inits.start(DC.public, b"x", 0, 0.0, 1e9).datagram, ("198.51.100.7", 1), 0.0)
    pending = inits.start(DC.public, b"y", 0, 0.0, 1e9)
    reply = gate.admit(pending.datagram, ("198.51.100.7", 1), 0.0)
    assert isinstance(reply, SendCookie)
    old = pending.datagram
    assert inits.on_cookie(reply.datagram, 1e9) is pending
    assert pending.datagram != old and pending.datagram[-16:] != bytes(16)
    assert isinstance(gate.admit(pending.datagram, ("198.51.100.7", 1), 1.1), Admitted)


def test_indexes_are_unique_nonzero_and_released():
    zeros_then = itertools.chain(
        [bytes(4), (5).to_bytes(4, "big"), (5).to_bytes(4, "big")],
        (i.to_bytes(4, "big") for i in itertools.count(6)),
    )
    indexes = Indexes(lambda n: next(zeros_then))
    assert [indexes.new(), indexes.new()] == [5, 6]
    indexes.release(5)
    assert 5 not in indexes.in_use


def test_timestamps_never_go_back():
    first = next_timestamp(2e9, None)
    assert next_timestamp(1e9, first) > first  # the clock went back: still greater
    assert next_timestamp(3e9, first) == tai64n(3e9)
