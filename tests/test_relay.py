"""The Relay Server's state machine (v2): RS sessions from any key, bindings made only by a
session's confirmed packets with the DC's grant, forwarding of envelopes and of DATA/SIGNAL
by learnt indexes between bound ends, following an end whose session roams, and the rest
dropped and counted."""

from __future__ import annotations

import random

import pytest
import trio
from structlog.testing import capture_logs

from ntma.io.fake import FakeNetwork
from ntma.observe.spans import Spans
from ntma.proto.bodies_v2 import RelayBind, RelayBound, RelayKeepalive, RsHello, TunnelRef
from ntma.proto.crypto import StaticKey
from ntma.proto.envelope import wrap
from ntma.proto.fields_v2 import Status, dc_id_of
from ntma.proto.grant import Grant, GrantError, check_grant, grant_key, make_grant
from ntma.proto.handshake import T_DATA, T_SIGNAL, header
from ntma.proto.initiate import Indexes, Initiations
from ntma.proto.messages_v2 import REPLY_MAX, BodyKind, MsgType, decode, encode
from ntma.proto.session import Keypair, parse_transport
from ntma.relay.relay import ENTRIES_PER_KEY_MAX, Relay
from ntma.relay.server import run_relay_loop

EPOCH = 1_700_000_000.0
NOW_MS = int(EPOCH * 1000)
A_EP, B_EP, EVIL_EP = ("198.51.100.41", 7401), ("198.51.100.31", 7401), ("203.0.113.66", 666)
RS_EP = ("198.51.100.60", 7500)


class End:
    """A node's RS session, by hand: Initiations for the RS_HELLO, then a keypair."""

    def __init__(self, static: StaticKey, rs: StaticKey, seed: int) -> None:
        self.static, self.rs = static, rs
        self.inits = Initiations(static, Indexes(random.Random(seed).randbytes))
        self.keypair: Keypair | None = None

    def hello(self, now: float = 0.0) -> bytes:
        body = encode(RsHello(1))
        self.pending = self.inits.start(
            self.rs.public, body, REPLY_MAX[MsgType.RS_HELLO], now, EPOCH + now
        )
        return self.pending.datagram

    def welcome(self, datagram: bytes, now: float = 0.0) -> None:
        pending, remote, _, keys = self.inits.on_response(datagram)
        self.keypair = Keypair(keys.send, keys.receive, pending.sender_index, remote, now, True)

    def signal(self, msg) -> bytes:
        return self.keypair.seal(T_SIGNAL, encode(msg))

    def open(self, datagram: bytes):
        _, _, counter = parse_transport(datagram)
        return decode(self.keypair.open(datagram, counter), where=BodyKind.SESSION)


class World:
    def __init__(self) -> None:
        self.dc, self.rs = StaticKey.generate(), StaticKey.generate()
        self.dc_id = dc_id_of(self.dc.public)
        self.a, self.b, self.evil = (StaticKey.generate() for _ in range(3))
        self.relay = Relay(
            static=self.rs,
            dc_public=self.dc.public,
            idle_timeout=60,
            random_bytes=random.Random(9).randbytes,
            epoch_offset=EPOCH,
        )
        self.key = grant_key(self.dc, self.rs.public)
        self.ends = {}

    def grant(self, tunnel_id=7, expires_ms=NOW_MS + 60_000, ends=None, dc_id=None) -> bytes:
        end_a, end_b = ends or (self.a.public, self.b.public)
        grant = Grant(dc_id or self.dc_id, tunnel_id, expires_ms, end_a, end_b)
        return make_grant(self.key, grant)

    def send(self, datagram: bytes, addr, now=0.0) -> list:
        self.relay.receive(datagram, addr, now)
        return self.relay.datagrams_to_send()

    def session(self, who: StaticKey, addr, now=0.0) -> End:
        end = self.ends.get(who.public)
        if end is None:
            end = self.ends[who.public] = End(who, self.rs, len(self.ends) + 1)
            ((welcome, to),) = self.send(end.hello(now), addr, now)
            assert to == addr
            end.welcome(welcome, now)
        return end

    def bind(self, who: StaticKey, grant: bytes, addr, now=0.0) -> list:
        end = self.session(who, addr, now)
        return self.send(end.signal(RelayBind(1, grant)), addr, now)


