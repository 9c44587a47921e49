"""The Relay Server's state machine: it relays only granted tunnels between their bound
ends, follows an end that binds again from a new address, and drops the rest."""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

from ntma.io.fake import FakeNetwork
from ntma.observe.spans import Spans
from ntma.proto.crypto import SignalBox, StaticKey
from ntma.proto.grant import Grant, GrantError, check_grant, grant_key, make_grant
from ntma.proto.messages import RelayBind, RelayBound
from ntma.proto.packet import open_message, pack_data_header, seal_message, wrap_envelope
from ntma.relay.relay import Relay
from ntma.relay.server import run_relay_loop

EPOCH = 1_700_000_000.0
NOW_MS = int(EPOCH * 1000)
A_EP, B_EP, EVIL_EP = ("198.51.100.41", 7401), ("198.51.100.31", 7401), ("203.0.113.66", 666)


class World:
    def __init__(self) -> None:
        self.dc, self.rs = StaticKey.generate(), StaticKey.generate()
        self.a, self.b, self.evil = (StaticKey.generate() for _ in range(3))
        self.relay = Relay(
            static=self.rs, dc_public=self.dc.public, idle_timeout=60, epoch_offset=EPOCH
        )
        self.key = grant_key(self.dc, self.rs.public)

    def grant(self, tunnel_id=7, expires_ms=NOW_MS + 60_000, ends=None) -> bytes:
        end_a, end_b = ends or (self.a.public, self.b.public)
        return make_grant(self.key, Grant(tunnel_id, expires_ms, end_a, end_b))

    def bind(self, who: StaticKey, grant: bytes, addr, now=0.0, timestamp_ms=NOW_MS):
        box = SignalBox(who, self.rs.public)
        packet = seal_message(RelayBind(1, timestamp_ms, grant), box, who.public, bytes(12))
        self.relay.receive(packet, addr, now)
        return [(d, to) for d, to in self.relay.datagrams_to_send()]


def data(tunnel_id: int, counter: int = 0) -> bytes:
    return pack_data_header(tunnel_id, counter) + b"\x00" * 40


@pytest.fixture
def w() -> World:
    return World()


def test_grant_key_is_shared_and_grants_verify(w):
    assert grant_key(w.rs, w.dc.public) == w.key
    grant = check_grant(w.key, w.grant(), NOW_MS)
    assert grant.tunnel_id == 7 and grant.side_of(w.b.public) == 1
    with pytest.raises(GrantError):
        grant.side_of(w.evil.public)


def test_bound_ends_relay_both_ways_opaquely(w):
    ((reply, to),) = w.bind(w.a, w.grant(), A_EP)
    assert to == A_EP
    _, bound = open_message(reply, {w.rs.public: SignalBox(w.a, w.rs.public)}.get)
    assert isinstance(bound, RelayBound) and bound.tunnel_id == 7 and bound.observed == A_EP
    w.bind(w.b, w.grant(), B_EP)
    packet = data(7)
    w.relay.receive(packet, A_EP, 1.0)
    assert w.relay.datagrams_to_send() == [(packet, B_EP)]
    envelope = wrap_envelope(7, b"sealed signalling")
    w.relay.receive(envelope, B_EP, 1.0)
    assert w.relay.datagrams_to_send() == [(envelope, A_EP)]


