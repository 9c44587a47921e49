"""The rules protocol v2 adds (docs/protocol.md 4.3 to 4.5, 5, 7.1, 9), checked on the
machines over the in-memory network: what a stranger can make the DC and the RS spend and
send, replays of recorded signalling, the probe port, in-session retransmission."""

from __future__ import annotations

import random

import pytest

from ntma.dc.events import NodeMoved, NodeRegistered, RouteDecided
from ntma.proto import noise
from ntma.proto.bodies_v2 import Register, RsHello
from ntma.proto.crypto import StaticKey
from ntma.proto.gate import Refused
from ntma.proto.handshake import T_INIT, T_SIGNAL
from ntma.proto.initiate import Indexes, Initiations
from ntma.proto.messages_v2 import REPLY_MAX, MsgType, encode
from ntma.proto.node import Registered

from .sim import DC_EP, DC_PROBE, EPOCH, RS_EP, Net

EVIL = ("203.0.113.66", 6666)


def _registered_net(**kwargs) -> Net:
    net = Net(fake_tunnels=True, **kwargs)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401))
    net.add_node("cn", ("10.10.2.2", 7401), ("198.51.100.31", 7401))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    return net


def _sent_by(net: Net, src, kind: int | None = None, to=None) -> list[bytes]:
    return [
        d
        for s, t, d in net.sent
        if s == src and (kind is None or d[1] == kind) and (to is None or t == to)
    ]


def _init(static: StaticKey, responder: bytes, body, reply_type: MsgType) -> bytes:
    inits = Initiations(static, Indexes(random.Random(3).randbytes))
    return inits.start(responder, encode(body), REPLY_MAX[reply_type], 0.0, EPOCH).datagram


# --- cost and size for strangers -----------------------------------------------------------


@pytest.fixture
def dh_calls(monkeypatch) -> list[int]:
    calls = []
    real = noise.x25519

    def counting(private, public):
        calls.append(1)
        return real(private, public)

    monkeypatch.setattr(noise, "x25519", counting)
    return calls


def test_a_strangers_packets_cost_no_x25519(dh_calls):
    net = _registered_net()
    stranger = StaticKey.generate()
    wrong_key = _init(
        stranger, StaticKey.generate().public, Register(1, 1, "mn.ntm.example"), MsgType.REGISTER
    )
    rng = random.Random(5)
    junk = [bytes([2, t, 0, 0]) + rng.randbytes(200) for t in range(1, 7)]
    dh_calls.clear()
    for datagram in [wrong_key, *junk]:
        for target in (DC_EP, DC_PROBE, RS_EP, net.outside["mn"]):
            net.inject(datagram, EVIL, target)
    assert dh_calls == []
    assert net.dc.gate.admit(wrong_key, EVIL, net.now) == Refused("bad_mac1")
    assert net.dc.drops["bad_mac1"] >= 1 and net.relay.drops["bad_mac1"] >= 1


def test_no_reply_to_an_unconfirmed_source_is_larger_than_its_request():
    """Mutations of every datagram a normal run sent, random bytes and exact replays, from
    strangers' addresses, at the DC's two ports and the RS: every reply measured."""
    net = _registered_net()
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(1.0)
    captured = [d for _, _, d in net.sent]
    rng = random.Random(11)
    replies = 0
    for i in range(4000):
        datagram = bytearray(rng.choice(captured))
        if i % 4:
            for _ in range(rng.randint(1, 4)):
                datagram[rng.randrange(len(datagram))] = rng.randrange(256)
        if i % 50 == 0:  # a fresh RS_HELLO from a new key: the RS answers it
            datagram = bytearray(
                _init(StaticKey.generate(), net.rs_key.public, RsHello(i), MsgType.RS_HELLO)
            )
        elif i % 7 == 0:
            datagram = bytearray(
                bytes([2, rng.randint(0, 7), 0, 0]) + rng.randbytes(rng.randint(0, 300))
            )
        source = (f"203.0.113.{rng.randint(1, 254)}", rng.randint(1, 65535))
        for target in (DC_EP, DC_PROBE, RS_EP):
            out = _feed(net, bytes(datagram), source, target)
            for reply, to in out:
                replies += 1
                assert to == source and len(reply) <= len(datagram)
    assert replies >= 4000 // 50  # the RS answered every fresh RS_HELLO, never larger
    assert net.dc.sessions.keys() == {net.keys["mn"].public, net.keys["cn"].public}


def _feed(net: Net, datagram: bytes, source, target) -> list:
    if target == DC_EP:
        net.dc.receive(datagram, source, net.now)
        return net.dc.datagrams_to_send()
    if target == DC_PROBE:
        net.dc.receive_probe(datagram, source, net.now)
        return net.dc.probe_datagrams_to_send()
    net.relay.receive(datagram, source, net.now)
    return net.relay.datagrams_to_send()


# --- replays -------------------------------------------------------------------------------


