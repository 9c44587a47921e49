"""The node's signalling as explicit parts (sans-IO); NodeSignalling composes them.

signalling.py  NodeSignalling: the machine the stages drive (rules in its docstring)
session.py     DcSession: registration and keep-alive with the DC, explicit states
handshake.py   Handshake: one per tunnel being built; Handshakes: those in flight
relay.py       RelayBindings: bindings at Relay Servers, with rebind timers
wire.py        Wire: keys, requests in flight (NodeTx kinds, typed contexts), outputs
events.py      the events it reports
"""

from .events import (
    DcUnreachable,
    DirectionResolved,
    NodeEvent,
    Registered,
    RegistrationFailed,
    RouteFallback,
    TunnelUp,
)
from .session import SessionState
from .signalling import NodeSignalling
from .wire import NodeTx

__all__ = [
    "DcUnreachable",
    "DirectionResolved",
    "NodeEvent",
    "NodeSignalling",
    "NodeTx",
    "Registered",
    "RegistrationFailed",
    "RouteFallback",
    "SessionState",
    "TunnelUp",
]
