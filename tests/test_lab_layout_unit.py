"""Tests for the lab's layouts with several general nodes behind the adapter (`--gns N`)
and a second adapter (`--adapters 2`, `--adapter2-nat`), needing no root: the topology as
data, MACs, the state and its JSON form, the DC's admission and the adapters' [devices],
the DHCP client daemons, status over a fake lab, and the CLI's flags and refusals. On the
real namespaces: `test_lab_layout_netns.py`.

The lab's own tests: besides its public API they reach `ntma.lab.configs`, `lifecycle`,
`cli` and `demo`.
"""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from ntma import lab
from ntma.lab import LabError, LabState, configs, demo, lab_status, lab_up, lifecycle


def _by_name(topo: lab.Topology) -> dict[str, Any]:
    return {ns.name: ns for ns in topo.namespaces}


def test_one_gn_is_a_veth_to_gn0_with_a_fixed_mac() -> None:
    topo = lab.build_topology({})
    assert "ntma-gnsw" not in _by_name(topo)
    (link,) = [k for k in topo.links if "ntma-gn" in (k.a.ns, k.b.ns)]
    assert (link.a.ns, link.a.name, link.a.mac) == ("ntma-adapter", "gn0", None)
    assert (link.b.ns, link.b.name, link.b.mac) == ("ntma-gn", "eth0", "02:00:00:00:0a:01")


def test_three_gns_share_a_switch_with_gn0() -> None:
    topo = lab.build_topology({}, gns=3)
    by_name = _by_name(topo)
    switch = by_name["ntma-gnsw"]
    assert (switch.role, switch.bridge, switch.ipv6_off, switch.node) == (
        "switch",
        "sw0",
        True,
        "adapter",
    )
    gns = {n: ns for n, ns in by_name.items() if ns.role == "general-node"}
    assert {n: ns.fqdn for n, ns in gns.items()} == {
        "ntma-gn": "gn.ntm.example",
        "ntma-gn2": "gn2.ntm.example",
        "ntma-gn3": "gn3.ntm.example",
    }
    ports = {(k.a.name, k.b.ns, k.b.name, k.b.mac) for k in topo.links if k.bridge == "sw0"}
    assert ports == {
        ("p-adapter", "ntma-adapter", "gn0", None),
        ("p-gn", "ntma-gn", "eth0", "02:00:00:00:0a:01"),
        ("p-gn2", "ntma-gn2", "eth0", "02:00:00:00:0a:02"),
        ("p-gn3", "ntma-gn3", "eth0", "02:00:00:00:0a:03"),
    }
    on_switch = [k for k in topo.links if k.bridge == "sw0"]
    assert all(k.a.ns == "ntma-gnsw" for k in on_switch)
    assert all(e.cidr is None and not e.ipv6 for k in on_switch for e in (k.a, k.b))
    addrs = topo.addresses()
    assert addrs["ntma-gnsw"] == addrs["ntma-gn2"] == addrs["ntma-gn3"] == {}
    macs = [g.mac for g in lab.lab_gns(8)]
    assert macs[-1] == "02:00:00:00:0a:08" and len(set(macs)) == 8


