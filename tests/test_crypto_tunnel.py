"""v2 tunnels (proto/tunnel.py): DATA sealed on the ring, open_data's checks in order
(index, replay, AEAD, inner source and destination), roaming on the newest counter only,
key confirmation, PUNCH, expired keys; the TunnelTable; the replay window; key files."""

from __future__ import annotations

import os
import random
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntma.proto.buffer import CodecError
from ntma.proto.crypto import (
    AuthError,
    KeyError_,
    StaticKey,
    decode_key,
    load_key_file,
    write_key_file,
    x25519,
)
from ntma.proto.replay import WINDOW_BITS, ReplayWindow
from ntma.proto.session import REJECT_AFTER_TIME, REKEY_AFTER_TIME, TRANSPORT_OVERHEAD
from ntma.proto.tunnel import (
    ExpiredKeys,
    InnerDrop,
    PunchDrop,
    ReplayError,
    Tunnel,
    TunnelTable,
    UnknownIndex,
    open_data,
    punch_datagram,
)
from ntma.testing.traffic import GN_VIP, PEER_VIP, udp_packet
from ntma.testing.tunnels import DC_ID, keypair_pair, tunnel_pair

GN_SIDE = ("198.51.100.51", 7401)  # where the GN side's packets come from
ELSEWHERE = ("198.51.100.99", 40000)
PACKET = udp_packet(GN_VIP, PEER_VIP, 100)  # the GN side sends as its own VIP
BACK = udp_packet(PEER_VIP, GN_VIP, 100)


def _pair():
    """(sender: the GN side's tunnel, receiver table: the peer's, receiver tunnel)."""
    a, b = tunnel_pair()
    table = TunnelTable()
    table.install(b)
    return a, table, b


# --- DATA round trips -------------------------------------------------------------------


def test_round_trip_both_directions_with_60_bytes_over_ipv4():
    a, table_b, b = _pair()
    table_a = TunnelTable()
    table_a.install(a)
    datagram = a.seal(PACKET, 0.0)
    assert len(datagram) == len(PACKET) + TRANSPORT_OVERHEAD == len(PACKET) + 32  # + 28 UDP/IP
    assert datagram[:4] == bytes((2, 4, 0, 0))
    assert open_data(table_b, datagram, GN_SIDE, 1.0) == (b, PACKET)
    assert open_data(table_a, b.seal(BACK, 1.0), ("198.51.100.30", 7401), 1.0) == (a, BACK)
    assert (a.packets_out, b.packets_in, b.last_receive) == (1, 1, 1.0)


def test_keepalive_is_an_empty_data():
    a, table, b = _pair()
    assert open_data(table, a.seal(b"", 0.0), GN_SIDE, 0.0) == (b, b"")


def test_replay_and_tamper_are_refused_and_tamper_costs_no_counter():
    a, table, _ = _pair()
    datagram = a.seal(PACKET, 0.0)
    tampered = bytearray(datagram)
    tampered[-1] ^= 1
    with pytest.raises(AuthError):
        open_data(table, bytes(tampered), GN_SIDE, 0.0)
    open_data(table, datagram, GN_SIDE, 0.0)  # the real one still opens
    with pytest.raises(ReplayError):
        open_data(table, datagram, GN_SIDE, 0.0)


def test_unknown_index_punch_and_malformed():
    a, table, _ = _pair()
    with pytest.raises(UnknownIndex):
        open_data(table, _reindexed(a.seal(PACKET, 0.0), 99), GN_SIDE, 0.0)
    punch = punch_datagram()
    assert len(punch) == 32 and punch[:4] == bytes((2, 4, 0, 0)) and punch[4:] == bytes(28)
    with pytest.raises(PunchDrop):
        open_data(table, punch, GN_SIDE, 0.0)
    for junk in (b"", b"\x02", bytes((1, 4, 0, 0)) + bytes(40), bytes((2, 4, 0, 1)) + bytes(40)):
        with pytest.raises(CodecError):
            open_data(table, junk, GN_SIDE, 0.0)


def _reindexed(datagram: bytes, index: int) -> bytes:
    return datagram[:4] + index.to_bytes(4, "big") + datagram[8:]


def test_inner_source_must_be_the_peer_and_destination_this_tunnel():
    a, table, b = _pair()
    cases = [
        (udp_packet("10.99.0.77", PEER_VIP, 10), "inner_source_not_peer"),
        (udp_packet(GN_VIP, "10.99.0.77", 10), "inner_dest_not_self"),
        (b"\x45" + bytes(10), "inner_source_not_peer"),  # too short for IPv4
        (b"\x60" + bytes(50), "inner_source_not_peer"),  # IPv6 on a tunnel without VIP6
    ]
    for inner, reason in cases:
        with pytest.raises(InnerDrop) as info:
            open_data(table, a.seal(inner, 0.0), GN_SIDE, 0.0)
        assert info.value.reason == reason
    assert b.packets_in == 0


