"""The node's v2 tunnel handshakes (proto/node/handshake.py), both ends in process.

Each end is a Handshakes over a small fake Wire (the interface part A's wire.py gives)
and a TunnelTable; `Link` plays part A's dispatch (by byte 1, initiations, cookies,
timers) and the network between the ends' endpoints, with an optional relay.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ntma.observe.spans import StageStats
from ntma.proto.bodies_v2 import Direction, Register, RelayInfo
from ntma.proto.crypto import StaticKey
from ntma.proto.fields_v2 import Role, Route, Status
from ntma.proto.gate import HandshakeGate
from ntma.proto.handshake import T_COOKIE, T_DATA, T_INIT, T_RESP, T_SIGNAL
from ntma.proto.initiate import Indexes, Initiations
from ntma.proto.machine import Drops
from ntma.proto.messages_v2 import encode
from ntma.proto.node.events import DirectionResolved, RouteFallback, TunnelUp
from ntma.proto.node.handshake import FIRST_DEADLINE_S, PUNCH_FALLBACK_S, Handshakes
from ntma.proto.session import REJECT_AFTER_TIME, REKEY_AFTER_TIME, parse_transport
from ntma.proto.tunnel import TunnelTable
from ntma.stages.receive import decapsulate_datagrams
from ntma.testing.traffic import udp_packet

DC_ID = bytes.fromhex("00112233445566ff")
TID = 0x1122334455667788
MN_EP, CN_EP = ("198.51.100.41", 7401), ("198.51.100.30", 7401)
RS_EP = ("198.51.100.60", 7500)
MN_VIP, CN_VIP = "10.99.0.5", "10.99.0.6"
MN_NAME, CN_NAME = "mn.ntm.example", "cn.ntm.example"
_counter = itertools.count(1)


def _random(n: int) -> bytes:
    return next(_counter).to_bytes(n, "big")


@dataclass
class NameVips:
    vip4: str
    vip6: str = "::"


class FakeWire:
    def __init__(self, static: StaticKey, name: str, vip: str) -> None:
        self.static = static
        self.out: list = []
        self.events: list = []
        self.drops = Drops()
        self.random_bytes = _random
        self.indexes = Indexes(_random)
        self.initiations = Initiations(static, self.indexes)
        self.gate = HandshakeGate(static, 0.0, _random)
        self.by_index: dict[int, object] = {}
        self.names = {name: NameVips(vip)}
        self.dc_id = DC_ID
        self.relayed: list = []

    def clock_epoch(self, now: float) -> float:
        return 1.7e9 + now

    def send_via_relay(self, relay, dc_id, tunnel_id, datagram) -> None:
        self.relayed.append((relay, dc_id, tunnel_id, datagram))


class FakeRelays:
    def __init__(self) -> None:
        self.bound: set = set()

    def bind(self, relay, dc_id, tunnel_id, now) -> None:
        self.bound.add((dc_id, tunnel_id))

    def unbind(self, dc_id, tunnel_id) -> None:
        self.bound.discard((dc_id, tunnel_id))


class End:
    def __init__(self, name: str, vip: str, endpoint) -> None:
        self.key = StaticKey.generate()
        self.name, self.vip, self.endpoint = name, vip, endpoint
        self.wire = FakeWire(self.key, name, vip)
        self.table = TunnelTable()
        self.relays = FakeRelays()
        self.hs = Handshakes(self.wire, self.table, relays=self.relays)
        self.stats = StageStats("decapsulate")
        self.received: list[bytes] = []

    def deliver(self, datagram: bytes, addr, now: float, relay=None) -> None:
        """Part A's dispatch by byte 1 (DATA goes to the data path)."""
        kind = datagram[1]
        if kind == T_INIT:
            self.hs.on_init(datagram, addr, now, relay)
        elif kind == T_RESP:
            done = self.wire.initiations.on_response(datagram)
            if done is not None:
                pending, index, body, keys = done
                self.hs.on_established(pending, index, body, keys, addr, now, relay)
        elif kind == T_COOKIE:
            pending = self.wire.initiations.on_cookie(datagram, self.wire.clock_epoch(now))
            if pending is not None:
                self.hs.resend(pending, now)
        elif kind == T_SIGNAL:
            _, index, counter = parse_transport(datagram)
            tunnel = self.wire.by_index[index]
            self.hs.on_signal(tunnel, tunnel.open_signal(datagram, index, counter), addr, now)
        elif kind == T_DATA:
            self.received += decapsulate_datagrams([(datagram, addr)], self.table, self.stats, now)

    def tick(self, now: float) -> None:
        """Part A's handle_timer for the tunnel pendings, then Handshakes'."""
        for pending in self.wire.initiations.due(now):
            self.hs.resend(pending, now)
        for pending in self.wire.initiations.expired(now):
            self.hs.on_expired(pending, now)
        self.hs.handle_timer(now)

    def direct(self, peer: End, role: Role, route: Route = Route.DIRECT, **kw) -> Direction:
        fields = dict(
            dc_id=DC_ID,
            tunnel_id=TID,
            route=route,
            role=role,
            self_name=self.name,
            peer_name=peer.name,
            peer_vip4=peer.vip,
            peer_key=peer.key.public,
            peer_endpoints=(peer.endpoint,),
        )
        fields.update(kw)
        return Direction(**fields)

    def tunnel(self):
        return self.table.by_ref.get((DC_ID, TID))

    def events(self, kind):
        return [e for e in self.wire.events if isinstance(e, kind)]


