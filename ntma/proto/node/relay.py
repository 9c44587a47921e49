"""The node's bindings at Relay Servers, one per tunnel that may go through a relay (sans-IO).

A binding is made when a Direction names a relay (RELAY, or PUNCH with a relay to fall
back to) and renewed every RELAY_REBIND_S, so the relay follows us if our address
changes. It is dropped once its tunnel is neither being built nor relayed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..messages import RelayBind, RelayBound, RelayInfo
from .wire import NodeTx, TunnelBeingBuilt, Wire

RELAY_REBIND_S = 20.0
RELAY_BIND_TIMEOUT_S = 6.0


@dataclass
class RelayBinding:
    relay: RelayInfo
    rebind_at: float


class RelayBindings:
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._by_tunnel: dict[int, RelayBinding] = {}

    def __contains__(self, tunnel_id: int) -> bool:
        return tunnel_id in self._by_tunnel

    def timers(self) -> list[float | None]:
        return [binding.rebind_at for binding in self._by_tunnel.values()]

    def bind(self, tunnel_id: int, relay: RelayInfo, now: float) -> None:
        wire = self._wire
        wire.know(relay.public_key)
        bind = RelayBind(wire.txid(), wire.epoch_ms(now), relay.grant)
        datagram = wire.seal(bind, relay.public_key, relay.endpoint)
        wire.out.append(datagram)
        context = TunnelBeingBuilt(tunnel_id)
        wire.tx.start(
            bind.txid, NodeTx.RELAY_BIND, [datagram], now, RELAY_BIND_TIMEOUT_S, context=context
        )
        self._by_tunnel[tunnel_id] = RelayBinding(relay, now + RELAY_REBIND_S)

    def on_bound(self, msg: RelayBound) -> bool:
        """True when msg answers a request of ours still in flight (not a duplicate)."""
        return self._wire.tx.finish(msg.txid) is not None

    def rebind_due(self, now: float, still_needed: Callable[[int], bool]) -> None:
        """Bind again where due; forget bindings whose tunnel no longer needs the relay."""
        for tunnel_id, binding in list(self._by_tunnel.items()):
            if not still_needed(tunnel_id):
                del self._by_tunnel[tunnel_id]
            elif now >= binding.rebind_at:
                self.bind(tunnel_id, binding.relay, now)