def test_layout_refused_before_anything_is_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for gns, adapters in ((0, 1), (9, 1), (1, 3)):
        with pytest.raises(LabError, match="choose"):
            lab_up(tmp_path, gns=gns, adapters=adapters, daemons=False)
    with pytest.raises(LabError, match="adapter2 behind adapter's NAT, but adapter has none"):
        lab_up(tmp_path, adapter_nat="none", adapters=2, adapter2_nat="same", daemons=False)
    assert lab.main(["up", "--gns", "9", "--run-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "ntma lab up: error: --gns 9: choose 1..8 general nodes\n"
    with pytest.raises(SystemExit):
        lab.main(["up", "--adapters", "3"])
    assert "invalid choice" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


ADAPTER2_LAYOUTS = {  # --adapter2-nat -> adapter2's eth0, its router (or None), its gateway
    "none": ("198.51.100.70/24", None, None),
    "cone": ("10.10.4.2/24", "ntma-adapter2-nat", "10.10.4.1"),
    "symmetric": ("10.10.4.2/24", "ntma-adapter2-nat", "10.10.4.1"),
    "same": ("10.10.3.3/24", None, "10.10.3.1"),
}


@pytest.mark.parametrize("nat", list(ADAPTER2_LAYOUTS))
def test_second_adapter_behind_each_nat(nat: str) -> None:
    nat_by_node = {"adapter2": nat}
    topo = lab.build_topology(nat_by_node, adapters=2)
    by_name, addrs = _by_name(topo), topo.addresses()
    eth0, router, gateway = ADAPTER2_LAYOUTS[nat]
    adapter2 = by_name["ntma-adapter2"]
    assert (adapter2.role, adapter2.fqdn, adapter2.nat) == ("adapter", "gnb.ntm.example", nat)
    assert adapter2.ip_forward and adapter2.default_via == gateway
    assert addrs["ntma-adapter2"] == {"eth0": eth0}
    if router:
        assert by_name[router].nat == nat and by_name[router].role == "nat"
        assert addrs[router] == {"wan0": "198.51.100.71/24", "lan0": "10.10.4.1/24"}
    assert "ntma-adapter2-nat" in by_name if router else "ntma-adapter2-nat" not in by_name
    (gn_link,) = [k for k in topo.links if "ntma-gnb" in (k.a.ns, k.b.ns)]
    assert (gn_link.a.ns, gn_link.a.name) == ("ntma-adapter2", "gn0")
    assert (gn_link.b.ns, gn_link.b.mac) == ("ntma-gnb", "02:00:00:00:0b:01")
    assert by_name["ntma-gnb"].fqdn == "gnb.ntm.example"
    lan = {(k.a.ns, k.a.name, k.b.ns) for k in topo.links if k.bridge == "lan0"}
    if nat == "same":  # the adapter's router's LAN is a bridge with a port for each
        assert by_name["ntma-adapter-nat"].bridge == "lan0"
        assert lan == {
            ("ntma-adapter-nat", "lan-adapter", "ntma-adapter"),
            ("ntma-adapter-nat", "lan-adapter2", "ntma-adapter2"),
        }
    else:
        assert lan == set()
    state = lab.new_state(Path("/nonexistent"), topo, nat_by_node, adapters=2)
    assert state.nat == {"mn": "cone", "cn": "none", "adapter": "cone", "adapter2": nat}
    host = state.adapters["adapter2"]
    assert host.address == eth0.split("/")[0] and host.gns == ["ntma-gnb"]
    public = {"none": "198.51.100.70", "same": "198.51.100.51"}.get(nat, "198.51.100.71")
    assert host.public_address == public
    assert state.adapter.name == "adapter" and list(state.hosts())[-1] == "adapter2"


def test_second_adapters_addresses_are_its_own_and_blocked_with_the_others() -> None:
    one, two = set(lab.ntm_public_addresses()), set(lab.ntm_public_addresses(2))
    assert two - one == {f"198.51.100.{h}" for h in (70, 71, 72, 73)}
    taken = {lab.DC_IP, lab.RS_IP, lab.WEB_IP, *one}
    assert not (two - one) & taken
    adapter2 = lab.ADAPTER2_DEF
    assert {adapter2.lan_net, adapter2.slot2.lan_net if adapter2.slot2 else None}.isdisjoint(
        {d.at_slot(s).lan_net for d in (*lab.NODE_DEFS, lab.ADAPTER_DEF) for s in (1, 2)}
    )
    topo = lab.build_topology({}, block_direct=True, adapters=2)
    inet = _by_name(topo)["ntma-inet"]
    assert set(inet.block_udp_between or ()) == two


def _big_lab(tmp_path: Path, **options: Any) -> LabState:
    nat_by_node = {"adapter2": "symmetric"}
    topo = lab.build_topology(nat_by_node, gns=3, adapters=2)
    state = lab.new_state(tmp_path, topo, nat_by_node, gns=3, adapters=2, **options)
    lifecycle.prepare_run_dir(tmp_path)
    configs.write_keys_and_configs(state)
    return state


def test_state_admission_and_devices_for_three_gns_and_two_adapters(tmp_path: Path) -> None:
    from dataclasses import replace

    from ntma.config import DeviceConfig, load_adapter_config, load_dc_config

    state = _big_lab(tmp_path)
    assert list(state.gns) == ["ntma-gn", "ntma-gn2", "ntma-gn3", "ntma-gnb"]
    gn2 = state.gns["ntma-gn2"]
    assert (gn2.fqdn, gn2.mac, gn2.adapter, gn2.switch_ns) == (
        "gn2.ntm.example",
        "02:00:00:00:0a:02",
        "adapter",
        "ntma-gnsw",
    )
    assert gn2.resolv_conf == lab.ETC_NETNS / "ntma-gn2" / "resolv.conf"
    assert state.gns["ntma-gnb"].adapter == "adapter2" and state.gns["ntma-gnb"].switch_ns is None
    assert state.adapter.gns == ["ntma-gn", "ntma-gn2", "ntma-gn3"]
    assert state.adapter.switch_ns == "ntma-gnsw" and state.gn.ns == "ntma-gn"
    assert state["adapter"]["name"] == "adapter" and state["gn"]["ns"] == "ntma-gn"
    assert state.daemons["adapter2"].ns == "ntma-adapter2"
    assert state.configs["adapter2"] == tmp_path / "configs" / "adapter2.toml"
    assert not [d for d in state.daemons if d.startswith("dhcp-")]
    pub = {name: base64.b64decode(k["public_key"]) for name, k in state["keys"].items()}
    assert load_dc_config(state.configs["dc"]).admission == {
        "mn.ntm.example": pub["mn"],
        "cn.ntm.example": pub["cn"],
        "gn.ntm.example": pub["adapter"],
        "gn2.ntm.example": pub["adapter"],
        "gn3.ntm.example": pub["adapter"],
        "gnb.ntm.example": pub["adapter2"],
    }
    first, second = (load_adapter_config(state.configs[n]) for n in ("adapter", "adapter2"))
    assert (first.fqdn, second.fqdn) == ("gn.ntm.example", "gnb.ntm.example")
    assert first.devices == tuple(
        DeviceConfig(bytes([2, 0, 0, 0, 0x0A, i]), f"gn{i if i > 1 else ''}.ntm.example")
        for i in (1, 2, 3)
    )
    assert second.devices == (DeviceConfig(bytes([2, 0, 0, 0, 0x0B, 1]), "gnb.ntm.example"),)
    assert not first.default_device and not second.default_device
    for name, (cfg, _) in configs.lab_configs(state).items():  # one schema: the round trip
        loaded = {"adapter": first, "adapter2": second}.get(name)
        if loaded:
            assert replace(loaded, key=cfg.key) == cfg, name
    lab.save_state(state)
    assert lab.load_state(tmp_path) == state


def test_dhcp_clients_are_lab_daemons_only_when_asked(tmp_path: Path) -> None:
    state = _big_lab(tmp_path, dhcp=True)
    clients = {n: d for n, d in state.daemons.items() if n.startswith("dhcp-")}
    assert list(clients) == ["dhcp-gn", "dhcp-gn2", "dhcp-gn3", "dhcp-gnb"]
    assert [Path(d.cmd[0]).name for d in clients.values()] == [
        "dhclient",
        "udhcpc",
        "dhclient",
        "dhclient",
    ]
    assert clients["dhcp-gn2"].ns == "ntma-gn2" and "-f" in clients["dhcp-gn2"].cmd
    assert "-d" in clients["dhcp-gn"].cmd and clients["dhcp-gn"].cmd[-1] == "eth0"
    assert lifecycle.dhcp_tools(3, 2) == ("dhclient", "udhcpc")
    assert lifecycle.dhcp_tools(1, 2) == ("dhclient",)


def test_status_lists_every_gn_and_adapter(tmp_path: Path) -> None:
    lab.save_state(_big_lab(tmp_path))
    status = lab_status(tmp_path)
    assert list(status["adapters"]) == ["adapter", "adapter2"]
    assert status["adapters"]["adapter2"]["config"] == str(tmp_path / "configs" / "adapter2.toml")
    assert status["adapter"]["name"] == "adapter" and list(status["gns"])[-1] == "ntma-gnb"
    text = lab.format_status(status)
    assert "ntma-gn3     gn3.ntm.example      02:00:00:00:0a:03  behind adapter" in text
    assert "ntma-gnb     gnb.ntm.example      02:00:00:00:0b:01  behind adapter2" in text


@pytest.mark.parametrize("command", ["up", "demo"])
def test_cli_layout_flags(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = lab.build_parser().parse_args([command])
    assert (args.gns, args.adapters, args.adapter2_nat) == (1, 1, "cone")
    argv = [command, "--gns", "3", "--adapters", "2", "--adapter2-nat", "same"]
    args = lab.build_parser().parse_args(argv)
    assert (args.gns, args.adapters, args.adapter2_nat) == (3, 2, "same")
    seen: dict[str, Any] = {}

    def fake_lab_up(run_dir: Path, **options: Any) -> Any:
        seen.update(options)
        raise LabError("stop here")

    monkeypatch.setattr(demo if command == "demo" else lab.cli, "lab_up", fake_lab_up)
    assert lab.main([*argv, "--run-dir", "/nonexistent"]) == 1
    assert (seen["gns"], seen["adapters"], seen["adapter2_nat"]) == (3, 2, "same")
    assert lab.build_parser().parse_args(["up", "--dhcp"]).dhcp is True


def test_adapter2_moves_and_restarts_like_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ntma.lab import mobility

    nat_by_node = {"adapter2": "same"}
    topo = lab.build_topology(nat_by_node, adapters=2)
    state = lab.new_state(tmp_path, topo, nat_by_node, adapters=2)
    with pytest.raises(lab.LabRefused, match="shared by adapter2 .* move adapter2 first"):
        mobility.plan_move(state, "adapter", "public")
    plan = mobility.plan_move(state, "adapter2", "cone")
    assert (plan.old.address, plan.old.nat_ns) == ("10.10.3.3", "ntma-adapter-nat")
    assert plan.removed == ()  # the router it leaves is the adapter's, and stays
    assert (plan.new.address, plan.new.public_address) == ("10.10.4.2", "198.51.100.71")
    assert plan.attachment.host.ip_forward
    lab.save_state(lab.new_state(tmp_path, lab.build_topology({}), {}))  # one adapter
    for argv in (["move", "adapter2", "--to", "public"], ["restart", "adapter2"]):
        assert lab.main([*argv, "--run-dir", str(tmp_path)]) == 2
        assert "adapter2 is not in this lab" in capsys.readouterr().err


def test_ipv6_vips_are_the_labs_option(tmp_path: Path) -> None:
    """`lab up --vip6` gives the DC its IPv6 pool; without it the DC has none."""
    from ntma import config

    for vip6, pool in ((False, None), (True, ipaddress.IPv6Network(lab.VIP6_POOL))):
        run = tmp_path / str(vip6)
        state = lab.new_state(run, lab.build_topology({}), {}, vip6=vip6)
        lifecycle.prepare_run_dir(run)
        configs.write_keys_and_configs(state)
        assert config.load_dc_config(run / "configs" / "dc.toml").vip6_pool == pool
        assert lab.LabState.from_json(state.to_json()).dc.vip6_pool == state.dc.vip6_pool


def test_ipv6_networks_are_named_after_their_ipv4_address() -> None:
    from ntma.lab import ipv6

    assert ipv6.ipv6_of("198.51.100.40") == "2001:db8::40"
    assert ipv6.lan_ipv6_of("10.10.1.2") == "2001:db8:10:1::2"  # a LAN behind a router
    ipv6.check_nets({"mn": "dual", "cn": "v6"}, {"mn": "none", "cn": "none"})
    ipv6.check_nets({"mn": "v6", "cn": "dual"}, {"mn": "cone", "cn": "symmetric"})
    with pytest.raises(LabError, match="--cn-nat none, cone or symmetric"):
        ipv6.check_nets({"cn": "dual"}, {"cn": "same"})
    with pytest.raises(LabError, match="unknown network"):
        ipv6.check_nets({"cn": "v5"}, {"cn": "none"})
    state = lab.new_state(Path("/nonexistent"), lab.build_topology({"mn": "none"}), {"mn": "none"},
                          nets={"mn": "dual", "cn": "v4"})
    assert state.dc.ipv6 and state.nodes["mn"].net == "dual"


def test_a_dual_stack_labs_daemons_listen_on_both_families(tmp_path: Path) -> None:
    from ntma import config

    nat = {"mn": "none", "cn": "none"}
    state = lab.new_state(tmp_path, lab.build_topology(nat), nat, nets={"mn": "dual", "cn": "v6"})
    lifecycle.prepare_run_dir(tmp_path)
    configs.write_keys_and_configs(state)
    dc = config.load_dc_config(tmp_path / "configs" / "dc.toml")
    assert dc.listen == ("::", 7400)
    assert [ep for ep, _ in dc.relays] == [("198.51.100.60", 7500), ("2001:db8::60", 7500)]
    mn = config.load_node_config(tmp_path / "configs" / "mn.toml")
    assert (mn.listen, mn.dc_address, mn.dc_address6) == (
        ("::", 7401), ("198.51.100.10", 7400), ("2001:db8::10", 7400)
    )
    cn = config.load_node_config(tmp_path / "configs" / "cn.toml")
    assert (cn.dc_address, cn.dc_address6) == (("2001:db8::10", 7400), None)
