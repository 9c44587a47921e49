"""The v2 responder's cheap checks (proto/gate.py): mac1, cookies under load, budgets,
freshness, lost-response resends, the flood limit and the tables' bounds."""

from __future__ import annotations

import itertools

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntma.proto import gate as gate_mod
from ntma.proto.crypto import StaticKey
from ntma.proto.gate import Admitted, HandshakeGate, Refused, SendCookie, source_prefix
from ntma.proto.handshake import COOKIE_REPLY_LEN, build_init, parse_cookie_reply
from ntma.proto.noise import Initiator, tai64n

DC, NODE = StaticKey.generate(), StaticKey.generate()
SRC = ("198.51.100.7", 40000)
_counter = itertools.count()


def _random(n: int) -> bytes:
    return next(_counter).to_bytes(n, "big")


def _init(cookie: bytes | None = None, responder: bytes = DC.public) -> bytes:
    initiator = Initiator(NODE, responder, X25519PrivateKey.generate())
    return build_init(
        initiator,
        responder_public=responder,
        sender_index=9,
        timestamp=tai64n(1.0),
        body=b"b",
        min_size=0,
        cookie=cookie,
    )


def test_bad_mac1_costs_no_dh_and_is_refused():
    gate = HandshakeGate(DC, 0.0, _random)
    assert gate.admit(_init(responder=NODE.public), SRC, 0.0) == Refused("bad_mac1")
    assert gate.admit(b"\x02\x01\x00\x00", SRC, 0.0) == Refused("malformed_init")
    assert isinstance(gate.admit(_init(), SRC, 0.0), Admitted)


def test_under_load_a_cookie_then_mac2_gets_through():
    gate = HandshakeGate(DC, 0.0, _random, budget_per_s=2, source_budget_per_s=100)
    assert all(isinstance(gate.admit(_init(), SRC, 0.0), Admitted) for _ in range(2))
    init = _init()
    answer = gate.admit(init, SRC, 0.0)
    assert isinstance(answer, SendCookie) and len(answer.datagram) == COOKIE_REPLY_LEN < len(init)
    _, cookie = parse_cookie_reply(
        answer.datagram, responder_public=DC.public, init_mac1=init[-32:-16]
    )
    assert isinstance(gate.admit(_init(cookie=cookie), SRC, 0.6), Admitted)
    # The cookie is bound to the source address and port.
    assert isinstance(gate.admit(_init(cookie=cookie), ("198.51.100.8", 40000), 0.6), SendCookie)
    assert gate.cookies_sent == 2  # what ntma_handshake_cookies_total reports


def test_cookies_survive_one_secret_rotation_and_no_more():
    gate = HandshakeGate(DC, 0.0, _random, budget_per_s=1, source_budget_per_s=100)
    gate.admit(_init(), SRC, 0.0)
    init = _init()
    reply = gate.admit(init, SRC, 0.0)
    _, cookie = parse_cookie_reply(
        reply.datagram, responder_public=DC.public, init_mac1=init[-32:-16]
    )
    gate._budget.tokens = 0.0
    gate._budget.at = 130.0
    gate._budget.rate = 0.0
    assert isinstance(gate.admit(_init(cookie=cookie), SRC, 130.0), Refused)  # mac2 ok, no budget
    assert isinstance(gate.admit(_init(cookie=cookie), SRC, 260.0), SendCookie)  # too old


def test_per_source_budget_counts_ipv6_per_64():
    assert source_prefix("2001:db8:1:2:3::9") == source_prefix("2001:db8:1:2:ffff::1")
    assert source_prefix("::ffff:198.51.100.7") == "198.51.100.7"
    gate = HandshakeGate(DC, 0.0, _random, budget_per_s=1000, source_budget_per_s=3)
    results = [gate.admit(_init(), (f"2001:db8:1:2::{i}", 1), 0.0) for i in range(5)]
    assert [isinstance(r, Admitted) for r in results] == [True, True, True, False, False]
    assert isinstance(gate.admit(_init(), ("2001:db8:1:3::1", 1), 0.0), Admitted)


def test_freshness_replay_resend_and_flood_limit():
    gate = HandshakeGate(DC, 0.0, _random)
    key, t1, t2 = b"k" * 32, tai64n(10.0), tai64n(11.0)
    assert gate.fresh(key, t1, b"init-1", SRC, 0.0) is True
    gate.answered(key, b"init-1", b"resp-1", SRC, 0.0)
    # The same datagram again (our response was lost): the stored response, 3 times at most.
    assert [gate.fresh(key, t1, b"init-1", SRC, 0.5) for _ in range(4)] == [b"resp-1"] * 3 + [False]
    assert gate.fresh(key, t1, b"init-1", ("203.0.113.9", 1), 0.5) is False  # another source
    assert gate.fresh(key, t1, b"init-other", SRC, 0.5) is False  # not newer: a replay
    assert gate.fresh(key, t2, b"init-2", SRC, 0.51) is True
    assert gate.fresh(key, tai64n(12.0), b"init-3", SRC, 0.52) is False  # within 50 ms


def test_stored_responses_are_resent_only_within_the_window():
    gate = HandshakeGate(DC, 0.0, _random)
    key, t1 = b"k" * 32, tai64n(10.0)
    gate.fresh(key, t1, b"init", SRC, 0.0)
    gate.answered(key, b"init", b"resp", SRC, 0.0)
    assert gate.fresh(key, t1, b"init", SRC, gate_mod.RESEND_WINDOW_S + 0.1) is False


def test_unpinned_freshness_is_bounded_and_pinned_keys_stay(monkeypatch):
    monkeypatch.setattr(gate_mod, "FRESHNESS_UNPINNED_MAX", 8)
    gate = HandshakeGate(DC, 0.0, _random)
    gate.fresh(b"pinned", tai64n(5.0), b"i", SRC, 0.0)
    gate.pin(b"pinned")
    for i in range(100):
        gate.fresh(i.to_bytes(4, "big"), tai64n(5.0), b"i", SRC, i * 1.0)
    sizes = gate.table_sizes()
    assert sizes["fresh_lru"] == 8 and sizes["fresh_pinned"] == 1
    assert gate.fresh(b"pinned", tai64n(5.0), b"i", SRC, 200.0) is False  # still remembered
    gate.unpin(b"pinned")
    assert gate.table_sizes()["fresh_pinned"] == 0
