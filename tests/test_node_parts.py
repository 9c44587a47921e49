"""The node's signalling parts (v2) on their own: the DC session's states, RS sessions and
relay bindings, the dispatch to part B's Handshakes, and the machine's purity (injected
randomness and keys)."""

from __future__ import annotations

from collections import Counter

import structlog
import trio
from structlog.testing import capture_logs

from ntma.dc.coordinator import Coordinator
from ntma.observe.spans import StageStats
from ntma.proto.bodies_v2 import RelayInfo, TunnelGone
from ntma.proto.crypto import StaticKey
from ntma.proto.fields_v2 import GoneReason, Status
from ntma.proto.handshake import T_INIT, T_SIGNAL
from ntma.proto.messages_v2 import REPLY_MAX, MsgType
from ntma.proto.node import (
    DcTx,
    DcUnreachable,
    DirectionResolved,
    NodeSignalling,
    Registered,
    RegistrationFailed,
    SessionState,
    TunnelUp,
)
from ntma.proto.node.relay import RELAY_KEEPALIVE_S
from ntma.proto.node.session import (
    DC_REJECT_AFTER_S,
    DC_REKEY_AFTER_S,
    REFUSED_RETRY_S,
    REGISTER_TIMEOUT_S,
)
from ntma.proto.node.wire import DcContext
from ntma.stages.signalling import DirectionBroker, _count_drops, run_signalling

from .sim import DC_EP, EPOCH, RS_EP, Net, keys_from, seeded

HOME = ("10.10.1.2", 7401)


def _of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def _one(name: str = "mn", fqdn: str | None = None) -> Net:
    net = Net(fake_tunnels=True)
    net.add_node(name, HOME, ("198.51.100.41", 7401), fqdn=fqdn)
    return net


# --- the DC session ---------------------------------------------------------------------


def test_session_registers_confirms_and_keeps_alive():
    net = _one()
    node = net.nodes["mn"]
    session = node.session
    assert session.state == SessionState.UNREGISTERED and session.vip == "0.0.0.0"
    node.start(net.now)
    assert session.state == SessionState.REGISTERING
    ((init, to),) = node.datagrams_to_send()
    assert to == DC_EP and init[1] == T_INIT and len(init) >= REPLY_MAX[MsgType.REGISTER]
    assert session.pending is not None and session.pending.context == DcContext()
    net.deliver([(init, to)], "mn")
    net.run(0.1)
    assert session.state == SessionState.REGISTERED and session.vip.startswith("10.99.")
    (event,) = _of(net.events["mn"], Registered)
    assert event.behind_nat  # the DC saw another endpoint
    assert node.wire.names["mn.ntm.example"].vip4 == session.vip
    assert node.wire.by_index[session.ring.current.local_index] is session
    assert net.dc.sessions[net.keys["mn"].public].local_endpoints == [HOME]  # UPDATE arrived
    assert session.keepalive_at is not None and not session.tx.find(DcTx.KEEPALIVE)
    net.run(session.keepalive_at - net.now + 0.2)
    assert session.state == SessionState.REGISTERED and not node.drops


def test_session_refused_waits_then_asks_again():
    net = Net(fake_tunnels=True)
    net.keys["xn"] = net.keys["mn"]  # mn's key, admitted for mn only, asks for cn
    node = net.add_node("xn", ("198.51.100.50", 7401), fqdn="cn.ntm.example")
    node.start(net.now)
    net.run(0.5)
    assert node.session.state == SessionState.REFUSED
    assert _of(net.events["xn"], RegistrationFailed)[-1].status == Status.REFUSED
    net.run(REFUSED_RETRY_S - 1.0)
    assert len(_of(net.events["xn"], RegistrationFailed)) == 1
    net.run(1.5)
    assert len(_of(net.events["xn"], RegistrationFailed)) == 2  # asked again, refused again


