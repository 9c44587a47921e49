"""Tests for `lab move`, `lab restart` and `lab nat-reset` that need no root: the move
topology and plan as data, the state after a move, and the refusals (one line, exit 2).
The real moves are in `test_lab_move_netns.py`.

These are the lab's own tests: besides its public API they reach `ntma.lab.mobility` and
`ntma.lab.state` to test the plan and its record alone.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ntma import lab
from ntma.lab import LabRefused, LabState, mobility
from ntma.lab import state as lab_state


def _state(tmp: Path, **nat: str) -> LabState:
    nat_by_node = {"mn": "cone", "cn": "none", "adapter": "cone", **nat}
    topo = lab.build_topology(nat_by_node)
    return lab.new_state(tmp, topo, nat_by_node)


def _move(state: LabState, name: str, to: str) -> mobility.MovePlan:
    """Plan a move and record it, as `lab_move` does around the namespace commands."""
    plan = mobility.plan_move(state, name, to)
    lab_state.record_attachment(state, plan.new, plan.attachment, plan.removed)
    return plan


def test_move_topology_to_the_second_nat_slot() -> None:
    mn = lab.NODE_DEFS[0]
    att = lab.move_topology(mn, "symmetric", 2)
    assert att.host.name == "ntma-mn" and att.host.default_via == "10.10.11.1"
    assert att.host.nat == "symmetric"
    (router,) = att.routers
    assert (router.name, router.role, router.nat) == ("ntma-mn-nat2", "nat", "symmetric")
    assert router.masquerade_oif == "wan0" and router.ip_forward
    addrs = lab.Topology((att.host, *att.routers), att.links).addresses()
    assert addrs == {
        "ntma-mn": {"eth0": "10.10.11.2/24"},
        "ntma-mn-nat2": {"wan0": "198.51.100.43/24", "lan0": "10.10.11.1/24"},
    }
    ports = [link.a.name for link in att.links if link.bridge == "br0"]
    assert ports == ["p-mn-nat2"]


def test_move_topology_public_and_the_adapters_uplink_only() -> None:
    att = lab.move_topology(lab.NODE_DEFS[0], "none", 1)
    assert att.routers == () and att.host.default_via is None and att.host.nat == "none"
    (link,) = att.links
    assert (link.a.ns, link.a.name, link.bridge) == ("ntma-inet", "p-mn", "br0")
    assert (link.b.ns, link.b.name, link.b.cidr) == ("ntma-mn", "eth0", "198.51.100.40/24")
    adapter = lab.move_topology(lab.ADAPTER_DEF, "cone", 2)
    assert adapter.host.ip_forward and adapter.host.role == "adapter"
    assert [r.name for r in adapter.routers] == ["ntma-adapter-nat2"]
    ends = {(end.ns, end.name) for link in adapter.links for end in (link.a, link.b)}
    assert not {("ntma-adapter", "gn0"), ("ntma-gn", "eth0")} & ends  # the GN link stays
    with pytest.raises(lab.LabError, match="unknown NAT mode"):
        lab.move_topology(lab.ADAPTER_DEF, "same", 1)
    with pytest.raises(lab.LabError, match="no network slot 3"):
        lab.move_topology(lab.ADAPTER_DEF, "cone", 3)


def test_moves_alternate_slots_so_every_move_lands_on_a_new_address(tmp_path: Path) -> None:
    state = _state(tmp_path)
    seen = [state.nodes["mn"].public_address]
    steps = [
        ("public", "198.51.100.40", "198.51.100.40", ("ntma-mn-nat",), None),
        ("symmetric", "198.51.100.43", "10.10.11.2", (), "ntma-mn-nat2"),
        ("cone", "198.51.100.41", "10.10.1.2", ("ntma-mn-nat2",), "ntma-mn-nat"),
        ("public", "198.51.100.42", "198.51.100.42", ("ntma-mn-nat",), None),
        ("public", "198.51.100.40", "198.51.100.40", (), None),
    ]
    for to, public, address, removed, router in steps:
        plan = _move(state, "mn", to)
        mn = state.nodes["mn"]
        assert (mn.public_address, mn.address, mn.nat_ns) == (public, address, router)
        assert plan.removed == removed
        assert public != seen[-1]
        seen.append(public)
        assert state.nat["mn"] == lab.MOVE_TARGETS[to]
        assert not set(removed) & set(state.namespaces)  # planned namespaces follow
        if router:
            assert state.planned_addresses[router]["wan0"] == f"{public}/24"
        assert state.planned_addresses["ntma-mn"]["eth0"].split("/")[0] == address
        assert set(seen) <= set(lab.ntm_public_addresses())  # --block-direct covers them
    assert state.nodes["mn"].slots == {"nat": 1, "public": 1}


def test_move_record_and_segment(tmp_path: Path) -> None:
    state = _state(tmp_path)
    plan = mobility.plan_move(state, "adapter", "public")
    assert plan.removed == ("ntma-adapter-nat",)
    # who may cache the new address's MAC: the DC, RS, web and the other routers, not its own
    assert set(plan.segment) == {"ntma-dc", "ntma-rs", "ntma-web", "ntma-mn-nat", "ntma-cn"}
    record = mobility.move_record(plan, 1.0, 1.5, 2.0)
    assert {k: record[k] for k in ("node", "from", "to", "down_at", "up_at")} == {
        "node": "adapter",
        "from": "cone",
        "to": "public",
        "down_at": 1.5,
        "up_at": 2.0,
    }
    assert (record["old_public_address"], record["new_public_address"]) == (
        "198.51.100.51",
        "198.51.100.50",
    )
    lab_state.record_attachment(state, plan.new, plan.attachment, plan.removed)
    assert isinstance(state.adapter, lab.AdapterState) and state.adapter.gn_ns == "ntma-gn"
    assert state.namespaces["ntma-adapter"].ip_forward
    assert "ntma-gn" in state.namespaces  # untouched


def test_state_after_a_move_round_trips(tmp_path: Path) -> None:
    state = _state(tmp_path)
    _move(state, "mn", "symmetric")
    _move(state, "adapter", "public")
    back = LabState.from_json(json.loads(json.dumps(state.to_json())))
    assert back.to_json() == state.to_json()
    assert back.nodes["mn"].slots == {"nat": 2} and back.nodes["mn"].slot == 2
    assert back.adapter.public_address == "198.51.100.50"


def test_two_moves_at_once_both_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hosts moved from two threads at once: each records its own move (the state is
    read, changed and saved under the run directory's lock), none is lost."""
    lab.save_state(_state(tmp_path))
    barrier = threading.Barrier(2)

    def slow_detach(ns: str, routers: object) -> None:
        time.sleep(0.1)  # both threads have read the state by now, without the lock

    monkeypatch.setattr(mobility, "check_prerequisites", lambda: None)
    monkeypatch.setattr(mobility, "detach_host", slow_detach)
    monkeypatch.setattr(mobility, "forget_neighbour", lambda *a: None)
    monkeypatch.setattr(mobility, "attach_host", lambda *a: None)

    def move(node: str, to: str) -> None:
        barrier.wait()
        mobility.lab_move(tmp_path, node, to)

    threads = [threading.Thread(target=move, args=m) for m in (("mn", "public"), ("cn", "cone"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    saved = lab.load_state(tmp_path)
    assert saved is not None
    assert (saved.nat["mn"], saved.nat["cn"]) == ("none", "cone")
    assert "ntma-cn-nat" in saved.namespaces and "ntma-mn-nat" not in saved.namespaces


def test_a_shared_nat_owner_stays_its_guest_may_leave(tmp_path: Path) -> None:
    state = _state(tmp_path, cn="same")
    with pytest.raises(LabRefused, match=r"mn's NAT is shared by cn .*: move cn first") as info:
        mobility.plan_move(state, "mn", "public")
    assert "\n" not in str(info.value)
    plan = _move(state, "cn", "cone")
    assert plan.removed == ()  # mn's router is mn's: it stays
    assert state.nodes["cn"].nat_ns == "ntma-cn-nat" and state.nodes["cn"].slot == 1
    assert "ntma-mn-nat" in state.namespaces
    assert mobility.plan_move(state, "mn", "public").removed == ("ntma-mn-nat",)


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    assert lab.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ntma lab {argv[0]}: error: ")
    assert match in err


def test_cli_refusals_name_the_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = ["--run-dir", str(tmp_path)]
    hosts = "('mn', 'cn', 'adapter', 'adapter2')"
    _one_line_exit_2(["move", "gn", "--to", "public", *run_dir], capsys, f"choose {hosts}")
    _one_line_exit_2(
        ["move", "mn", "--to", "same", *run_dir], capsys, "choose ('public', 'cone', 'symmetric')"
    )
    _one_line_exit_2(
        ["restart", "web", *run_dir], capsys, "('dc', 'rs', 'mn', 'cn', 'adapter', 'adapter2')"
    )
    _one_line_exit_2(["nat-reset", "dc", *run_dir], capsys, f"choose {hosts}")
    _one_line_exit_2(["move", "mn", "--to", "public", *run_dir], capsys, "no lab in")
    assert list(tmp_path.iterdir()) == []  # nothing touched
    with pytest.raises(SystemExit):
        lab.main(["move", "mn"])  # --to is required
    assert "--to" in capsys.readouterr().err


def test_nat_reset_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state(tmp_path, cn="same")
    lab.save_state(state)
    run_dir = ["--run-dir", str(tmp_path)]
    _one_line_exit_2(["nat-reset", "cn", *run_dir], capsys, "behind ntma-mn-nat, another host's")
    _move(state, "cn", "public")
    lab.save_state(state)
    _one_line_exit_2(["nat-reset", "cn", *run_dir], capsys, "cn has no NAT of its own (public)")
    monkeypatch.setattr(mobility.shutil, "which", lambda _name: None)
    _one_line_exit_2(["nat-reset", "mn", *run_dir], capsys, "conntrack is missing")


def test_cli_move_arguments() -> None:
    args = lab.build_parser().parse_args(["move", "mn", "--to", "cone", "--down-for", "0.5"])
    assert (args.node, args.to, args.down_for, args.json) == ("mn", "cone", 0.5, False)
    args = lab.build_parser().parse_args(["restart", "rs", "--json"])
    assert (args.node, args.json, lab.RESTARTABLE[args.node]) == ("rs", True, "relay")
    assert lab.build_parser().parse_args(["nat-reset", "adapter"]).node == "adapter"