def data(index: int, counter: int = 0) -> bytes:
    return header(T_DATA) + index.to_bytes(4, "big") + counter.to_bytes(8, "big") + bytes(40)


def init_from(sender_index: int) -> bytes:
    """A stand-in HANDSHAKE_INIT (the RS never opens it): its sender index is what counts."""
    return header(1) + sender_index.to_bytes(4, "big") + bytes(170)


def resp_from(sender_index: int, receiver_index: int) -> bytes:
    return (
        header(2) + sender_index.to_bytes(4, "big") + receiver_index.to_bytes(4, "big") + bytes(100)
    )


@pytest.fixture
def w() -> World:
    return World()


def _bound(w: World) -> None:
    w.bind(w.a, w.grant(), A_EP)
    w.bind(w.b, w.grant(), B_EP)
    # The ends' handshake through the relay: A chose index 111, B chose 222.
    assert w.send(wrap(w.dc_id, 7, init_from(111)), A_EP) == [
        (wrap(w.dc_id, 7, init_from(111)), B_EP)
    ]
    assert len(w.send(wrap(w.dc_id, 7, resp_from(222, 111)), B_EP)) == 1


def test_grant_key_is_shared_and_grants_verify(w):
    assert grant_key(w.rs, w.dc.public) == w.key
    grant = check_grant(w.key, w.grant(), NOW_MS, w.dc_id)
    assert grant.tunnel_id == 7 and grant.side_of(w.b.public) == 1 and len(w.grant()) == 104
    with pytest.raises(GrantError):
        grant.side_of(w.evil.public)
    with pytest.raises(GrantError):
        check_grant(w.key, w.grant(), NOW_MS, dc_id=bytes(8))  # another DC's tunnel


def test_bound_ends_relay_both_ways_opaquely(w):
    ((reply, to),) = w.bind(w.a, w.grant(), A_EP)
    assert to == A_EP
    bound = w.ends[w.a.public].open(reply)
    assert isinstance(bound, RelayBound) and bound.status == Status.OK
    assert (bound.dc_id, bound.tunnel_id, bound.observed) == (w.dc_id, 7, A_EP)
    _bound(w)
    assert w.send(data(222), A_EP, 1.0) == [(data(222), B_EP)]  # A -> B with B's index
    assert w.send(data(111, 1), B_EP, 1.0) == [(data(111, 1), A_EP)]
    assert w.send(data(333), A_EP, 1.0) == [] and w.relay.drops["no_binding"] == 1


def test_an_end_whose_session_roams_is_followed(w):
    _bound(w)
    moved = ("198.51.100.41", 50000)
    assert w.send(data(222), moved, 1.0) == [] and w.relay.drops["no_binding"] == 1
    end = w.ends[w.a.public]
    refs = (TunnelRef(w.dc_id, 7),)
    assert w.send(end.signal(RelayKeepalive(refs)), moved, 2.0) == []  # no answer to a keep-alive
    assert w.send(data(222, 1), moved, 3.0) == [(data(222, 1), B_EP)]
    assert w.send(data(111, 2), B_EP, 3.0) == [(data(111, 2), moved)]
    assert w.send(data(222, 2), A_EP, 3.0) == []  # the old address no longer speaks for A


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no grant", "no_binding"),
        ("expired grant", "expired_grant"),
        ("forged grant", "bad_grant"),
        ("another DC's grant", "bad_grant"),
        ("grant for another tunnel", "unbound_source"),
        ("not an end", "not_an_end"),
        ("colliding grant", "grant_collision"),
        ("replayed bind", "replayed"),
        ("garbage", "unexpected_type"),
    ],
)
def test_abuse_is_dropped_counted_and_never_forwarded(w, case, reason):
    w.bind(w.b, w.grant(), B_EP)  # the real far end is bound and reachable
    if case == "no grant":
        w.send(data(222), EVIL_EP, 1.0)
        w.send(wrap(w.dc_id, 99, init_from(5)), EVIL_EP, 1.0)
    elif case == "expired grant":
        w.bind(w.a, w.grant(expires_ms=NOW_MS - 1), EVIL_EP)
    elif case == "forged grant":
        forged = bytearray(w.grant())
        forged[20] ^= 0xFF  # push the expiry out
        w.bind(w.a, bytes(forged), EVIL_EP)
    elif case == "another DC's grant":
        w.bind(w.a, w.grant(dc_id=b"otherdc!"), EVIL_EP)
    elif case == "grant for another tunnel":
        w.bind(w.a, w.grant(tunnel_id=8), EVIL_EP)  # a valid grant, but for tunnel 8
        w.send(wrap(w.dc_id, 7, init_from(5)), EVIL_EP, 1.0)  # ... used to send into tunnel 7
    elif case == "not an end":
        w.bind(w.evil, w.grant(), EVIL_EP)
    elif case == "colliding grant":
        w.bind(w.evil, w.grant(ends=(w.evil.public, w.b.public)), EVIL_EP)  # same tunnel id
    elif case == "replayed bind":
        end = w.session(w.a, A_EP)
        bind = end.signal(RelayBind(1, w.grant()))
        w.send(bind, A_EP)
        w.relay.drops.clear()
        w.send(bind, EVIL_EP, 1.0)  # a recording of A's bind, from elsewhere
        assert w.relay.entries[(w.dc_id, 7)].bound[0] == A_EP
    else:
        w.send(b"\x02\x40" + bytes(80), EVIL_EP, 1.0)
    sent = w.send(data(222, 5), EVIL_EP, 1.0)
    assert all(to != B_EP for _, to in sent)  # nothing reached the real end
    assert w.relay.drops[reason] >= 1
    assert w.relay.forwarded == 0


