"""Route decision: which tunnel route two registered ends take (pure).

The DC compares each node's own view of its endpoints with the endpoint it
observes; a node whose observed endpoint is not among its own is behind a NAT.
Today: direct routes where at least one end is reachable. Hole punching
(both ends behind endpoint-independent NATs) and the Relay Server slot in as
further rows of the table in decide_route().
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..proto.buffer import Endpoint
from ..proto.messages import Route


class Reach(enum.Enum):
    PUBLIC = "public"  # observed endpoint is one of the node's own
    NAT = "nat"  # behind a NAT of not yet classified type


def reach_of(observed: Endpoint, local_endpoints: list[Endpoint]) -> Reach:
    return Reach.PUBLIC if tuple(observed) in {tuple(e) for e in local_endpoints} else Reach.NAT


@dataclass(frozen=True)
class RoutePlan:
    route: Route
    requester_initiates: bool  # else the target opens the tunnel toward the requester
    why: str


def decide_route(requester: Reach, target: Reach) -> RoutePlan | None:
    """None: no route this DC can direct yet."""
    if target is Reach.PUBLIC:
        why = (
            "both ends public"
            if requester is Reach.PUBLIC
            else "requester behind NAT, target public"
        )
        return RoutePlan(Route.DIRECT, True, why)
    if requester is Reach.PUBLIC:
        return RoutePlan(Route.DIRECT, False, "target behind NAT opens toward public requester")
    return None  # both behind NATs: hole punching or relay (not yet)
