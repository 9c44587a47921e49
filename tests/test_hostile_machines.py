"""Inputs the fuzzer found that upset the v1 machines (ntma.fuzz --repro), now dropped and
counted: each test is one reproducer."""

from __future__ import annotations

from ntma.fuzz import machines, seeds
from ntma.fuzz.catalog import all_targets
from ntma.fuzz.runner import replay
from ntma.proto.messages import Direction, Punch, Role, Route, RouteDirection


def test_a_punch_sealed_by_the_dc_is_dropped_by_a_node():
    node = machines._make_node()
    node.receive(seeds.sealed(Punch(0x11223345), "dc", "mn"), seeds.DC_ENDPOINT, 1.0)
    assert node.drops["unexpected Punch from DC"] == 1


def test_a_node_never_sends_to_ipv6_or_broadcast_endpoints_of_a_direction():
    node = machines._make_node()
    node.datagrams_to_send()
    direction = Direction(
        0x55667788,
        Route.DIRECT,
        Role.INITIATE,
        "cn.ntm.example",
        "10.99.0.6",
        seeds.key("cn").public,
        [("2001:db8:1::30", 7401), ("255.255.255.255", 7401), ("198.51.100.30", 7401)],
    )
    node.receive(seeds.sealed(RouteDirection(12, direction), "dc", "mn"), seeds.DC_ENDPOINT, 1.0)
    destinations = {addr for _, addr in node.datagrams_to_send()}
    assert ("2001:db8:1::30", 7401) not in destinations
    assert ("255.255.255.255", 7401) not in destinations
    assert ("198.51.100.30", 7401) in destinations
    assert node.drops["unsendable endpoint in a direction"] == 2


def test_the_dc_never_copies_an_unsendable_register_endpoint_into_a_direction():
    register = bytes.fromhex(
        "0001000000010000018bcfe56800000e6d6e2e6e746d2e6578616d706c6502040a0a01021ce9"
        "0620010db80000000000000000000000011ce9"
    )
    ask = bytes.fromhex("0005000000050000018bcfe56800000e636e2e6e746d2e6578616d706c65")
    # The target's property: every Direction the DC sends names only sendable endpoints.
    assert replay(all_targets()["dc.sealed"], [register, ask]) is None