def test_an_end_that_moves_is_followed_after_binding_again(w):
    w.bind(w.a, w.grant(), A_EP)
    w.bind(w.b, w.grant(), B_EP)
    moved = ("198.51.100.41", 50000)
    w.relay.receive(data(7), moved, 1.0)
    assert w.relay.datagrams_to_send() == [] and w.relay.drops["unbound_source"] == 1
    w.bind(w.a, w.grant(), moved, now=2.0)
    w.relay.receive(data(7, 1), moved, 3.0)
    assert w.relay.datagrams_to_send() == [(data(7, 1), B_EP)]
    w.relay.receive(data(7, 2), A_EP, 3.0)  # the old address no longer speaks for A
    assert w.relay.datagrams_to_send() == []


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no grant", "no_binding"),
        ("expired grant", "expired_grant"),
        ("forged grant", "bad_grant"),
        ("grant for another tunnel", "unbound_source"),
        ("not an end", "not_an_end"),
        ("stale bind", "stale_bind"),
        ("garbage", "malformed"),
    ],
)
def test_abuse_is_dropped_counted_and_never_forwarded(w, case, reason):
    w.bind(w.b, w.grant(), B_EP)  # the real far end is bound and reachable
    if case == "no grant":
        w.relay.receive(data(7), EVIL_EP, 1.0)
        w.relay.receive(data(99), EVIL_EP, 1.0)
    elif case == "expired grant":
        w.bind(w.a, w.grant(expires_ms=NOW_MS - 1), EVIL_EP)
    elif case == "forged grant":
        forged = bytearray(w.grant())
        forged[5] ^= 0xFF  # push the expiry out
        w.bind(w.a, bytes(forged), EVIL_EP)
    elif case == "grant for another tunnel":
        w.bind(w.a, w.grant(tunnel_id=8), EVIL_EP)  # a valid grant, but for tunnel 8
        w.relay.receive(data(7), EVIL_EP, 1.0)  # ... used to send into tunnel 7
    elif case == "not an end":
        w.bind(w.evil, w.grant(), EVIL_EP)
    elif case == "stale bind":
        w.bind(w.a, w.grant(), EVIL_EP, timestamp_ms=NOW_MS - 600_000)
    else:
        w.relay.receive(b"\x01\x40" + bytes(80), EVIL_EP, 1.0)
    w.relay.receive(data(7, 5), EVIL_EP, 1.0)
    sent = w.relay.datagrams_to_send()
    assert all(to != B_EP for _, to in sent)  # nothing reached the real end
    assert w.relay.drops[reason] >= 1
    assert w.relay.forwarded == 0


def test_idle_relays_are_dropped(w):
    w.bind(w.a, w.grant(), A_EP)
    w.bind(w.b, w.grant(), B_EP)
    w.relay.handle_timer(30.0)
    assert 7 in w.relay.entries
    w.relay.handle_timer(61.0)
    assert 7 not in w.relay.entries
    w.relay.receive(data(7), A_EP, 62.0)
    assert w.relay.datagrams_to_send() == [] and w.relay.drops["no_binding"] == 1


async def test_the_server_logs_binds_counts_forwarded_and_drops_idle_relays(autojump_clock):
    net, spans = FakeNetwork(), Spans()
    w = World()
    relay = Relay(  # its `now` is trio's clock here, at EPOCH on the wall clock
        static=w.rs,
        dc_public=w.dc.public,
        idle_timeout=60,
        epoch_offset=EPOCH - trio.current_time(),
    )
    rs_ep = ("198.51.100.60", 7500)
    a, b = net.attach(A_EP), net.attach(B_EP)

    def bind(who: StaticKey) -> bytes:
        box = SignalBox(who, w.rs.public)
        return seal_message(RelayBind(1, NOW_MS, w.grant()), box, who.public, bytes(12))

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_relay_loop, relay, net.attach(rs_ep), spans)
            await a.send_batch([(bind(w.a), rs_ep)])
            await a.recv_batch(8)  # RELAY_BOUND
            await b.send_batch([(bind(w.b), rs_ep)])
            await b.recv_batch(8)
            await a.send_batch([(data(7), rs_ep)])
            assert await b.recv_batch(8) == [(data(7), rs_ep)]
            stats = spans.stages["relay"]
            assert dict(stats.counters) == {"forwarded": 1, "relays": 1}
            await trio.sleep(70)  # idle past idle_timeout (60 s), then the next sweep
            assert dict(stats.counters) == {"forwarded": 1, "relays": 0}
            nursery.cancel_scope.cancel()
    bound = [e for e in logs if e["event"] == "relay_bound"]
    assert [(e["tunnel"], e["side"], e["endpoint"], e["moved"]) for e in bound] == [
        (7, 0, "198.51.100.41:7401", False),
        (7, 1, "198.51.100.31:7401", False),
    ]
    dropped = [e for e in logs if e["event"] == "relay_idle_dropped"]
    assert [(e["tunnel"], e["forwarded"], e["stage"]) for e in dropped] == [(7, 1, "relay")]
