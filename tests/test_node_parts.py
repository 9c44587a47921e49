"""The node's signalling parts on their own: the DC session's states, one tunnel's
Handshake, relay bindings, and the machine's purity (injected randomness and keys)."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import replace

import structlog
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from structlog.testing import capture_logs

from ntma.observe.spans import StageStats
from ntma.proto.crypto import SignalBox, StaticKey
from ntma.proto.messages import (
    GRANT_LEN,
    Direction,
    KeepaliveAck,
    RegisterAck,
    RelayBound,
    RelayInfo,
    Role,
    Route,
    RouteDirection,
    Status,
)
from ntma.proto.node import (
    DcUnreachable,
    DirectionResolved,
    NodeSignalling,
    NodeTx,
    Registered,
    RegistrationFailed,
    SessionState,
    TunnelUp,
)
from ntma.proto.node.handshake import PUNCH_FALLBACK_S, Handshake
from ntma.proto.node.relay import RELAY_REBIND_S, RelayBindings
from ntma.proto.node.session import REFUSED_RETRY_S, REGISTER_TIMEOUT_S, DcSession
from ntma.proto.node.wire import TunnelBeingBuilt, Wire
from ntma.proto.packet import open_message, seal_message, unpack_data_header
from ntma.stages.keepalive import EXPIRE_S, keepalive_round
from ntma.stages.signalling import DirectionBroker, _count_drops, run_signalling

from .sim import Net

DC_EP = ("198.51.100.10", 7400)
HOME = ("10.10.1.2", 7401)


def _seeded(seed: int):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def _keys(seed: int):
    """Deterministic ephemeral keys: X25519 takes any 32 bytes as a private key."""
    counter = itertools.count(seed)
    return lambda: X25519PrivateKey.from_private_bytes(next(counter).to_bytes(32, "big"))


def _wire(seed: int = 1) -> Wire:
    return Wire(
        static=StaticKey.generate(),
        dc_public=StaticKey.generate().public,
        dc_endpoint=DC_EP,
        random_bytes=_seeded(seed),
        epoch_offset=1.7e9,
    )


def _session() -> tuple[Wire, DcSession]:
    wire = _wire()
    return wire, DcSession(wire, "mn.ntm.example", lambda: [HOME])


def _txid(wire: Wire, kind: NodeTx) -> int:
    (tx,) = wire.tx.find(kind)
    return tx.txid


def _ok(txid: int, keepalive_s: int = 5) -> RegisterAck:
    return RegisterAck(txid, Status.OK, "10.99.0.2", 16, ("198.51.100.41", 7401), keepalive_s)


# --- the DC session ---------------------------------------------------------------------


def test_session_registers_then_keeps_alive():
    wire, session = _session()
    assert session.state == SessionState.UNREGISTERED and session.vip == "0.0.0.0"
    session.register(0.0)
    assert session.state == SessionState.REGISTERING and len(wire.out) == 1
    assert session.on_register_ack(_ok(_txid(wire, NodeTx.REGISTER)), 0.1)
    wire.tx.finish(_txid(wire, NodeTx.REGISTER))
    assert session.state == SessionState.REGISTERED and session.vip == "10.99.0.2"
    (event,) = wire.events
    assert isinstance(event, Registered) and event.behind_nat  # the DC saw another endpoint
    assert session.keepalive_at == 5.1
    session.handle_timer(5.1)
    assert wire.tx.find(NodeTx.KEEPALIVE) and session.keepalive_at is None
    session.on_keepalive_ack(KeepaliveAck(_txid(wire, NodeTx.KEEPALIVE), Status.OK), 5.2)
    assert session.state == SessionState.REGISTERED and session.keepalive_at == 10.2


def test_session_reregisters_on_request_and_keeps_its_vip_meanwhile():
    wire, session = _session()
    session.register(0.0)
    session.on_register_ack(_ok(_txid(wire, NodeTx.REGISTER)), 0.1)
    wire.tx.finish(_txid(wire, NodeTx.REGISTER))
    session.handle_timer(5.1)
    session.on_keepalive_ack(KeepaliveAck(_txid(wire, NodeTx.KEEPALIVE), Status.REREGISTER), 5.2)
    assert session.state == SessionState.REGISTERING
    assert session.vip == "10.99.0.2"  # tunnels keep their VIP while we register again
    assert not wire.tx.find(NodeTx.KEEPALIVE) and len(wire.tx.find(NodeTx.REGISTER)) == 1


def test_session_refused_waits_then_asks_again():
    wire, session = _session()
    session.register(0.0)
    refusal = RegisterAck(_txid(wire, NodeTx.REGISTER), Status.REFUSED, reason="no")
    wire.tx.finish(refusal.txid)
    assert not session.on_register_ack(refusal, 0.1)
    assert session.state == SessionState.REFUSED
    assert isinstance(wire.events[-1], RegistrationFailed)
    session.handle_timer(0.1 + REFUSED_RETRY_S - 0.01)
    assert session.state == SessionState.REFUSED
    session.handle_timer(0.1 + REFUSED_RETRY_S)
    assert session.state == SessionState.REGISTERING and session.retry_at is None


def test_session_unanswered_loses_the_vip_and_registers_again():
    wire, session = _session()
    session.register(0.0)
    session.on_register_ack(_ok(_txid(wire, NodeTx.REGISTER)), 0.1)
    session.on_unanswered(NodeTx.KEEPALIVE, 12.0)
    assert wire.events[-1] == DcUnreachable("keepalive")
    assert session.registration is None and session.state == SessionState.REGISTERING


def test_session_deregister_only_when_holding_a_vip():
    wire, session = _session()
    session.deregister(0.0)
    assert not wire.out
    session.register(0.0)
    session.on_register_ack(_ok(_txid(wire, NodeTx.REGISTER)), 0.1)
    session.deregister(1.0)
    assert session.state == SessionState.UNREGISTERED and session.registration is None
    assert wire.tx.find(NodeTx.DEREGISTER) and session.keepalive_at is None


# --- one handshake ----------------------------------------------------------------------


def _pair(route: Route) -> tuple[StaticKey, Handshake, StaticKey, Handshake]:
    a, b = StaticKey.generate(), StaticKey.generate()
    keys = _keys(7)

    def direction(role: Role, peer: StaticKey, fqdn: str, vip: str) -> Direction:
        return Direction(42, route, role, fqdn, vip, peer.public, [("198.51.100.9", 7401)])

    initiator = Handshake(direction(Role.INITIATE, b, "cn", "10.99.0.3"), keys(), 1)
    responder = Handshake(direction(Role.RESPOND, a, "mn", "10.99.0.2"), keys(), 2)
    return a, initiator, b, responder


def test_handshake_both_ends_derive_matching_keys():
    a, initiator, b, responder = _pair(Route.DIRECT)
    request = initiator.request("10.99.0.2", 1_700_000_000_000)
    assert request.txid == 1 and request.tunnel_id == 42
    response = responder.response(request, "10.99.0.3")
    assert response.txid == request.txid  # the answer names the request it answers
    mn = initiator.tunnel(a, response.ephemeral, ("198.51.100.9", 7401), 1.0, via_relay=False)
    cn = responder.tunnel(b, request.ephemeral, ("198.51.100.8", 7401), 1.0, via_relay=False)
    datagram = mn.seal(b"hello")
    assert cn.open(datagram, unpack_data_header(datagram)[1]) == b"hello"
    assert mn.route == cn.route == "direct" and mn.peer_fqdn == "cn"


def test_handshake_route_is_the_one_taken():
    a, initiator, _, responder = _pair(Route.PUNCH)
    direct = Handshake(replace(initiator.direction, route=Route.DIRECT), initiator.ephemeral, 1)
    assert initiator.timeout() == direct.timeout() + PUNCH_FALLBACK_S  # room to fall back
    peer_ephemeral = responder.response(initiator.request("x", 0), "y").ephemeral
    fell_back = initiator.tunnel(a, peer_ephemeral, ("198.51.100.60", 7500), 0.0, via_relay=True)
    assert fell_back.route == "relay"  # a PUNCH that fell back is a relay tunnel
    punched = initiator.tunnel(a, peer_ephemeral, ("198.51.100.9", 7401), 0.0, via_relay=False)
    assert punched.route == "punch"


# --- relay bindings ---------------------------------------------------------------------

RELAY = RelayInfo(("198.51.100.60", 7500), StaticKey.generate().public, bytes(GRANT_LEN))


def test_relay_binding_rebinds_while_needed_and_is_dropped_after():
    wire = _wire()
    relays = RelayBindings(wire)
    relays.bind(42, RELAY, 0.0)
    ((_, to),) = wire.out
    (tx,) = wire.tx.find(NodeTx.RELAY_BIND)
    assert to == RELAY.endpoint and tx.context == TunnelBeingBuilt(42)
    assert relays.timers() == [RELAY_REBIND_S]
    relays.rebind_due(RELAY_REBIND_S - 1, still_needed=lambda tid: True)
    assert len(wire.out) == 1  # not due yet
    relays.rebind_due(RELAY_REBIND_S, still_needed=lambda tid: True)
    assert len(wire.out) == 2 and relays.timers() == [2 * RELAY_REBIND_S]
    relays.rebind_due(RELAY_REBIND_S + 1, still_needed=lambda tid: False)
    assert 42 not in relays and relays.timers() == []


def test_relay_bound_answers_once():
    wire = _wire()
    relays = RelayBindings(wire)
    relays.bind(42, RELAY, 0.0)
    (tx,) = wire.tx.find(NodeTx.RELAY_BIND)
    bound = RelayBound(tx.txid, 42, ("198.51.100.41", 7401))
    assert relays.on_bound(bound)
    assert not relays.on_bound(bound)  # a duplicate


# --- the whole machine ------------------------------------------------------------------


def _static(n: int) -> StaticKey:
    return StaticKey.from_private(X25519PrivateKey.from_private_bytes(n.to_bytes(32, "big")))


def _machine(seed: int) -> NodeSignalling:
    return NodeSignalling(
        fqdn="mn.ntm.example",
        static=_static(1),
        dc_public=_static(2).public,
        dc_endpoint=DC_EP,
        local_endpoints=lambda: [HOME],
        random_bytes=_seeded(seed),
        generate_key=_keys(seed),
        epoch_offset=1.7e9,
    )


def test_machine_is_pure_given_its_randomness_and_keys():
    peer = _static(3)
    direction = Direction(
        9, Route.DIRECT, Role.INITIATE, "cn.ntm.example", "10.99.0.3", peer.public, [HOME]
    )
    route = seal_message(
        RouteDirection(5, direction),
        SignalBox(_static(2), _static(1).public),
        _static(2).public,
        bytes(12),
    )
    runs = []
    for seed in (3, 3, 4):
        sm = _machine(seed)
        sm.start(0.0)
        sm.receive(route, DC_EP, 0.1)  # a Tunnel Request: an ephemeral key, a txid, nonces
        runs.append(sm.datagrams_to_send())
    assert len(runs[0]) == 3 and runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_drops_are_counted_by_reason_and_reach_the_stage_once():
    sm = _machine(1)
    sm.receive(b"\x07junk", ("198.51.100.66", 1), 0.0)
    sm.receive(b"\x07junk", ("198.51.100.66", 1), 0.0)
    assert sum(sm.drops.values()) == 2 and not sm.events()
    stats = StageStats("signalling")
    counted = Counter()
    _count_drops(sm.drops, counted, stats)
    _count_drops(sm.drops, counted, stats)  # nothing new: nothing added
    assert stats.drops == sm.drops


def test_the_tunnel_table_is_the_one_owner():
    net = Net()
    net.add_node("mn", ("198.51.100.41", 7401))
    net.add_node("cn", ("198.51.100.30", 7401))
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    mn = net.nodes["mn"]
    mn.request_direction("cn.ntm.example", net.now)
    net.run(1.0)
    (up,) = [e for e in net.events["mn"] if isinstance(e, TunnelUp)]
    assert mn.tunnels.by_fqdn("cn.ntm.example") is up.tunnel  # installed by the machine
    net.events["mn"].clear()
    mn.request_direction("cn.ntm.example", net.now)
    assert [e.status for e in mn.events()] == [Status.OK]  # answered from the table
    log = structlog.get_logger()
    keepalive_round(mn.tunnels, {}, net.now + EXPIRE_S + 1, StageStats("keepalive"), log)
    assert len(mn.tunnels) == 0  # expired in one place
    mn.request_direction("cn.ntm.example", net.now)
    assert not mn.events()  # no tunnel any more: the DC is asked again
    net.run(1.0)
    resolved = [e for e in net.events["mn"] if isinstance(e, DirectionResolved)]
    assert resolved[-1].status == Status.OK


# --- the stage that drives it -----------------------------------------------------------


def _nowait(channel):
    try:
        return channel.receive_nowait()
    except trio.WouldBlock:
        return None


async def test_signalling_stage_logs_and_counts_what_the_machine_reports(autojump_clock):
    sm = _machine(1)
    dc_box = SignalBox(_static(2), _static(1).public)
    inbox_send, inbox = trio.open_memory_channel(4)
    udp_out, udp_sent = trio.open_memory_channel(16)
    stats = StageStats("signalling")
    registered = []

    async def on_registered(event: Registered) -> None:
        registered.append(event)

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            broker = DirectionBroker(StageStats("dns"))
            await nursery.start(run_signalling, sm, inbox, udp_out, broker, stats, on_registered)
            await inbox_send.send([(b"\x07junk", ("198.51.100.66", 1))])
            await trio.sleep(REGISTER_TIMEOUT_S + 0.1)  # the DC does not answer
            sent = []
            while (batch := _nowait(udp_sent)) is not None:
                sent.extend(batch)
            _, register = open_message(sent[-1][0], lambda key: dc_box)  # the latest Register
            ack = RegisterAck(register.txid, Status.OK, "10.99.0.2", 16, HOME, 5)
            await inbox_send.send(
                [(seal_message(ack, dc_box, _static(2).public, bytes(12)), DC_EP)]
            )
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert stats.drops == sm.drops and sum(stats.drops.values()) == 1
    assert registered == [sm.registered]
    by_name = {entry["event"]: entry for entry in logs}
    assert by_name["dc_unreachable"]["during"] == "register"
    assert by_name["dc_unreachable"]["log_level"] == "warning"
    logged = by_name["registered"]
    assert logged["observed"] == "10.10.1.2:7401" and logged["behind_nat"] is False
    assert {"vip", "prefix_len", "keepalive_s"} <= logged.keys()