RELAY = RelayInfo(RS_EP, StaticKey.generate().public, bytes(104))


class Link:
    """mn and cn on one network (and through one relay); `drop` loses datagrams."""

    def __init__(self) -> None:
        self.mn, self.cn = End(MN_NAME, MN_VIP, MN_EP), End(CN_NAME, CN_VIP, CN_EP)
        self.by_ep = {MN_EP: self.mn, CN_EP: self.cn}
        self.drop = lambda datagram, src, dst: False
        self.log: list = []  # (src, dst, datagram) of everything delivered

    def pump(self, now: float, rounds: int = 10) -> None:
        for _ in range(rounds):
            moved = False
            for end in (self.mn, self.cn):
                out, end.wire.out = end.wire.out, []
                relayed, end.wire.relayed = end.wire.relayed, []
                for datagram, dst in out:
                    moved = True
                    self._send(end, datagram, dst, now)
                for _, _, _, datagram in relayed:
                    moved = True
                    other = self.cn if end is self.mn else self.mn
                    if not self.drop(datagram, end.endpoint, RS_EP):
                        other.deliver(datagram, RS_EP, now, RELAY)
            if not moved:
                return

    def _send(self, end: End, datagram: bytes, dst, now: float) -> None:
        target = self.by_ep.get(dst)
        if dst == RS_EP:  # DATA through the RS, as it is
            target = self.cn if end is self.mn else self.mn
            src = RS_EP
        else:
            src = end.endpoint
        if target is None or self.drop(datagram, end.endpoint, dst):
            return
        self.log.append((src, dst, datagram))
        target.deliver(datagram, src, now)

    def tick(self, now: float) -> None:
        self.mn.tick(now)
        self.cn.tick(now)
        self.pump(now)

    def up(self, route: Route = Route.DIRECT, now: float = 0.0, **kw) -> None:
        """cn told first (RESPOND), then mn (INITIATE); both ends up."""
        self.cn.hs.on_direction(self.cn.direct(self.mn, Role.RESPOND, route, **kw), now)
        self.mn.hs.on_direction(self.mn.direct(self.cn, Role.INITIATE, route, **kw), now)
        self.pump(now)


def _data(src: End, dst: End) -> bytes:
    return udp_packet(src.vip, dst.vip, 40)


def _send_data(link: Link, src: End, dst: End, now: float) -> bytes:
    tunnel = src.tunnel()
    packet = _data(src, dst)
    src.wire.out.append((tunnel.seal(packet, now), tunnel.endpoint))
    link.pump(now)
    return packet


