"""Protocol v2 sessions (proto/session.py): transport packets, keypair rotation, rekey timers."""

from __future__ import annotations

import os

import pytest

from ntma.proto.crypto import AuthError
from ntma.proto.handshake import T_DATA, T_SIGNAL
from ntma.proto.session import (
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    ExpiredKeys,
    Keypair,
    KeyRing,
    ReplayError,
    parse_transport,
)


def _pair(now: float = 0.0, index_a: int = 11, index_b: int = 22):
    """Mirrored keypairs: a initiated, b responded."""
    k1, k2 = os.urandom(32), os.urandom(32)
    a = Keypair(k1, k2, index_a, index_b, now, initiator=True)
    b = Keypair(k2, k1, index_b, index_a, now, initiator=False)
    return a, b


def test_transport_round_trip_layout_and_replay():
    a, b = _pair()
    datagram = a.seal(T_DATA, b"inner packet")
    assert datagram[:4] == bytes([2, 4, 0, 0]) and len(datagram) == 16 + 12 + 16
    msg_type, index, counter = parse_transport(datagram)
    assert (msg_type, index, counter) == (T_DATA, 22, 0)
    assert b.open(datagram, counter) == b"inner packet"
    with pytest.raises(ReplayError):
        b.open(datagram, counter)
    signal = a.seal(T_SIGNAL, b"keepalive")
    assert parse_transport(signal)[:3:2] == (T_SIGNAL, 0)  # its own counter, from 0
    tampered = bytearray(signal)
    tampered[-1] ^= 1
    with pytest.raises(AuthError):
        b.open(bytes(tampered), 0)
    assert b.open(signal, 0) == b"keepalive"  # a failed forgery does not burn the counter


def test_late_packets_within_the_window_still_arrive():
    a, b = _pair()
    sent = [a.seal(T_DATA, i.to_bytes(2, "big")) for i in range(8000)]
    assert b.open(sent[7999], 7999) == (7999).to_bytes(2, "big")
    assert b.open(sent[5], 5) == (5).to_bytes(2, "big")  # 7,994 behind: inside 8,192


def test_parse_transport_rejects_other_datagrams():
    a, _ = _pair()
    good = a.seal(T_DATA, b"")
    for bad in (
        good[:20],
        b"\x01" + good[1:],
        good[:1] + b"\x01" + good[2:],
        good[:3] + b"\x01" + good[4:],
    ):
        with pytest.raises(Exception) as info:
            parse_transport(bad)
        assert info.type.__name__ == "CodecError"


def test_initiator_rekeys_after_time_and_keeps_the_previous_keys_for_receiving():
    ring = KeyRing()
    old_a, old_b = _pair(now=0.0)
    ring.install(old_a)
    assert ring.sending(1.0) is old_a
    assert not ring.needs_rekey(REKEY_AFTER_TIME - 1)
    assert ring.needs_rekey(REKEY_AFTER_TIME)
    new_a, _ = _pair(now=REKEY_AFTER_TIME, index_a=33, index_b=44)
    assert ring.install(new_a) == []
    assert ring.sending(REKEY_AFTER_TIME) is new_a and ring.previous is old_a
    in_flight = old_b.seal(T_DATA, b"late")  # the peer still sent on the old keys
    assert ring.previous.open(in_flight, 0) == b"late"
    assert ring.expire(REJECT_AFTER_TIME) == [old_a]
    assert ring.all() == [new_a]


def test_responder_keys_wait_for_confirmation():
    ring = KeyRing()
    first_a, first_b = _pair()
    ring.install(first_b)
    with pytest.raises(ExpiredKeys):
        ring.sending(0.0)  # no confirmed keypair yet
    assert ring.confirm(first_b) == [] and ring.sending(0.0) is first_b
    second_a, second_b = _pair(now=130.0, index_a=5, index_b=6)
    ring.install(second_b)
    assert ring.sending(130.0) is first_b  # still the old one until the peer uses the new
    ring.confirm(second_b)
    assert ring.current is second_b and ring.previous is first_b
    assert not ring.needs_rekey(130.0 + REKEY_AFTER_TIME)  # the initiator rekeys on time


def test_message_limit_forces_a_rekey_and_expiry_stops_sending():
    ring = KeyRing()
    a, _ = _pair()
    ring.install(a)
    a._send[T_DATA].counter = REKEY_AFTER_MESSAGES
    assert ring.needs_rekey(1.0)
    with pytest.raises(ExpiredKeys):
        ring.sending(REJECT_AFTER_TIME)


def test_data_and_signalling_use_separate_keys_and_counters():
    a, b = _pair()
    data = a.seal(T_DATA, b"d")
    signal = a.seal(T_SIGNAL, b"s")
    assert parse_transport(data)[2] == parse_transport(signal)[2] == 0
    relabelled = data[:1] + bytes([T_SIGNAL]) + data[2:]
    with pytest.raises(AuthError):
        b.open(relabelled, 0)  # a data packet cannot pass as signalling
    assert b.open(data, 0) == b"d" and b.open(signal, 0) == b"s"


def test_highest_received_per_kind():
    a, b = _pair()
    assert b.highest_received(T_DATA) == b.highest_received(T_SIGNAL) == -1
    sent = [a.seal(T_DATA, b"") for _ in range(3)]
    b.open(sent[2], 2)
    b.open(sent[0], 0)  # late: the highest stays
    assert b.highest_received(T_DATA) == 2 and b.highest_received(T_SIGNAL) == -1


def test_a_ring_rejects_after_its_own_time():
    a, _ = _pair()
    ring = KeyRing(reject_after=1860.0)
    ring.install(a)
    assert ring.sending(REJECT_AFTER_TIME + 1) is a  # a DC session outlives 180 s
    assert ring.expire(REJECT_AFTER_TIME + 1) == []
    with pytest.raises(ExpiredKeys):
        ring.sending(1860.0)
    assert ring.expire(1860.0) == [a]
