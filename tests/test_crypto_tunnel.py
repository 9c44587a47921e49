"""Signalling AEAD, tunnel key derivation, data-packet AEAD, replay window, key files."""

from __future__ import annotations

import os
import random
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ntma.proto.buffer import CodecError
from ntma.proto.crypto import (
    AuthError,
    KeyError_,
    SignalBox,
    StaticKey,
    TunnelKeys,
    decode_key,
    derive_tunnel_keys,
    ephemeral_public,
    load_key_file,
    write_key_file,
)
from ntma.proto.messages import (
    Direction,
    DirectionResponse,
    Keepalive,
    Register,
    Role,
    Route,
    Status,
)
from ntma.proto.packet import (
    DATA_OVERHEAD,
    SIG_HEADER,
    TAG_LEN,
    VERSION,
    UnknownPeer,
    open_message,
    pack_data_header,
    seal_message,
    unpack_data_header,
)
from ntma.proto.replay import WINDOW_BITS, ReplayWindow
from ntma.proto.tunnel import MAX_COUNTER, ReplayError, Tunnel, TunnelTable
from ntma.testing.tunnels import mirrored_keys

NONCE = bytes.fromhex("0102030405060708090a0b0c")


@pytest.fixture(scope="module")
def keys():
    return StaticKey.generate(), StaticKey.generate(), StaticKey.generate()


# --- SignalBox and signalling packets -------------------------------------------------


def test_signal_box_both_ends_derive_the_same_key(keys):
    a, b, _ = keys
    box_a, box_b = SignalBox(a, b.public), SignalBox(b, a.public)
    sealed = box_a.seal(NONCE, b"hello", b"aad")
    assert box_b.open(NONCE, sealed, b"aad") == b"hello"
    assert box_a.open(NONCE, box_b.seal(NONCE, b"back", b""), b"") == b"back"
    # The same box also opens what it sealed itself (one key per pair, either direction).
    assert box_a.open(NONCE, sealed, b"aad") == b"hello"


@pytest.mark.parametrize(
    "message",
    [
        Keepalive(txid=1, timestamp_ms=1_700_000_000_000),
        Register(7, 1_700_000_000_000, "mn.ntm.example", [("10.10.1.2", 7401)]),
        DirectionResponse(
            3,
            Status.OK,
            Direction(9, Route.DIRECT, Role.INITIATE, "cn.ntm.example", "10.99.0.6", bytes(32)),
        ),
    ],
)
def test_sealed_message_round_trip(keys, message):
    a, b, _ = keys
    sealed = seal_message(message, SignalBox(a, b.public), a.public, NONCE)
    assert open_message(sealed, {a.public: SignalBox(b, a.public)}.get) == (a.public, message)
    # ... and the other way round.
    back = seal_message(message, SignalBox(b, a.public), b.public, NONCE)
    assert open_message(back, {b.public: SignalBox(a, b.public)}.get) == (b.public, message)


def test_flipping_any_bit_of_a_sealed_packet_is_refused(keys):
    a, b, _ = keys
    sealed = seal_message(Keepalive(1, 2), SignalBox(a, b.public), a.public, NONCE)
    box_b = SignalBox(b, a.public)
    lookup = {a.public: box_b}.get

    def constant(_sender: bytes) -> SignalBox:  # ignores the claimed sender
        return box_b

    for bit in range(len(sealed) * 8):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        tampered = bytes(tampered)
        with pytest.raises(CodecError):
            open_message(tampered, lookup)
        # With the box chosen regardless of the claimed sender, everything after the
        # version byte (type, reserved, sender key, nonce, ciphertext, tag) is authenticated.
        if bit < 8:
            with pytest.raises(CodecError, match="version"):
                open_message(tampered, constant)
        else:
            with pytest.raises(AuthError):
                open_message(tampered, constant)
    assert open_message(sealed, lookup) == (a.public, Keepalive(1, 2))


def test_truncated_or_extended_sealed_packet_is_refused(keys):
    a, b, _ = keys
    sealed = seal_message(Keepalive(1, 2), SignalBox(a, b.public), a.public, NONCE)
    lookup = {a.public: SignalBox(b, a.public)}.get
    for cut in range(len(sealed)):
        with pytest.raises(CodecError):
            open_message(sealed[:cut], lookup)
    with pytest.raises(AuthError):
        open_message(sealed + b"\x00", lookup)