def test_session_unreachable_dc_is_reported_and_registration_goes_on():
    net = _one()
    net.drop = lambda d, s, t: t == DC_EP
    net.nodes["mn"].start(net.now)
    net.run(REGISTER_TIMEOUT_S + 0.5)
    assert _of(net.events["mn"], DcUnreachable) == [DcUnreachable("register")]
    inits = [d for s, t, d in net.sent if t == DC_EP and d[1] == T_INIT]
    assert len(set(inits)) >= 2  # fresh inits (new timestamps) after REKEY_TIMEOUT
    net.drop = lambda d, s, t: False
    net.run(6.0)
    assert _of(net.events["mn"], Registered)


def test_session_unanswered_keepalive_loses_the_vip_and_registers_again():
    net = _one()
    net.nodes["mn"].start(net.now)
    net.run(1.0)
    session = net.nodes["mn"].session
    net.drop = lambda d, s, t: s == DC_EP  # the DC's answers are lost
    net.run(12.0)
    assert DcUnreachable("keepalive") in net.events["mn"]
    assert session.registration is None and session.state == SessionState.REGISTERING


def test_session_rekeys_in_place_after_30_minutes():
    net = _one()
    net.nodes["mn"].start(net.now)
    net.run(1.0)
    session = net.nodes["mn"].session
    first = session.ring.current
    net.run(DC_REKEY_AFTER_S + 2.0, step=1.0)
    assert session.ring.current is not first and session.ring.previous is first
    assert len(_of(net.events["mn"], Registered)) == 1
    assert session.ring.reject_after == DC_REJECT_AFTER_S
    net.run(DC_REJECT_AFTER_S - DC_REKEY_AFTER_S, step=1.0)  # the first keypair's 1,860 s
    assert session.ring.previous is None and first.local_index not in net.nodes["mn"].wire.by_index


def test_session_deregister_only_when_registered():
    net = _one()
    node = net.nodes["mn"]
    node.deregister(net.now)
    assert not node.datagrams_to_send()
    node.start(net.now)
    net.run(1.0)
    node.deregister(net.now)
    assert node.session.state == SessionState.UNREGISTERED and node.registered is None
    net.run(0.5)
    assert not net.dc.sessions  # the DC let it go


# --- dispatch to the handshakes ------------------------------------------------------------


def test_tunnel_gone_is_acked_and_closes_the_tunnel_once():
    net = Net(fake_tunnels=True)
    net.add_node("mn", HOME, ("198.51.100.41", 7401))
    net.nodes["mn"].start(net.now)
    net.run(1.0)
    dc_session = net.dc.sessions[net.keys["mn"].public]
    gone = TunnelGone(77, 1234, GoneReason.OFFLINE)
    for _ in range(2):  # a copy, as after a lost ACK
        net.dc._send(dc_session, gone, net.now)
    net.run(0.1)
    assert net.handshakes("mn").closed == [(net.dc.dc_id, 1234)]
    assert net.dc.drops["unexpected_ack"] == 2  # the DC had no request in flight: counted


def test_signal_to_an_unknown_index_and_junk_are_counted():
    net = _one()
    node = net.nodes["mn"]
    node.receive(b"\x07junk", ("198.51.100.66", 1), 0.0)
    node.receive(bytes([2, T_SIGNAL, 0, 0]) + bytes(40), ("198.51.100.66", 1), 0.0)
    node.receive(bytes([2, 4, 0, 0]) + bytes(40), ("198.51.100.66", 1), 0.0)  # DATA: not ours
    assert node.drops == {"not_v2": 1, "unknown_index": 1, "unexpected_type": 1}


# --- RS sessions and bindings ------------------------------------------------------------


def _relay_info(net: Net, tunnel_id: int) -> RelayInfo:
    relay = net.dc.relays[0]
    from ntma.dc.directions import relay_info

    return relay_info(
        relay,
        net.dc.dc_id,
        tunnel_id,
        int(EPOCH * 1000) + 3_600_000,
        net.keys["mn"].public,
        net.keys["cn"].public,
    )


