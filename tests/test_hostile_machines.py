"""Inputs the fuzzer found or aimed at the v2 machines (ntma.fuzz --repro), each a
reproducer: a machine in the fuzz world's state (ntma/fuzz/world.py) fed one hostile but
often authenticated input."""

from __future__ import annotations

import pytest

from ntma.fuzz import seeds
from ntma.fuzz.catalog import all_targets
from ntma.fuzz.runner import replay
from ntma.fuzz.world import DC_EP, NODES, RS_EP, STRANGER, World, key, world
from ntma.proto.bodies_v2 import (
    Direction,
    DirectionRequest,
    Keepalive,
    KeepaliveAck,
    Register,
    RelayKeepalive,
    RouteDirection,
    RouteUpdate,
    RsHello,
    Status,
    TunnelClose,
    Update,
)
from ntma.proto.buffer import CodecError
from ntma.proto.fields_v2 import Role, Route, check_endpoint
from ntma.proto.handshake import T_SIGNAL
from ntma.proto.initiate import Indexes, Initiations
from ntma.proto.messages_v2 import REPLY_MAX, MsgType, decode, encode
from ntma.proto.session import Keypair

MN_OUT, CN_OUT = NODES["mn"][1], NODES["cn"][1]
BROADCAST = bytes.fromhex("04 ffffffff 1ce9")  # 255.255.255.255:7401 as an endpoint field


def _machine(name: str):
    return World.replay(world().calls[name], name), world().now + 0.1


def _sealed_to(keypair: Keypair, body: bytes, counter: int = 1000) -> bytes:
    """A SIGNAL to the holder of keypair, as its peer seals it (a fresh counter)."""
    return seeds.seal_transport(keypair.receive_key, T_SIGNAL, keypair.local_index, counter, body)


def _with_broadcast(body: bytes, valid: bytes) -> bytes:
    """The body with one encoded endpoint replaced by 255.255.255.255:7401 (encode refuses
    to write it, so a hostile peer writes the bytes itself)."""
    assert body.count(valid) >= 1
    return body.replace(valid, BROADCAST, 1)


def _endpoint_bytes(endpoint) -> bytes:
    ip = bytes(int(x) for x in endpoint[0].split("."))
    return b"\x04" + ip + endpoint[1].to_bytes(2, "big")


def _all_sendable(out) -> bool:
    for _, to in out:
        try:
            check_endpoint(to)
        except CodecError:
            return False
    return True


# --- a node never sends to an endpoint of a Direction it may not send to ---------------------


def _new_direction(*endpoints) -> Direction:
    return Direction(
        seeds.DC_ID,
        0x5566778899AABBCC,
        Route.DIRECT,
        Role.INITIATE,
        "mn.ntm.example",
        "cn.ntm.example",
        "10.99.0.3",
        "::",
        key("cn").public,
        tuple(endpoints),
    )


def test_a_node_drops_a_direction_naming_a_broadcast_endpoint():
    node, now = _machine("mn")
    valid = ("198.51.100.77", 7401)
    body = encode(RouteDirection(0xABC, _new_direction(CN_OUT, valid)))
    hostile = _with_broadcast(body, _endpoint_bytes(valid))
    node.receive(_sealed_to(node.session.ring.current, hostile), DC_EP, now)
    out = node.datagrams_to_send()
    assert out == [] and node.drops["malformed_message"] == 1


def test_a_node_sends_its_tunnel_init_only_to_the_directions_endpoints_all_sendable():
    node, now = _machine("mn")
    endpoints = (CN_OUT, ("2001:db8:1::30", 7401), ("10.10.2.2", 7401))
    body = encode(RouteDirection(0xABC, _new_direction(*endpoints)))
    node.receive(_sealed_to(node.session.ring.current, body), DC_EP, now)
    out = node.datagrams_to_send()
    inits = [to for d, to in out if d[1] == 1]
    assert sorted(inits) == sorted(endpoints) and _all_sendable(out) and len(out) <= 8


# --- the DC never puts an unsendable or foreign endpoint in a Direction ---------------------


def test_the_dc_drops_an_update_with_a_broadcast_endpoint_and_directs_only_known_ones():
    dc, now = _machine("dc")
    mn = dc.sessions[key("mn").public]
    before = list(mn.local_endpoints)
    valid = ("10.10.1.9", 7401)
    update = _with_broadcast(encode(Update(0x1234, (valid,))), _endpoint_bytes(valid))
    dc.receive(_sealed_to(mn.current, update), MN_OUT, now)
    assert dc.datagrams_to_send() == [] and dc.drops["malformed_message"] == 1
    assert mn.local_endpoints == before
    ask = encode(DirectionRequest(0x4321, "mn.ntm.example", "cn.ntm.example"))
    dc.receive(_sealed_to(mn.current, ask, 1001), MN_OUT, now)
    out = dc.datagrams_to_send()
    cn = dc.sessions[key("cn").public]
    known = set(cn.endpoints.values()) | set(cn.local_endpoints)
    (answer,) = [d for d, to in out if to == MN_OUT]
    direction = decode(seeds.open_transport(mn.current.send_key, answer)).direction
    assert set(direction.peer_endpoints) <= known and direction.peer_endpoints
    # The harness's own property says the same for the whole exchange.
    sel = bytes((0,))
    assert replay(all_targets()["dc.sealed"], [sel + update, sel + ask]) is None