def test_packet_sealed_for_another_pair_fails(keys):
    a, b, c = keys
    for_c = seal_message(Keepalive(1, 2), SignalBox(a, c.public), a.public, NONCE)
    with pytest.raises(AuthError):
        open_message(for_c, {a.public: SignalBox(b, a.public)}.get)
    # c itself opens it.
    assert open_message(for_c, {a.public: SignalBox(c, a.public)}.get)[1] == Keepalive(1, 2)


def test_forged_sender_key_fails(keys):
    """c seals with its own pair key but claims to be a: b's box for a refuses it."""
    a, b, c = keys
    forged = seal_message(Keepalive(1, 2), SignalBox(c, b.public), a.public, NONCE)
    with pytest.raises(AuthError):
        open_message(forged, {a.public: SignalBox(b, a.public)}.get)


def test_unknown_sender_is_unknown_peer(keys):
    a, b, _ = keys
    sealed = seal_message(Keepalive(1, 2), SignalBox(a, b.public), a.public, NONCE)
    with pytest.raises(UnknownPeer):
        open_message(sealed, {}.get)
    assert issubclass(UnknownPeer, CodecError)
    assert issubclass(AuthError, CodecError)


def test_data_type_in_signalling_header_is_refused(keys):
    a, b, _ = keys
    header = SIG_HEADER.pack(VERSION, 0x30, 0, a.public, NONCE)
    datagram = header + SignalBox(a, b.public).seal(NONCE, b"\x00" * 4, header)
    with pytest.raises(CodecError, match="data packet"):
        open_message(datagram, {a.public: SignalBox(b, a.public)}.get)