# --- a first tunnel ---------------------------------------------------------------------


def test_direct_tunnel_comes_up_and_carries_data_both_ways():
    link = Link()
    link.up()
    mn, cn = link.mn, link.cn
    mn_t, cn_t = mn.tunnel(), cn.tunnel()
    assert mn_t is not None and cn_t is not None
    assert mn_t.route == cn_t.route == "direct"
    assert mn_t.endpoint == CN_EP and cn_t.endpoint == MN_EP
    assert mn.events(DirectionResolved) == [DirectionResolved(CN_NAME, Status.OK, CN_VIP, MN_NAME)]
    (up,) = mn.events(TunnelUp)
    assert up.log_fields()["tunnel"] == TID and up.log_fields()["peer"] == CN_NAME
    assert up.log_fields()["replaced"] is False
    assert cn.stats.counters["keepalive_received"] == 1  # mn's confirmation
    assert cn_t.ring.current is not None and cn_t.ring.next is None  # confirmed
    assert _send_data(link, mn, cn, 1.0) in cn.received
    assert _send_data(link, cn, mn, 1.0) in mn.received
    # Each end's local index names its own session in its own tables.
    for end, t in ((mn, mn_t), (cn, cn_t)):
        (index,) = end.table.by_index
        assert end.wire.by_index[index] is t and index in end.wire.indexes.in_use


def test_the_init_is_padded_and_the_same_bytes_go_to_every_endpoint():
    link = Link()
    extra = ("198.51.100.31", 7401)
    link.mn.hs.on_direction(
        link.mn.direct(link.cn, Role.INITIATE, peer_endpoints=(CN_EP, extra)), 0.0
    )
    (a, ea), (b, eb) = link.mn.wire.out
    assert a == b and {ea, eb} == {CN_EP, extra} and len(a) >= 112


def test_an_early_init_waits_for_its_direction():
    link = Link()
    mn, cn = link.mn, link.cn
    mn.hs.on_direction(mn.direct(cn, Role.INITIATE), 0.0)
    link.pump(0.0)
    assert cn.wire.drops["early_init_kept"] == 1 and cn.tunnel() is None
    cn.hs.on_direction(cn.direct(mn, Role.RESPOND), 0.2)
    link.pump(0.2)
    assert mn.tunnel() is not None and cn.tunnel() is not None


def test_an_init_naming_other_names_or_keys_is_dropped_without_reply():
    link = Link()
    mn, cn = link.mn, link.cn
    cn.hs.on_direction(cn.direct(mn, Role.RESPOND, peer_name="other.ntm.example"), 0.0)
    mn.hs.on_direction(mn.direct(cn, Role.INITIATE), 0.0)
    link.pump(0.0)
    assert cn.wire.drops["init_not_directed"] == 1 and not cn.wire.out and mn.tunnel() is None


def test_garbage_and_small_inits_cost_nothing_and_raise_nothing():
    link = Link()
    cn = link.cn
    cn.hs.on_init(bytes((2, 1, 0, 0)) + bytes(200), MN_EP, 0.0)
    assert cn.wire.drops["bad_mac1"] == 1 and not cn.wire.out
    inits = link.mn.wire.initiations
    register = encode(Register(1, 2, MN_NAME))
    cn.hs.on_init(inits.start(cn.key.public, register, 0, 0.0, 1.7e9).datagram, MN_EP, 0.0)
    cn.hs.on_init(inits.start(cn.key.public, b"\x02", 0, 0.1, 1.7e9).datagram, MN_EP, 0.1)
    assert cn.wire.drops["init_body_not_served"] == 1 and cn.wire.drops["malformed_init"] == 1
    assert not cn.wire.out


# --- replays and losses -----------------------------------------------------------------