# --- a message of the wrong kind in a session is dropped and counted ------------------------


def test_the_dc_counts_a_message_of_the_wrong_kind_or_direction_in_a_session():
    dc, now = _machine("dc")
    mn = dc.sessions[key("mn").public]
    register = encode(Register(1, 2, "mn.ntm.example"))  # an init body
    dc.receive(_sealed_to(mn.current, register), MN_OUT, now)
    ack = encode(KeepaliveAck(1, Status.OK, MN_OUT))  # the DC's own kind of message
    dc.receive(_sealed_to(mn.current, ack, 1001), MN_OUT, now)
    assert dc.datagrams_to_send() == []
    assert dc.drops["malformed_message"] == 1 and dc.drops["unexpected_message"] == 1


def test_the_rs_counts_a_message_of_the_wrong_kind_in_a_session():
    relay, now = _machine("rs")
    (peer,) = [p for p in relay._peers.values() if p.public_key == key("mn").public]
    relay.receive(_sealed_to(peer.keypair, encode(Keepalive(1))), MN_OUT, now)
    relay.receive(_sealed_to(peer.keypair, encode(RsHello(1)), 1001), MN_OUT, now)
    assert relay.datagrams_to_send() == []
    assert relay.drops["unexpected_message"] == 1 and relay.drops["malformed_message"] == 1


@pytest.mark.parametrize("body", [RelayKeepalive(()), TunnelClose(1)])
def test_a_node_counts_a_session_message_without_txid_on_its_dc_session(body):
    """Found by node.sealed: `python -m ntma.fuzz --repro node.sealed 002a00`."""
    node, now = _machine("mn")
    node.receive(_sealed_to(node.session.ring.current, encode(body)), DC_EP, now)
    assert node.datagrams_to_send() == [] and sum(node.drops.values()) == 1


def test_a_node_resends_an_unanswered_tunnel_init():
    """Found by node.sealed: a ROUTE_UPDATE moves the world's relayed tunnel to DIRECT, cn
    does not answer the init within 0.5 s, and the resend raises out of handle_timer. Any
    tunnel init that needs a resend (a lost packet, a NAT not yet punched, a COOKIE_REPLY)
    does the same."""
    node, now = _machine("mn")
    tunnel = next(iter(node.tunnels))
    update = Direction(
        tunnel.dc_id,
        tunnel.tunnel_id,
        Route.DIRECT,
        Role.INITIATE,
        "mn.ntm.example",
        "cn.ntm.example",
        tunnel.peer_vip,
        "::",
        key("cn").public,
        (CN_OUT,),
    )
    node.receive(_sealed_to(node.session.ring.current, encode(RouteUpdate(7, update))), DC_EP, now)
    assert any(d[1] == 1 and to == CN_OUT for d, to in node.datagrams_to_send())
    node.handle_timer(now + 0.6)
    assert [to for d, to in node.datagrams_to_send() if d[1] == 1] == [CN_OUT]


# --- the DC survives what used to stop it (v1's REGISTER, v2's init) -------------------------


def _register_init(initiator: str, body: bytes) -> bytes:
    inits = Initiations(key(initiator), Indexes(seeds.world_module.counter_random("t")))
    size = REPLY_MAX[MsgType.REGISTER]
    return inits.start(key("dc").public, body, size, 10.0, seeds.EPOCH + 10.0).datagram


def test_the_dc_answers_no_stranger_and_no_unencodable_register():
    """Issue 10: v1 echoed a stranger's name in a REFUSED reply that could not be encoded
    (U+0130 grows when lower-cased). In v2 a stranger's key gets no reply at all, and an
    admitted key's REGISTER whose name is not a v2 name is dropped before any answer."""
    dc, now = _machine("dc")
    name = ("\u0130" * 60).encode()
    body = bytes((MsgType.REGISTER,)) + bytes(12) + bytes((len(name),)) + name
    dc.receive(_register_init("stranger", encode(Register(1, 2, "mn.ntm.example"))), STRANGER, now)
    dc.receive(_register_init("mn", body), MN_OUT, now + 0.1)
    assert dc.datagrams_to_send() == []
    assert dc.drops["unadmitted_key"] == 1 and dc.drops["malformed_body"] == 1


def test_the_rs_forwards_nothing_for_a_stranger():
    relay, now = _machine("rs")
    before = relay.forwarded
    data = [d for s, t, d in world().sent if t == RS_EP and d[1] in (4, 5, 6)]
    for datagram in data:
        relay.receive(datagram, STRANGER, now)
    assert relay.datagrams_to_send() == [] and relay.forwarded == before
