"""Route decision: which tunnel route two registered ends take (pure).

The DC compares each node's own view of its endpoints with the endpoint it
observes (public, or behind a NAT), and the endpoint its probe port observes
(same mapping toward a second destination: endpoint-independent, "cone";
a different one: "symmetric"). A node with no NAT in a family (its own address, the common
case in IPv6) may still sit behind a stateful firewall that passes only replies: the DC's
filter port then tells (a PROBE_ACK sent unasked from a port the node never sent to; the
node echoes it if it arrived): until it is shown open the end is "filtered", which routes
as a cone NAT does (a punch opens it). The table, first match wins:

| requester        | target           | route  | who opens                          |
|------------------|------------------|--------|------------------------------------|
| any              | public           | direct | requester                          |
| public           | behind NAT       | direct | target, through its keep-alive map |
| same NAT as the target (same public address)                                     |
|                  |                  | direct | requester, to the private address  |
| cone or filtered | cone or filtered | punch  | both: requester sends requests,    |
|                  |                  |        | target punches; relay as fallback  |
| otherwise (symmetric or unknown on a NATed side)                                  |
|                  |                  | relay  | requester, through the RS          |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..proto.buffer import Endpoint
from ..proto.fields_v2 import Route


class Reach(enum.Enum):
    PUBLIC = "public"  # observed endpoint is one of the node's own (and not filtered)
    FILTERED = "filtered"  # its own endpoint, behind a firewall that passes only replies
    CONE = "cone"  # behind an endpoint-independent mapping
    SYMMETRIC = "symmetric"  # behind a mapping that depends on the destination
    NAT = "unknown"  # behind a NAT whose type is not known (yet)


def reach_of(
    observed: Endpoint,
    local_endpoints: list[Endpoint],
    probe_observed: Endpoint | None = None,
    unfiltered: bool | None = None,
) -> Reach:
    """`unfiltered`: None when the DC has no filter port (an end with no NAT is taken as
    public), else whether this endpoint was shown to pass unasked packets."""
    if tuple(observed) in {tuple(e) for e in local_endpoints}:
        return Reach.FILTERED if unfiltered is False else Reach.PUBLIC
    if probe_observed is None:
        return Reach.NAT
    return Reach.CONE if tuple(probe_observed) == tuple(observed) else Reach.SYMMETRIC


_PUNCHABLE = (Reach.CONE, Reach.FILTERED)  # a packet out opens the way in


@dataclass(frozen=True)
class RoutePlan:
    route: Route
    requester_initiates: bool  # else the target opens the tunnel toward the requester
    why: str
    private_endpoints: bool = False  # same NAT: aim at the peer's own addresses
    family: int = 0  # the address family the route is decided in (0: none, the relay)


def decide_route(
    requester: Reach, target: Reach, *, same_nat: bool, relay_available: bool
) -> RoutePlan | None:
    """None: no route this DC can direct (both NATed, no relay configured)."""
    if target is Reach.PUBLIC:
        why = (
            "both ends public"
            if requester is Reach.PUBLIC
            else "requester behind NAT or firewall, target public"
        )
        return RoutePlan(Route.DIRECT, True, why)
    if requester is Reach.PUBLIC:
        return RoutePlan(
            Route.DIRECT, False, "target behind NAT or firewall opens toward public requester"
        )
    if same_nat:
        return RoutePlan(
            Route.DIRECT,
            True,
            "both behind the same NAT: private addresses",
            private_endpoints=True,
        )
    if requester in _PUNCHABLE and target in _PUNCHABLE:
        why = (
            "both behind endpoint-independent (cone) NATs"
            if requester is target is Reach.CONE
            else "both behind cone NATs or stateful firewalls"
        )
        return RoutePlan(Route.PUNCH, True, why)
    if not relay_available:
        return None
    sides = {requester.value, target.value}
    why = (
        "a symmetric NAT on one side"
        if "symmetric" in sides
        else "a NAT of unknown type on one side"
    )
    return RoutePlan(Route.RELAY, True, f"both behind NATs, {why}: through the relay")