@pytest.mark.parametrize(
    "sender",
    [
        bytes(32),
        (1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
    ids=["zero", "one", "order-8"],
)
def test_low_order_sender_key_is_a_codec_error_for_a_dc_style_box_for(keys, sender):
    """Regression: SignalBox used to let cryptography's ValueError escape for these keys.

    The DC builds a box for every claimed sender before authenticating, so one datagram
    could kill its signalling loop (fixed by crypto._exchange raising AuthError).
    """
    dc = keys[0]
    with pytest.raises(AuthError):
        SignalBox(dc, sender)

    def box_for(claimed: bytes) -> SignalBox:  # what the DC does for unknown senders
        return SignalBox(dc, claimed)

    datagram = SIG_HEADER.pack(VERSION, 0x01, 0, sender, NONCE) + bytes(TAG_LEN + 4)
    with pytest.raises(CodecError):
        open_message(datagram, box_for)


# --- tunnel key derivation ------------------------------------------------------------


def _derive_pair(a, b, tunnel_id=7, eph_a=None, eph_b=None):
    return mirrored_keys(a, b, tunnel_id, eph_a, eph_b)


def test_tunnel_keys_mirror(keys):
    a, b, _ = keys
    initiator, responder = _derive_pair(a, b)
    assert initiator.send == responder.receive
    assert initiator.receive == responder.send
    assert initiator.send != initiator.receive
    assert len(initiator.send) == len(initiator.receive) == 32


def test_tunnel_keys_depend_on_the_ephemerals(keys):
    """Forward secrecy: the keys are not a function of the static keys alone."""
    a, b, _ = keys
    eph_a, eph_b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    first, _ = _derive_pair(a, b, eph_a=eph_a, eph_b=eph_b)
    again, _ = _derive_pair(a, b, eph_a=eph_a, eph_b=eph_b)
    assert first == again  # deterministic for the same inputs
    fresh, _ = _derive_pair(a, b)
    other_a, _ = _derive_pair(a, b, eph_a=X25519PrivateKey.generate(), eph_b=eph_b)
    other_b, _ = _derive_pair(a, b, eph_a=eph_a, eph_b=X25519PrivateKey.generate())
    all_keys = {k for t in (first, fresh, other_a, other_b) for k in (t.send, t.receive)}
    assert len(all_keys) == 8


def test_tunnel_keys_depend_on_tunnel_id_and_statics(keys):
    a, b, c = keys
    eph_a, eph_b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    base, _ = _derive_pair(a, b, tunnel_id=7, eph_a=eph_a, eph_b=eph_b)
    other_id, _ = _derive_pair(a, b, tunnel_id=8, eph_a=eph_a, eph_b=eph_b)
    assert {base.send, base.receive}.isdisjoint({other_id.send, other_id.receive})
    # A responder that was told a different initiator key (c instead of a) does not agree.
    impostor = derive_tunnel_keys(
        tunnel_id=7,
        initiator=False,
        static=b,
        peer_static=c.public,
        ephemeral=eph_b,
        peer_ephemeral=ephemeral_public(eph_a),
    )
    assert impostor.receive != base.send and impostor.send != base.receive


# --- Tunnel ---------------------------------------------------------------------------


def _tunnel_pair(keys, tunnel_id=0x11223344):
    a, b, _ = keys
    initiator, responder = _derive_pair(a, b, tunnel_id=tunnel_id)
    mn = Tunnel(tunnel_id, "cn.ntm.example", "10.99.0.6", ("198.51.100.30", 7401), initiator, 0.0)
    cn = Tunnel(tunnel_id, "mn.ntm.example", "10.99.0.5", ("198.51.100.41", 7401), responder, 0.0)
    return mn, cn


def _open(tunnel: Tunnel, datagram: bytes) -> bytes:
    tunnel_id, counter = unpack_data_header(datagram)
    assert tunnel_id == tunnel.tunnel_id
    return tunnel.open(datagram, counter)


PACKET = bytes.fromhex("4500001c000000004001f96c0a6300050a630006") + b"ping"


def test_tunnel_round_trip_both_directions(keys):
    mn, cn = _tunnel_pair(keys)
    for n in range(3):
        datagram = mn.seal(PACKET)
        assert len(datagram) == len(PACKET) + DATA_OVERHEAD
        assert unpack_data_header(datagram) == (0x11223344, n)
        assert datagram[:16] == pack_data_header(0x11223344, n)
        assert _open(cn, datagram) == PACKET
    assert _open(mn, cn.seal(b"")) == b""
    assert (mn.packets_out, mn.packets_in, cn.packets_out, cn.packets_in) == (3, 1, 1, 3)


def test_tunnel_own_datagram_does_not_open_locally(keys):
    mn, _ = _tunnel_pair(keys)
    with pytest.raises(AuthError):
        _open(mn, mn.seal(PACKET))  # send and receive keys differ


def test_tunnel_replay_is_refused(keys):
    mn, cn = _tunnel_pair(keys)
    datagram = mn.seal(PACKET)
    assert _open(cn, datagram) == PACKET
    with pytest.raises(ReplayError):
        _open(cn, datagram)
    assert cn.packets_in == 1


def test_tunnel_tampered_datagram_does_not_consume_the_counter(keys):
    mn, cn = _tunnel_pair(keys)
    genuine = mn.seal(PACKET)
    for index in range(len(genuine)):
        tampered = bytearray(genuine)
        tampered[index] ^= 0x01
        with pytest.raises(AuthError):
            cn.open(bytes(tampered), 0)
    assert cn.packets_in == 0
    assert _open(cn, genuine) == PACKET


def test_tunnel_forged_huge_counter_does_not_move_the_window(keys):
    """A forged far-future counter must not slide the window past genuine packets."""
    mn, cn = _tunnel_pair(keys)
    genuine = mn.seal(PACKET)
    forged = pack_data_header(0x11223344, 10**12) + genuine[16:]
    with pytest.raises(AuthError):
        _open(cn, forged)
    assert _open(cn, genuine) == PACKET


def test_tunnel_wrong_tunnel_id_in_header_fails(keys):
    mn, cn = _tunnel_pair(keys)
    genuine = mn.seal(PACKET)
    relabelled = pack_data_header(0x11223345, 0) + genuine[16:]
    with pytest.raises(AuthError):
        cn.open(relabelled, 0)
    assert _open(cn, genuine) == PACKET


def test_tunnel_out_of_order_within_window(keys):
    mn, cn = _tunnel_pair(keys)
    datagrams = [mn.seal(PACKET + bytes([n])) for n in range(64)]
    order = list(range(64))
    random.Random(1).shuffle(order)
    for n in order:
        assert _open(cn, datagrams[n]) == PACKET + bytes([n])
    for datagram in datagrams:
        with pytest.raises(ReplayError):
            _open(cn, datagram)


def test_tunnel_counter_older_than_the_window_is_refused(keys):
    mn, cn = _tunnel_pair(keys)
    datagrams = [mn.seal(PACKET) for _ in range(WINDOW_BITS + 1)]
    assert WINDOW_BITS == 8192  # issue 10: at least 8,000
    _open(cn, datagrams[WINDOW_BITS])  # counter 8192 is now the highest
    with pytest.raises(ReplayError, match="too old"):
        _open(cn, datagrams[0])  # 8192 behind: outside the window
    assert _open(cn, datagrams[1]) == PACKET  # 8191 behind: the oldest still accepted
    assert _open(cn, datagrams[WINDOW_BITS - 1]) == PACKET


def test_tunnel_counter_exhaustion(keys):
    mn, cn = _tunnel_pair(keys)
    mn._send_counter = MAX_COUNTER - 1
    last = mn.seal(PACKET)
    assert unpack_data_header(last)[1] == MAX_COUNTER - 1
    assert _open(cn, last) == PACKET
    with pytest.raises(CodecError, match="exhausted"):
        mn.seal(PACKET)


_STATIC_PAIR = (StaticKey.generate(), StaticKey.generate(), None)


@given(payload=st.binary(max_size=1500))
def test_tunnel_round_trip_any_payload(payload):
    mn, cn = _tunnel_pair(_STATIC_PAIR)
    assert _open(cn, mn.seal(payload)) == payload


def test_tunnel_table(keys):
    mn, _ = _tunnel_pair(keys, tunnel_id=1)
    table = TunnelTable()
    assert table.install(mn) is None
    assert table.by_id[1] is mn
    assert table.by_vip[bytes([10, 99, 0, 6])] is mn
    assert table.by_fqdn("cn.ntm.example") is mn
    assert table.by_fqdn("nobody.ntm.example") is None
    keys_ = TunnelKeys(bytes(32), bytes(range(32)))
    newer = Tunnel(2, "cn.ntm.example", "10.99.0.6", ("198.51.100.30", 7402), keys_, 5.0)
    assert table.install(newer) is mn  # same peer VIP: replaces
    assert set(table.by_id) == {2} and len(table) == 1
    table.remove(mn)  # stale: must not remove the newer tunnel
    assert table.by_vip[bytes([10, 99, 0, 6])] is newer and len(table) == 1
    table.remove(newer)
    assert len(table) == 0 and not table.by_vip


# --- ReplayWindow ---------------------------------------------------------------------


def test_replay_window_basics():
    w = ReplayWindow()
    assert w.check(0) and w.check(0)  # check records nothing
    assert w.accept(0)
    assert not w.check(0) and not w.accept(0)
    assert w.accept(2)
    assert w.accept(1)  # late but inside the window
    assert not w.accept(1) and not w.accept(2)


def test_replay_window_edge():
    w = ReplayWindow()
    top = WINDOW_BITS + 5000  # any highest counter more than a window above 0
    assert w.accept(top)
    assert not w.check(top - WINDOW_BITS) and not w.accept(top - WINDOW_BITS)
    assert w.check(top - WINDOW_BITS + 1) and w.accept(top - WINDOW_BITS + 1)
    assert not w.accept(0)


def test_replay_window_slide_by_exactly_the_size():
    w = ReplayWindow()
    assert w.accept(0)
    assert w.accept(WINDOW_BITS)  # shift == size: the old window is dropped
    assert not w.accept(0)  # offset 2048: too old
    assert w.accept(1)  # offset 2047: never seen
    assert not w.accept(1)


def test_replay_window_slide_by_one_less_than_the_size():
    w = ReplayWindow()
    assert w.accept(0) and w.accept(1)
    assert w.accept(WINDOW_BITS)  # shift == size - 1: the bit for 1 survives the slide
    assert not w.accept(0)  # offset 2048: too old
    assert not w.accept(1)  # offset 2047: already seen
    assert w.accept(2)


def test_replay_window_big_jump():
    w = ReplayWindow()
    for counter in range(1, 11):
        assert w.accept(counter)
    top = 10 + 10**12
    assert w.accept(top)
    for old in (10, 9, 5, 1, 0):
        assert not w.check(old) and not w.accept(old)
    assert w.accept(top - 1)  # never seen, inside the new window
    assert not w.accept(top - 1) and not w.accept(top)
    assert w.accept(top - WINDOW_BITS + 1)
    assert not w.accept(top - WINDOW_BITS)
    assert w.accept(2**64 - 1)
    assert not w.accept(top)


@pytest.mark.parametrize("size", [1, 8, 64, WINDOW_BITS])
@given(data=st.data())
def test_replay_window_matches_a_model(size, data):
    base = data.draw(st.integers(0, 2**64 - 1 - 4 * size))
    counters = data.draw(
        st.lists(
            st.one_of(
                st.integers(base, base + 3 * size),
                st.integers(0, 2**64 - 1),
            ),
            max_size=60,
        )
    )
    w = ReplayWindow(size)
    seen: set[int] = set()
    highest = -1
    for counter in counters:
        expected = counter not in seen and (counter > highest or highest - counter < size)
        assert w.check(counter) == expected
        assert w.accept(counter) == expected
        if expected:
            seen.add(counter)
            highest = max(highest, counter)
        assert not w.check(counter)


# --- keys and key files ---------------------------------------------------------------


def test_key_file_round_trip_and_mode(tmp_path):
    key = StaticKey.generate()
    path = tmp_path / "node.key"
    write_key_file(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text == key.private_base64() + "\n"
    loaded = load_key_file(path)
    assert loaded.public == key.public
    assert loaded.public_base64() == key.public_base64()
    assert decode_key(key.public_base64()) == key.public
    # The loaded key agrees with the original: a peer's box opens what the loaded key seals.
    peer = StaticKey.generate()
    sealed = SignalBox(loaded, peer.public).seal(NONCE, b"x", b"")
    assert SignalBox(peer, key.public).open(NONCE, sealed, b"") == b"x"


def test_static_key_from_base64_round_trip():
    key = StaticKey.generate()
    again = StaticKey.from_base64("  " + key.private_base64() + "\n")
    assert again.public == key.public
    assert len(key.public) == 32


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not base64!", "base64"),
        ("", "0 bytes"),
        ("AAAA", "3 bytes"),
        ("A" * 44, "33 bytes"),
        ("A" * 43, "base64"),  # missing padding
        ("QUFB" * 11 + "QQ==", "34 bytes"),
        ("é" * 44, "base64"),
    ],
)
def test_decode_key_refuses_bad_text(text, match):
    with pytest.raises(KeyError_, match=match):
        decode_key(text)


def test_load_key_file_refuses_garbage(tmp_path):
    path = tmp_path / "bad.key"
    path.write_text("this is not a key\n")
    with pytest.raises(KeyError_):
        load_key_file(path)


def test_write_key_file_over_existing_file_is_0600(tmp_path):
    path = tmp_path / "node.key"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    write_key_file(path, StaticKey.generate())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_dc_survives_a_low_order_sender_key():
    """Regression: the DC's receive() must drop (not raise on) a low-order sender key."""
    import ipaddress

    from ntma.dc.coordinator import Coordinator
    from ntma.dc.store import NodeStore

    dc = Coordinator(
        static=StaticKey.generate(),
        store=NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16")),
        zone="ntm.example",
        admission={},
        keepalive_s=5,
        keepalive_misses=3,
        epoch_offset=1_700_000_000.0,
    )
    datagram = SIG_HEADER.pack(VERSION, 0x01, 0, bytes(32), NONCE) + bytes(TAG_LEN + 4)
    dc.receive(datagram, ("192.0.2.1", 7401), 0.0)  # must be dropped and counted
    assert not dc.datagrams_to_send()