def test_a_replayed_init_is_ignored():
    link = Link()
    link.up()
    init = next(d for _, _, d in link.log if d[1] == T_INIT)
    cn = link.cn
    before = dict(cn.table.by_index)
    cn.hs.on_init(init, ("198.51.100.77", 9999), 30.0)  # recorded, replayed elsewhere later
    cn.hs.on_init(init, MN_EP, 30.0)  # or from the same place after the resend window
    assert cn.wire.drops["replayed_init"] == 2 and not cn.wire.out
    assert cn.table.by_index == before


def test_a_lost_response_is_resent_from_the_store_and_opens_no_second_session():
    link = Link()
    lost = []

    def drop(datagram, src, dst):
        if datagram[1] == T_RESP and not lost:
            lost.append(datagram)
            return True
        return False

    link.drop = drop
    link.up()
    assert link.mn.tunnel() is None and lost
    link.tick(0.5)  # mn resends the same init; cn answers it from its store
    assert link.mn.tunnel() is not None
    assert len(link.cn.table.by_index) == 1 and link.cn.tunnel().ring.current is not None


def test_no_answer_until_the_deadline_is_no_route_and_frees_everything():
    link = Link()
    link.drop = lambda datagram, src, dst: True
    mn = link.mn
    mn.hs.on_direction(mn.direct(link.cn, Role.INITIATE), 0.0)
    t = 0.0
    while t < FIRST_DEADLINE_S + 1:
        t += 0.25
        link.tick(t)
    no_route = DirectionResolved(CN_NAME, Status.NO_ROUTE, None, MN_NAME)
    assert mn.events(DirectionResolved) == [no_route]
    assert not mn.wire.initiations.pending and not mn.wire.indexes.in_use
    assert (DC_ID, TID) not in mn.hs and mn.hs.get_timer() is None


# --- rekeys -------------------------------------------------------------------------------


def test_rekey_keeps_packets_in_flight_on_the_old_keys_and_frees_them_later():
    link = Link()
    link.up()
    mn, cn = link.mn, link.cn
    mn_t, cn_t = mn.tunnel(), cn.tunnel()
    old_mn_index = next(iter(mn.table.by_index))
    # Packets sealed before the rekey, delivered after it.
    in_flight_to_cn = mn_t.seal(_data(mn, cn), REKEY_AFTER_TIME - 1)
    in_flight_to_mn = cn_t.seal(_data(cn, mn), REKEY_AFTER_TIME - 1)
    assert mn.hs.get_timer() == REKEY_AFTER_TIME  # mn initiated the current keypair
    link.tick(REKEY_AFTER_TIME)
    assert mn_t.ring.previous is not None and cn_t.ring.previous is not None
    assert len(cn.table.by_index) == len(mn.table.by_index) == 2
    cn.deliver(in_flight_to_cn, MN_EP, REKEY_AFTER_TIME + 0.1)
    mn.deliver(in_flight_to_mn, CN_EP, REKEY_AFTER_TIME + 0.1)
    assert len(cn.received) == len(mn.received) == 1
    # New packets use the new keypair.
    assert _send_data(link, mn, cn, REKEY_AFTER_TIME + 1) in cn.received
    assert not mn.events(TunnelUp)[1:]  # a rekey is not a new tunnel
    # The old keypair expires REJECT_AFTER_TIME after it was made: indexes freed.
    link.tick(REJECT_AFTER_TIME + 0.5)
    assert old_mn_index not in mn.table.by_index and old_mn_index not in mn.wire.by_index
    assert old_mn_index not in mn.wire.indexes.in_use
    assert len(mn.table.by_index) == 1 and mn_t.ring.previous is None


def test_either_end_rekeys_when_the_send_path_asks():
    link = Link()
    link.up()
    cn, cn_t = link.cn, link.cn.tunnel()
    cn_t.rekey_wanted = True  # as the send path sets it (expired keys, message limit)
    assert cn.hs.get_timer() == 0.0
    link.tick(1.0)
    assert cn_t.ring.current.initiator and not cn_t.rekey_wanted
    assert _send_data(link, link.mn, cn, 1.5) in cn.received