def test_a_replayed_register_init_changes_nothing():
    net = _registered_net()
    (init, *_) = _sent_by(net, net.outside["mn"], T_INIT, DC_EP)
    session = net.dc.sessions[net.keys["mn"].public]
    before = (session.endpoint, session.current)
    net.dc_events.clear()
    for source in (net.outside["mn"], EVIL):
        net.now += 6.0  # past the lost-response window
        net.inject(init, source, DC_EP)
        net.run(0.5)
    assert net.dc.drops["replayed_init"] == 2
    assert (session.endpoint, session.current) == before and not net.dc.table.pending
    assert not [e for e in net.dc_events if isinstance(e, NodeRegistered | NodeMoved)]
    # After a DC restart the store still knows the key's greatest timestamp.
    net.dc = net.make_dc()
    net.inject(init, EVIL, DC_EP)
    assert net.dc.drops["init_ts_behind"] == 1 and not net.dc.table.pending


def test_an_init_never_answered_commits_nothing_without_key_confirmation():
    net = Net(fake_tunnels=True)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401))
    net.drop = lambda d, src, dst: dst == DC_EP  # the DC never sees mn's first inits
    net.nodes["mn"].start(net.now)
    net.run(0.2)
    (recorded, *_) = _sent_by(net, net.outside["mn"], T_INIT, DC_EP)
    net.drop = lambda d, s, t: False
    net.dc.receive(recorded, EVIL, net.now)  # fresh timestamp: answered, to the source
    ((reply, to),) = net.dc.datagrams_to_send()
    assert to == EVIL and len(reply) <= len(recorded)
    assert not net.dc.sessions and len(net.dc.table.pending) == 1  # promised, not committed
    net.now += 20.0
    net.dc.handle_timer(net.now)
    assert not net.dc.table.pending and not net.dc.sessions  # and forgotten


def test_the_probe_port_moves_nothing():
    net = _registered_net()
    mn = net.keys["mn"].public
    session = net.dc.sessions[mn]
    endpoint = session.endpoint
    keepalive = _sent_by(net, net.outside["mn"], T_SIGNAL, DC_EP)[-1]
    net.inject(keepalive, EVIL, DC_PROBE)  # a main-port message on the probe port
    assert net.dc.drops["probe_port_message"] + net.dc.drops["replayed"] == 1
    net.nodes["mn"].session.probe(net.now)  # a real PROBE, from another mapping
    datagrams = net.nodes["mn"].datagrams_to_send()
    for datagram, _ in datagrams:
        net.inject(datagram, ("198.51.100.41", 45000), DC_PROBE)
    assert session.endpoint == endpoint and session.probe_observed == {4: ("198.51.100.41", 45000)}
    assert not [e for e in net.dc_events if isinstance(e, NodeMoved)]


def test_in_session_retransmission_gets_the_cached_answer():
    net = _registered_net()
    dropped = []

    def lose_first_answer(datagram, src, dst):
        if src == DC_EP and dst == net.outside["mn"] and datagram[1] == T_SIGNAL and not dropped:
            dropped.append(datagram)
            return True
        return False

    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.drop = lose_first_answer
    net.run(2.0)
    assert dropped
    assert len([e for e in net.dc_events if isinstance(e, RouteDecided)]) == 1
    assert len(net.handshakes("mn").directions) == 1  # the resent answer arrived
    assert len(net.dc.tunnels) == 1  # one tunnel directed, not two


def test_a_relay_bind_replayed_from_another_source_moves_nothing():
    net = Net(fake_tunnels=True)
    net.add_node("mn", ("10.10.1.2", 7401), ("198.51.100.41", 7401), ("198.51.100.41", 40001))
    net.add_node("cn", ("10.10.2.2", 7401), ("198.51.100.31", 7401), ("198.51.100.31", 40002))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(1.0)
    (entry,) = net.relay.entries.values()
    bound = list(entry.bound)
    signals = _sent_by(net, net.outside["mn"], T_SIGNAL, RS_EP)
    assert signals
    for datagram in signals:
        net.inject(datagram, EVIL, RS_EP)
    assert entry.bound == bound
    assert net.relay.drops["replayed"] == len(signals)
    assert EVIL not in net.relay._at_endpoint


def test_an_rs_hello_from_any_key_opens_a_session_but_binds_nothing():
    net = Net(fake_tunnels=True)
    stranger = StaticKey.generate()
    init = _init(stranger, net.rs_key.public, RsHello(1), MsgType.RS_HELLO)
    net.inject(init, EVIL, RS_EP)
    ((_, to, reply),) = [x for x in net.sent if x[0] == RS_EP]
    assert to == EVIL and len(reply) <= len(init)
    assert not net.relay.entries and not net.relay._by_key  # not even confirmed


def test_registered_event_once_per_registration_not_per_rekey():
    net = _registered_net()
    net.run(1805.0, step=1.0)  # past the node<->DC rekey (1,800 s)
    assert len([e for e in net.events["mn"] if isinstance(e, Registered)]) == 1
    session = net.dc.sessions[net.keys["mn"].public]
    assert session.previous is not None  # rekeyed in place: same session, new keypair
