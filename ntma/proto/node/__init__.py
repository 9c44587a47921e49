"""The node's signalling (protocol v2) as explicit parts (sans-IO); NodeSignalling
composes them.

signalling.py  NodeSignalling: the machine the stages drive (rules and dispatch in its docstring)
session.py     DcSession: the session with the DC (register, keep-alive, rekey), explicit states
handshake.py   Handshakes: tunnels' handshakes (TUNNEL_INIT both ways, rekeys, punch, fallback)
relay.py       RelayBindings: sessions with Relay Servers and the bindings there
names.py       DeviceNames: names held beside the REGISTER name (NAME_ADD: an adapter's devices)
ports.py       what handshake.py uses of the other parts, as protocols
wire.py        Wire: static key, the one Initiations, the gate, index owners, names, outputs
events.py      the events it reports
"""

from .events import (
    DcUnreachable,
    DirectionResolved,
    NameFailed,
    NameRegistered,
    NodeEvent,
    PeerGone,
    Registered,
    RegistrationFailed,
    RouteFallback,
    TunnelUp,
)
from .session import DcTx, SessionState
from .signalling import NodeSignalling

__all__ = [
    "DcTx",
    "DcUnreachable",
    "DirectionResolved",
    "NameFailed",
    "NameRegistered",
    "NodeEvent",
    "NodeSignalling",
    "PeerGone",
    "Registered",
    "RegistrationFailed",
    "RouteFallback",
    "SessionState",
    "TunnelUp",
]