def test_rekey_that_nobody_answers_gives_up_and_the_tunnel_dies_with_its_keys():
    link = Link()
    link.up()
    link.drop = lambda datagram, src, dst: True
    t = REKEY_AFTER_TIME
    while t < REJECT_AFTER_TIME + 1:
        link.tick(t)
        t += 1.0
    assert link.mn.tunnel() is None and not link.mn.wire.indexes.in_use
    assert link.mn.hs.get_timer() is None


# --- routes -------------------------------------------------------------------------------


def test_punch_responder_punches_and_the_punch_is_dropped_and_counted():
    link = Link()
    cn, mn = link.cn, link.mn
    cn.hs.on_direction(cn.direct(mn, Role.RESPOND, Route.PUNCH), 0.0)
    ((punch, dst),) = cn.wire.out
    assert dst == MN_EP and len(punch) == 32
    link.pump(0.0)
    assert mn.stats.drops["punch"] == 1
    link.tick(0.5)
    assert mn.stats.drops["punch"] == 2


def test_punch_falls_back_to_the_relay():
    link = Link()
    link.drop = lambda datagram, src, dst: dst != RS_EP and src != RS_EP
    link.up(Route.PUNCH, relay=RELAY)
    mn, cn = link.mn, link.cn
    assert (DC_ID, TID) in mn.relays.bound and (DC_ID, TID) in cn.relays.bound
    mn.hs.on_relay_bound(DC_ID, TID, 0.3)
    cn.hs.on_relay_bound(DC_ID, TID, 0.3)
    link.tick(1.0)
    assert mn.tunnel() is None
    link.tick(PUNCH_FALLBACK_S)
    assert mn.events(RouteFallback) == [RouteFallback(TID, CN_NAME, "punch", "relay")]
    mn_t, cn_t = mn.tunnel(), cn.tunnel()
    assert mn_t.route == cn_t.route == "relay"
    assert mn_t.endpoint == RS_EP and cn_t.endpoint == RS_EP
    assert _send_data(link, mn, cn, 3.0) in cn.received


def test_relay_route_waits_for_the_binding():
    link = Link()
    link.up(Route.RELAY, relay=RELAY, peer_endpoints=())
    mn = link.mn
    assert not mn.wire.initiations.pending
    link.cn.hs.on_relay_bound(DC_ID, TID, 0.1)
    mn.hs.on_relay_bound(DC_ID, TID, 0.1)
    link.pump(0.1)
    assert mn.tunnel().route == "relay" and link.cn.tunnel().route == "relay"


def test_a_route_update_handshakes_again_on_the_new_route():
    link = Link()
    link.up()
    mn, cn = link.mn, link.cn
    mn_t = mn.tunnel()
    moved = ("198.51.100.32", 7401)
    link.by_ep[moved] = cn
    cn.endpoint = moved
    cn.hs.on_direction(cn.direct(mn, Role.RESPOND, peer_endpoints=(MN_EP,)), 5.0)  # same: no-op
    assert not cn.wire.out
    mn.hs.on_direction(mn.direct(cn, Role.INITIATE, peer_endpoints=(moved,)), 5.0)
    link.pump(5.0)
    assert mn.tunnel() is mn_t and mn_t.endpoint == moved
    assert [e.replaced for e in mn.events(TunnelUp)] == [False, True]


def test_a_colliding_direction_is_refused():
    link = Link()
    link.up()
    intruder = StaticKey.generate()
    other = link.mn.direct(link.cn, Role.RESPOND, peer_key=intruder.public)
    link.mn.hs.on_direction(other, 1.0)
    assert link.mn.wire.drops["tunnel_id_collision"] == 1
    assert link.mn.tunnel().peer_key == link.cn.key.public


# --- ends ----------------------------------------------------------------------------------