def test_ipv6_inner_checked_against_the_vip6s():
    ka, kb = keypair_pair()
    peer6, self6 = "fd00::3", "fd00::2"
    b = Tunnel(
        DC_ID, 7, "gn.ntm.example", GN_VIP, PEER_VIP, GN_SIDE, 0.0, peer_vip6=peer6, self_vip6=self6
    )
    a = Tunnel(DC_ID, 7, "cn.ntm.example", PEER_VIP, GN_VIP, ("198.51.100.30", 7401), 0.0)
    a.install(ka)
    b.install(kb)
    table = TunnelTable()
    table.install(b)
    good = _ipv6(peer6, self6)
    assert open_data(table, a.seal(good, 0.0), GN_SIDE, 0.0)[1] == good
    with pytest.raises(InnerDrop):
        open_data(table, a.seal(_ipv6("fd00::9", self6), 0.0), GN_SIDE, 0.0)
    with pytest.raises(InnerDrop):
        open_data(table, a.seal(_ipv6(peer6, "fd00::9"), 0.0), GN_SIDE, 0.0)
    assert table.by_pair[b.self_vip6_packed + bytes.fromhex("fd00" + "00" * 13 + "03")] is b


def _ipv6(src: str, dst: str) -> bytes:
    import ipaddress

    header = bytes([0x60, 0, 0, 0, 0, 0, 17, 64])
    return header + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed


# --- roaming and key confirmation -----------------------------------------------------------


def test_the_endpoint_roams_only_on_a_counter_above_the_highest():
    a, table, b = _pair()
    first, second, third = (a.seal(PACKET, 0.0) for _ in range(3))
    open_data(table, second, GN_SIDE, 0.0)
    open_data(table, first, ELSEWHERE, 0.0)  # older counter from a new place: no move
    assert b.endpoint == GN_SIDE
    open_data(table, third, ELSEWHERE, 0.0)  # newest: the tunnel follows
    assert b.endpoint == ELSEWHERE and b.peer_endpoint == ELSEWHERE
    assert b.endpoints[4] == ELSEWHERE


def test_a_packet_on_next_confirms_it_and_the_old_keypair_keeps_receiving():
    a, table, b = _pair()
    in_flight = a.seal(PACKET, 0.0)  # sent on the old keys before the rekey
    old_b = b.ring.current
    new_a, new_b = keypair_pair(0x0C0C0C0C, 0x0D0D0D0D, now=10.0)
    b.install(new_b)  # the responder's new keypair waits in next
    table.add_keypair(b, new_b)
    assert b.ring.next is new_b and b.ring.current is old_b
    a.install(new_a)  # the initiator's is current at once
    confirm = a.seal(b"", 10.0)
    assert confirm[4:8] == (0x0D0D0D0D).to_bytes(4, "big")
    open_data(table, confirm, GN_SIDE, 10.0)
    assert b.ring.current is new_b and b.ring.previous is old_b
    assert open_data(table, in_flight, GN_SIDE, 10.0)[1] == PACKET  # previous still opens
    assert b.seal(BACK, 10.0)[4:8] == (0x0C0C0C0C).to_bytes(4, "big")  # sends on new


def test_confirmation_drops_are_queued_for_the_handshake_part():
    a, table, b = _pair()
    for n, (ia, ib) in enumerate(((1, 2), (3, 4)), start=1):
        new_a, new_b = keypair_pair(ia, ib, now=float(n))
        b.install(new_b)
        table.add_keypair(b, new_b)
        a.install(new_a)
        open_data(table, a.seal(b"", float(n)), GN_SIDE, float(n))
    # Two rekeys: the first keypair fell off the ring and out of by_index, queued.
    assert [k.local_index for k in table.dropped] == [0x0B0B0B0B]
    assert 0x0B0B0B0B not in table.by_index and {2, 4} <= set(table.by_index)


# --- sending limits -----------------------------------------------------------------------


def test_expired_keys_refuse_sending_and_mark_a_rekey():
    a, _, _ = _pair()
    a.seal(PACKET, 0.0)
    assert not a.rekey_wanted
    with pytest.raises(ExpiredKeys):
        a.seal(PACKET, REJECT_AFTER_TIME)
    assert a.rekey_wanted


def test_the_initiator_wants_a_rekey_after_rekey_after_time():
    a, _, b = _pair()
    a.seal(PACKET, REKEY_AFTER_TIME + 1)
    b.seal(BACK, REKEY_AFTER_TIME + 1)
    assert a.rekey_wanted and not b.rekey_wanted  # only the current keypair's initiator


def test_a_responder_waiting_for_confirmation_is_not_a_rekey():
    _, kb = keypair_pair()
    b = Tunnel(DC_ID, 7, "gn.ntm.example", GN_VIP, PEER_VIP, GN_SIDE, 0.0)
    b.install(kb)
    with pytest.raises(ExpiredKeys):
        b.seal(BACK, 0.0)
    assert not b.rekey_wanted


