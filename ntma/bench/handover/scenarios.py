"""The scenarios, as data: the lab each runs on, the event, who moves where and back, who
talks to whom, and which target applies. `SCENARIOS` is the table `run_handover_bench`
walks, in this order; the names are the same in the JSON and the markdown table.

Every run is one event: a move (and then a move back, not measured, so the next run moves
the same way again; every move lands on a new public address, see `ntma.lab.lab_move`), a
restart of a daemon, or a NAT's mappings flushed. The UDP echo stream and the TCP transfer
always go from the client (mn, or the GN behind the adapter) to cn, by name for ntma, to
cn's wireguard-go address for wireguard-go.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Move:
    node: str  # mn | cn | adapter
    to: str  # public | cone | symmetric
    back: str  # where the return move takes it


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str  # the table's description
    target: str  # a key of settings.TARGETS
    lab: dict[str, str] = field(default_factory=dict)  # lab_up's NAT options
    moves: tuple[Move, ...] = ()  # event "move": in this order, one right after the other
    event: str = "move"  # move | restart | nat-reset
    subject: str | None = None  # restart / nat-reset: whose daemon or NAT
    client: str = "mn"  # mn | gn (the general node behind the adapter)
    tool: str = "ntma"  # ntma | wireguard-go
    break_before_make: bool = False  # the first move spends --down-for without a network
    wg_initiator: str | None = None  # wireguard-go: the side given the other's endpoint

    @property
    def movers(self) -> tuple[str, ...]:
        """The lab hosts whose event this is (for re-registration)."""
        return tuple(m.node for m in self.moves) or ((self.subject,) if self.subject else ())


def _move(node: str, frm: str, to: str) -> Move:
    return Move(node, to, frm)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "mn-cone-to-public-cn-public",
        "mn cone -> public, cn public",
        "public",
        {"mn_nat": "cone", "cn_nat": "none"},
        (_move("mn", "cone", "public"),),
    ),
    Scenario(
        "mn-cone-to-public-cn-cone",
        "mn cone -> public, cn cone",
        "public",
        {"mn_nat": "cone", "cn_nat": "cone"},
        (_move("mn", "cone", "public"),),
    ),
    Scenario(
        "mn-public-to-cone-cn-cone",
        "mn public -> cone, cn cone",
        "redirect",
        {"mn_nat": "none", "cn_nat": "cone"},
        (_move("mn", "public", "cone"),),
    ),
    Scenario(
        "mn-cone-to-symmetric-cn-cone",
        "mn cone -> symmetric, cn cone (relay)",
        "relay",
        {"mn_nat": "cone", "cn_nat": "cone"},
        (_move("mn", "cone", "symmetric"),),
    ),
    Scenario(
        "cn-public-to-cone-mn-cone",
        "cn (responder) public -> cone, mn cone",
        "redirect",
        {"mn_nat": "cone", "cn_nat": "none"},
        (_move("cn", "public", "cone"),),
    ),
    Scenario(
        "both-move",
        "mn cone -> public and cn public -> cone, one right after the other",
        "redirect",
        {"mn_nat": "cone", "cn_nat": "none"},
        (_move("mn", "cone", "public"), _move("cn", "public", "cone")),
    ),
    Scenario(
        "relayed",
        "mn symmetric -> another symmetric, cn symmetric (relay)",
        "relay",
        {"mn_nat": "symmetric", "cn_nat": "symmetric"},
        (_move("mn", "symmetric", "symmetric"),),
    ),
    Scenario(
        "adapter-cone-to-public",
        "adapter cone -> public (GN to cn), cn public",
        "public",
        {"adapter_nat": "cone", "cn_nat": "none"},
        (_move("adapter", "cone", "public"),),
        client="gn",
    ),
    Scenario(
        "break-before-make",
        "mn cone -> public, --down-for s without a network, cn public",
        "public",
        {"mn_nat": "cone", "cn_nat": "none"},
        (_move("mn", "cone", "public"),),
        break_before_make=True,
    ),
    Scenario(
        "restart",
        "cn's daemon killed (SIGKILL) and started again, mn cone",
        "restart",
        {"mn_nat": "cone", "cn_nat": "none"},
        event="restart",
        subject="cn",
    ),
    Scenario(
        "nat-reset",
        "mn's symmetric NAT flushed (conntrack -F), cn cone (relay)",
        "rebinding",
        {"mn_nat": "symmetric", "cn_nat": "cone"},
        event="nat-reset",
        subject="mn",
    ),
    Scenario(
        "wg-mn-cone-to-public-cn-public",
        "mn cone -> public, cn public",
        "public",
        {"mn_nat": "cone", "cn_nat": "none"},
        (_move("mn", "cone", "public"),),
        tool="wireguard-go",
        wg_initiator="mn",
    ),
    Scenario(
        "wg-mn-public-to-cone-cn-cone",
        "mn public -> cone, cn cone (cn holds mn's endpoint)",
        "redirect",
        {"mn_nat": "none", "cn_nat": "cone"},
        (_move("mn", "public", "cone"),),
        tool="wireguard-go",
        wg_initiator="cn",
    ),
    Scenario(
        "wg-cn-public-to-cone-mn-cone",
        "cn (responder) public -> cone, mn cone",
        "redirect",
        {"mn_nat": "cone", "cn_nat": "none"},
        (_move("cn", "public", "cone"),),
        tool="wireguard-go",
        wg_initiator="mn",
    ),
)
SCENARIO_NAMES: tuple[str, ...] = tuple(s.name for s in SCENARIOS)
BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}