def test_tunnel_close_from_the_peer_and_gone_from_the_dc_free_everything():
    link = Link()
    link.up()
    mn, cn = link.mn, link.cn
    mn.hs.send_close(mn.tunnel(), 1.0)
    link.pump(1.0)
    assert cn.tunnel() is None and not cn.wire.by_index and not cn.wire.indexes.in_use
    mn.hs.close(DC_ID, TID, 1.0)
    assert mn.tunnel() is None and not mn.wire.indexes.in_use and not mn.relays.bound


def test_a_tunnel_expired_by_the_keepalive_stage_is_swept():
    link = Link()
    link.up()
    mn = link.mn
    mn.table.remove(mn.tunnel())  # as keepalive_round does after 180 s of silence
    assert mn.hs.get_timer() is not None
    mn.hs.handle_timer(200.0)
    assert (DC_ID, TID) not in mn.hs and not mn.wire.indexes.in_use and not mn.wire.by_index


def test_a_direction_for_a_name_we_do_not_have_is_dropped():
    link = Link()
    link.mn.hs.on_direction(link.mn.direct(link.cn, Role.INITIATE, self_name="x.ntm.example"), 0)
    assert link.mn.wire.drops["direction_for_unknown_name"] == 1 and not link.mn.wire.out


def test_decapsulate_drops_are_counted_by_reason():
    link = Link()
    link.up()
    mn, cn = link.mn, link.cn
    mn_t = mn.tunnel()
    forged = udp_packet("10.99.0.77", CN_VIP, 10)
    cn.deliver(mn_t.seal(forged, 1.0), MN_EP, 1.0)
    cn.deliver(mn_t.seal(udp_packet(MN_VIP, "10.99.0.78", 10), 1.0), MN_EP, 1.0)
    good = mn_t.seal(_data(mn, cn), 1.0)
    cn.deliver(good, MN_EP, 1.0)
    cn.deliver(good, MN_EP, 1.0)
    cn.deliver(good[:4] + bytes(4) + good[8:], MN_EP, 1.0)
    cn.deliver(good[:4] + (77).to_bytes(4, "big") + good[8:], MN_EP, 1.0)
    fresh = mn_t.seal(_data(mn, cn), 1.0)
    cn.deliver(fresh[:-1] + bytes([fresh[-1] ^ 1]), MN_EP, 1.0)
    cn.deliver(b"\x02\x04", MN_EP, 1.0)
    drops = cn.stats.drops
    assert drops == {
        "inner_source_not_peer": 1,
        "inner_dest_not_self": 1,
        "replay": 1,
        "punch": 1,
        "unknown_index": 1,
        "auth": 1,
        "malformed": 1,
    }


def test_under_load_a_cookie_then_the_rebuilt_init_gets_through():
    link = Link()
    cn = link.cn
    cn.wire.gate = HandshakeGate(cn.key, 0.0, _random, budget_per_s=1)
    cn.wire.gate.admit(b"", MN_EP, 0.0)  # (refused, costs nothing)
    link.up()  # the first init takes the one token
    assert link.mn.tunnel() is not None
    cn.hs.close(DC_ID, TID, 0.0)
    link.mn.hs.close(DC_ID, TID, 0.0)
    link.up(now=0.1)  # under load now: COOKIE_REPLY, then the init again with mac2
    assert T_COOKIE in [d[1] for _, _, d in link.log] and link.mn.tunnel() is None
    link.tick(1.6)  # a resend with mac2 once the budget has a token again
    assert link.mn.tunnel() is not None


def test_mutated_inits_and_data_never_raise():
    import random

    link = Link()
    link.cn.hs.on_direction(link.cn.direct(link.mn, Role.RESPOND), 0.0)
    link.mn.hs.on_direction(link.mn.direct(link.cn, Role.INITIATE), 0.0)
    ((init, _),) = link.mn.wire.out
    rng = random.Random(10)
    for n in range(300):
        mutated = bytearray(init)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        if rng.random() < 0.2:
            mutated = mutated[: rng.randrange(len(mutated))]
        link.cn.hs.on_init(bytes(mutated), MN_EP, n * 0.1)
        link.cn.wire.out.clear()
    assert sum(link.cn.wire.drops.values()) >= 250