@given(payload=st.binary(max_size=1500))
def test_round_trip_any_payload(payload):
    a, table, _ = _pair()
    inner = udp_packet(GN_VIP, PEER_VIP, 0)[:20] + payload if payload else b""
    assert open_data(table, a.seal(inner, 0.0), GN_SIDE, 0.0)[1] == inner


# --- TunnelTable ----------------------------------------------------------------------------


def test_table_lookups_replacement_and_removal():
    a, b = tunnel_pair()
    table = TunnelTable()
    assert table.install(b) is None
    assert table.by_ref[(DC_ID, 7)] is b and table.by_fqdn("gn.ntm.example") is b
    assert table.by_index[0x0B0B0B0B] == (b, b.ring.current)
    _, b2 = tunnel_pair(tunnel_id=8)
    assert table.install(b2) is b  # same VIP pair: replaced, and unlinked
    assert (DC_ID, 7) not in table.by_ref
    assert table.by_pair[b.self_vip_packed + b.peer_vip_packed] is b2
    assert table.by_index[0x0B0B0B0B][0] is b2
    table.remove(b2)
    assert len(table) == 0 and not table.by_index and table.removed == [b2]
    table.install(b)
    table.discard(b)
    assert len(table) == 0 and table.removed == [b2]  # discard queues nothing


def test_table_bound():
    from ntma.proto import tunnel as tunnel_mod

    table = TunnelTable()
    for n in range(1, 4):
        t = Tunnel(DC_ID, n, "x.ntm.example", f"10.99.1.{n}", GN_VIP, GN_SIDE, 0.0)
        table.install(t)
    assert not table.full
    old, tunnel_mod.TUNNELS_MAX = tunnel_mod.TUNNELS_MAX, 3
    try:
        assert table.full
    finally:
        tunnel_mod.TUNNELS_MAX = old


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
    top = 2 * WINDOW_BITS + 5
    assert w.accept(top)
    assert not w.check(top - WINDOW_BITS) and not w.accept(top - WINDOW_BITS)
    assert w.check(top - WINDOW_BITS + 1) and w.accept(top - WINDOW_BITS + 1)
    assert not w.accept(0)
    assert WINDOW_BITS >= 8000  # issue 10


def test_replay_window_slide_by_exactly_the_size():
    w = ReplayWindow()
    assert w.accept(0)
    assert w.accept(WINDOW_BITS)  # shift == size: the old window is dropped
    assert not w.accept(0)  # offset WINDOW_BITS: too old
    assert w.accept(1)  # offset WINDOW_BITS - 1: never seen
    assert not w.accept(1)


def test_replay_window_slide_by_one_less_than_the_size():
    w = ReplayWindow()
    assert w.accept(0) and w.accept(1)
    assert w.accept(WINDOW_BITS)  # shift == size - 1: the bit for 1 survives the slide
    assert not w.accept(0)  # offset WINDOW_BITS: too old
    assert not w.accept(1)  # offset WINDOW_BITS - 1: already seen
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


@pytest.mark.parametrize("size", [1, 8, 63, 64, 65, 200, WINDOW_BITS])
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


@pytest.mark.parametrize("size", [64, 100, WINDOW_BITS])
def test_replay_window_matches_a_model_on_a_long_reordered_stream(size):
    """Mostly in order, some late, some replayed: the ring of words across many slides."""
    rng = random.Random(size)
    w, seen, highest = ReplayWindow(size), set(), -1
    for step in range(30_000):
        pick = rng.random()
        if pick < 0.7:
            counter = highest + 1 + rng.randrange(3)
        elif pick < 0.9:
            counter = max(0, highest - rng.randrange(size + 70))
        else:
            counter = highest + rng.randrange(5 * size)
        expected = counter not in seen and (counter > highest or highest - counter < size)
        assert w.check(counter) == expected, step
        assert w.accept(counter) == expected, step
        if expected:
            seen.add(counter)
            highest = max(highest, counter)
    assert w.highest == highest


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
    # The loaded key agrees with the original: the same X25519 with a peer's key.
    peer = StaticKey.generate()
    assert x25519(loaded.private, peer.public) == x25519(peer.private, key.public)


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


def test_two_devices_keep_their_own_tunnels_to_one_peer():
    """An adapter's devices each have a tunnel to the same peer: keyed by the VIP pair, so
    neither replaces the other and each packet finds its own device's tunnel."""
    table = TunnelTable()
    first = Tunnel(DC_ID, 7, "cn.ntm.example", PEER_VIP, GN_VIP, ELSEWHERE, 0.0)
    second = Tunnel(DC_ID, 8, "cn.ntm.example", PEER_VIP, "10.99.0.77", ELSEWHERE, 0.0,
                    self_fqdn="gn2.ntm.example")
    assert table.install(first) is None and table.install(second) is None
    assert table.by_pair[PACKET[12:20]] is first
    assert table.by_pair[udp_packet("10.99.0.77", PEER_VIP, 10)[12:20]] is second
    assert table.by_fqdn("cn.ntm.example", "gn2.ntm.example") is second
    table.discard(first)
    assert table.by_pair.get(PACKET[12:20]) is None and len(table) == 1