def test_at_most_so_many_entries_per_end_key(w, monkeypatch):
    monkeypatch.setattr("ntma.relay.relay.ENTRIES_PER_KEY_MAX", 3)
    for tunnel_id in range(1, 6):
        w.bind(w.a, w.grant(tunnel_id=tunnel_id), A_EP)
    assert len(w.relay.entries) == 3 and w.relay.drops["too_many_entries"] == 2
    assert ENTRIES_PER_KEY_MAX == 1024


def test_idle_relays_are_dropped_with_their_indexes(w):
    _bound(w)
    w.relay.handle_timer(30.0)
    assert (w.dc_id, 7) in w.relay.entries
    w.relay.handle_timer(61.0)
    assert not w.relay.entries and not w.relay._forward
    assert w.send(data(222), A_EP, 62.0) == [] and w.relay.drops["no_binding"] == 1


async def test_the_server_logs_binds_counts_forwarded_and_drops_idle_relays(autojump_clock):
    net, spans = FakeNetwork(), Spans()
    w = World()
    relay = Relay(  # its `now` is trio's clock here, at EPOCH on the wall clock
        static=w.rs,
        dc_public=w.dc.public,
        idle_timeout=60,
        epoch_offset=EPOCH - trio.current_time(),
    )
    a, b = net.attach(A_EP), net.attach(B_EP)

    async def session(udp, who: StaticKey, seed: int) -> End:
        end = End(who, w.rs, seed)
        await udp.send_batch([(end.hello(), RS_EP)])
        ((welcome, _),) = await udp.recv_batch(8)
        end.welcome(welcome)
        await udp.send_batch([(end.signal(RelayBind(1, w.grant())), RS_EP)])
        await udp.recv_batch(8)  # RELAY_BOUND
        return end

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_relay_loop, relay, net.attach(RS_EP), spans)
            await session(a, w.a, 1)
            await session(b, w.b, 2)
            await a.send_batch([(wrap(w.dc_id, 7, init_from(111)), RS_EP)])
            await b.recv_batch(8)
            await b.send_batch([(wrap(w.dc_id, 7, resp_from(222, 111)), RS_EP)])
            await a.recv_batch(8)
            await a.send_batch([(data(222), RS_EP)])
            assert await b.recv_batch(8) == [(data(222), RS_EP)]
            stats = spans.stages["relay"]
            assert dict(stats.counters) == {"forwarded": 3, "relays": 1}
            await trio.sleep(70)  # idle past idle_timeout (60 s), then the next sweep
            assert dict(stats.counters) == {"forwarded": 3, "relays": 0}
            nursery.cancel_scope.cancel()
    bound = [e for e in logs if e["event"] == "relay_bound"]
    assert [(e["tunnel"], e["side"], e["endpoint"], e["moved"]) for e in bound] == [
        (7, 0, "198.51.100.41:7401", False),
        (7, 1, "198.51.100.31:7401", False),
    ]
    dropped = [e for e in logs if e["event"] == "relay_idle_dropped"]
    assert [(e["tunnel"], e["forwarded"], e["stage"]) for e in dropped] == [(7, 3, "relay")]