def test_binding_opens_an_rs_session_binds_and_keeps_alive():
    net = _one()
    node = net.nodes["mn"]
    node.start(net.now)
    net.run(1.0)
    relays = node.relays
    relays.bind(_relay_info(net, 42), net.dc.dc_id, 42, net.now)
    relays.bind(_relay_info(net, 42), net.dc.dc_id, 42, net.now)  # idempotent
    net.run(0.5)
    assert net.handshakes("mn").relay_bound == [(net.dc.dc_id, 42)]
    (entry,) = net.relay.entries.values()
    assert entry.bound[0] == net.outside["mn"]
    active = entry.last_active
    net.run(RELAY_KEEPALIVE_S + 0.1)
    assert entry.last_active > active  # RELAY_KEEPALIVE listed it
    relays.unbind(net.dc.dc_id, 42)  # Handshakes does this when the tunnel needs it no more
    assert not relays.bindings and not relays.sessions  # the last binding closes the session
    assert node.drops == {}


def test_an_envelope_is_accepted_only_from_the_bound_relay():
    net = _one()
    node = net.nodes["mn"]
    node.start(net.now)
    net.run(1.0)
    node.relays.bind(_relay_info(net, 42), net.dc.dc_id, 42, net.now)
    net.run(0.5)
    from ntma.proto.envelope import wrap

    inner = bytes([2, T_INIT, 0, 0]) + bytes(200)
    node.receive(wrap(net.dc.dc_id, 42, inner), ("203.0.113.9", 7500), net.now)
    assert node.drops["envelope_not_from_our_relay"] == 1
    node.receive(wrap(net.dc.dc_id, 42, inner), RS_EP, net.now)
    ((datagram, addr, relay),) = net.handshakes("mn").inits
    assert datagram == inner and addr == RS_EP and relay.endpoint == RS_EP


# --- the whole machine ------------------------------------------------------------------


def _machine(seed: int, dc: StaticKey) -> NodeSignalling:
    return NodeSignalling(
        fqdn="mn.ntm.example",
        static=StaticKey.from_private(keys_from(1)()),
        dc_public=dc.public,
        dc_endpoint=DC_EP,
        local_endpoints=lambda: [HOME],
        random_bytes=seeded(seed),
        generate_key=keys_from(seed * 100),
        epoch_offset=EPOCH,
    )


def test_machine_is_pure_given_its_randomness_and_keys():
    dc = StaticKey.from_private(keys_from(2)())
    runs = []
    for seed in (3, 3, 4):
        sm = _machine(seed, dc)
        sm.start(0.0)
        sm.handle_timer(0.6)  # the same init again
        runs.append(sm.datagrams_to_send())
    assert len(runs[0]) == 2 and runs[0] == runs[1]
    assert runs[0][0] == runs[0][1]
    assert runs[0] != runs[2]


def test_drops_are_counted_by_reason_and_reach_the_stage_once():
    sm = _machine(1, StaticKey.generate())
    sm.receive(b"\x07junk", ("198.51.100.66", 1), 0.0)
    sm.receive(b"\x07junk", ("198.51.100.66", 1), 0.0)
    assert sum(sm.drops.values()) == 2 and not sm.events()
    stats = StageStats("signalling")
    counted = Counter()
    _count_drops(sm.drops, counted, stats)
    _count_drops(sm.drops, counted, stats)  # nothing new: nothing added
    assert stats.drops == sm.drops


def test_the_tunnel_table_is_the_one_owner():
    from ntma.stages.keepalive import EXPIRE_S, keepalive_round

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
    import ipaddress

    from ntma.dc.store import NodeStore

    dc_key = StaticKey.generate()
    sm = _machine(1, dc_key)
    dc = Coordinator(
        static=dc_key,
        store=NodeStore(":memory:", ipaddress.IPv4Network("10.99.0.0/16")),
        zone="ntm.example",
        admission={"mn.ntm.example": StaticKey.from_private(keys_from(1)()).public},
        keepalive_s=5,
        keepalive_misses=3,
        epoch_offset=EPOCH - trio.current_time(),
    )
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
            dc.receive(sent[-1][0], HOME, trio.current_time())  # the latest REGISTER init
            await inbox_send.send(dc.datagrams_to_send())
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
