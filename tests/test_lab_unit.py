"""Tests for `ntma lab` that need no root: the topology as data, the state, the configs
and keys it writes, the CLI's parsing and refusals, and `status` over a fake lab (state.json
and logs, no namespaces). The real namespace lab is tested in `test_lab_netns.py`.

These are the lab's own tests: besides its public API they reach a few of its parts
(`ntma.lab.lifecycle`, `configs`, `demo`) to test them alone.
"""

from __future__ import annotations

import base64
import json
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ntma import lab
from ntma.config_write import to_toml
from ntma.lab import LabError, configs, demo, lab_status, lab_up, lifecycle

from .netns_util import DEFAULT_NAMESPACES


def test_topology_default_mn_behind_cone_nat_cn_direct() -> None:
    topo = lab.build_topology({"mn": "cone", "cn": "none"})
    names = {ns.name for ns in topo.namespaces}
    assert names == DEFAULT_NAMESPACES
    addrs = topo.addresses()
    assert addrs["ntma-mn"] == {"eth0": "10.10.1.2/24"}
    assert addrs["ntma-mn-nat"] == {"wan0": "198.51.100.41/24", "lan0": "10.10.1.1/24"}
    assert addrs["ntma-cn"] == {"eth0": "198.51.100.30/24"}
    # the adapter defaults to a cone NAT; the GN link carries no addresses at all
    assert addrs["ntma-adapter"] == {"eth0": "10.10.3.2/24"}
    assert addrs["ntma-adapter-nat"] == {"wan0": "198.51.100.51/24", "lan0": "10.10.3.1/24"}
    assert addrs["ntma-gn"] == {}
    assert addrs["ntma-rs"] == {"eth0": "198.51.100.60/24"}
    bridge_ports = [link.a.name for link in topo.links if link.bridge]
    assert len(bridge_ports) == len(set(bridge_ports)) == 6
    assert all(len(name) <= 15 for name in bridge_ports)
    relay = next(ns for ns in topo.namespaces if ns.name == "ntma-rs")
    assert relay.role == "relay"
    inet = next(ns for ns in topo.namespaces if ns.name == "ntma-inet")
    assert inet.block_udp_between is None  # --block-direct is off by default


def test_topology_gn_link_and_adapter_rows() -> None:
    topo = lab.build_topology({"mn": "cone", "cn": "none"})
    by_name = {ns.name: ns for ns in topo.namespaces}
    assert by_name["ntma-gn"].role == "general-node"
    assert by_name["ntma-gn"].default_via is None  # no routes on the GN
    adapter = by_name["ntma-adapter"]
    assert (adapter.role, adapter.fqdn, adapter.nat) == ("adapter", "gn.ntm.example", "cone")
    assert adapter.default_via == "10.10.3.1" and adapter.ip_forward
    assert by_name["ntma-adapter-nat"].ip_forward and by_name["ntma-adapter-nat"].role == "nat"
    (gn_link,) = [link for link in topo.links if "ntma-gn" in (link.a.ns, link.b.ns)]
    ends = {(end.ns, end.name): end for end in (gn_link.a, gn_link.b)}
    assert set(ends) == {("ntma-adapter", "gn0"), ("ntma-gn", "eth0")}
    assert all(end.cidr is None and not end.ipv6 for end in ends.values())
    assert gn_link.bridge is None


def test_topology_adapter_direct() -> None:
    topo = lab.build_topology({"mn": "cone", "cn": "none", "adapter": "none"})
    names = {ns.name for ns in topo.namespaces}
    assert "ntma-adapter-nat" not in names and {"ntma-gn", "ntma-adapter"} <= names
    assert topo.addresses()["ntma-adapter"] == {"eth0": "198.51.100.50/24"}
    adapter = next(ns for ns in topo.namespaces if ns.name == "ntma-adapter")
    assert adapter.default_via is None and adapter.ip_forward and adapter.nat == "none"


def test_topology_cn_nat_symmetric_rule() -> None:
    topo = lab.build_topology({"mn": "none", "cn": "symmetric"})
    router = next(ns for ns in topo.namespaces if ns.name == "ntma-cn-nat")
    assert router.nat == "symmetric"
    assert "masquerade fully-random" in lab.nat_ruleset("wan0", "symmetric")
    assert topo.addresses()["ntma-mn"] == {"eth0": "198.51.100.40/24"}


def test_topology_symmetric_everywhere() -> None:
    nat = {"mn": "symmetric", "cn": "symmetric", "adapter": "symmetric"}
    topo = lab.build_topology(nat)
    routers = {ns.name: ns.nat for ns in topo.namespaces if ns.role == "nat"}
    assert routers == {
        "ntma-mn-nat": "symmetric",
        "ntma-cn-nat": "symmetric",
        "ntma-adapter-nat": "symmetric",
    }
    assert lab.resolve_nat_modes(nat) == nat


def test_topology_cn_behind_mns_nat() -> None:
    """--cn-nat same: no ntma-cn-nat; mn's router's lan0 is a bridge with a port for each."""
    topo = lab.build_topology({"mn": "symmetric", "cn": "same"})
    by_name = {ns.name: ns for ns in topo.namespaces}
    assert "ntma-cn-nat" not in by_name
    router = by_name["ntma-mn-nat"]
    assert (router.bridge, router.bridge_cidr, router.nat) == ("lan0", "10.10.1.1/24", "symmetric")
    addrs = topo.addresses()
    assert addrs["ntma-mn-nat"] == {"wan0": "198.51.100.41/24", "lan0": "10.10.1.1/24"}
    assert addrs["ntma-mn"] == {"eth0": "10.10.1.2/24"}
    assert addrs["ntma-cn"] == {"eth0": "10.10.1.3/24"}
    cn = by_name["ntma-cn"]
    assert (cn.nat, cn.default_via, cn.fqdn) == ("same", "10.10.1.1", "cn.ntm.example")
    lan_ports = {(link.a.name, link.b.ns) for link in topo.links if link.bridge == "lan0"}
    assert lan_ports == {("lan-mn", "ntma-mn"), ("lan-cn", "ntma-cn")}
    assert all(link.a.ns == "ntma-mn-nat" for link in topo.links if link.bridge == "lan0")
    state = lab.new_state(Path("/nonexistent"), topo, {"mn": "symmetric", "cn": "same"})
    assert state["nodes"]["cn"] == {
        "name": "cn",
        "ns": "ntma-cn",
        "fqdn": "cn.ntm.example",
        "nat": "same",
        "nat_ns": "ntma-mn-nat",
        "address": "10.10.1.3",
        "public_address": "198.51.100.41",
        "port": 7401,
        "slot": 1,
        "slots": {},  # behind another host's NAT: none of its own networks in use
        "net": "v4",
    }
    assert state["nodes"]["mn"]["slots"] == {"nat": 1}
    assert state["nat"] == {"mn": "symmetric", "cn": "same", "adapter": "cone"}


def test_cn_same_needs_mn_behind_a_nat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before anything is touched (so no root needed): one line, naming the fix."""
    with pytest.raises(LabError, match=r"mn has none: add --mn-nat cone") as info:
        lab_up(tmp_path, mn_nat="none", cn_nat="same", daemons=False)
    assert "\n" not in str(info.value)
    with pytest.raises(LabError, match="unknown NAT mode for mn"):
        lab_up(tmp_path, mn_nat="same", daemons=False)  # only cn can share a NAT
    for command in ("up", "demo"):
        argv = [command, "--mn-nat", "none", "--cn-nat", "same", "--run-dir", str(tmp_path)]
        assert lab.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"ntma lab {command}: error: ")
        assert "--cn-nat same puts cn behind mn's NAT" in err
    assert list(tmp_path.iterdir()) == []
    for flag in ("--mn-nat", "--adapter-nat"):
        with pytest.raises(SystemExit):
            lab.main(["up", flag, "same"])
        assert "invalid choice" in capsys.readouterr().err


def test_block_direct_covers_every_ntm_end_address() -> None:
    """Both network slots of every host (`lab move` goes to the second)."""
    expected = {f"198.51.100.{host}" for host in (30, 31, 32, 33, 40, 41, 42, 43, 50, 51, 52, 53)}
    assert set(lab.ntm_public_addresses()) == expected
    defs = [d.at_slot(s) for d in (*lab.NODE_DEFS, lab.ADAPTER_DEF) for s in (1, 2)]
    derived = {ip for d in defs for ip in (d.direct_ip, d.wan_ip)}
    assert derived == expected  # from the topology table, not a list of its own
    assert not {lab.DC_IP, lab.RS_IP, lab.WEB_IP} & expected
    topo = lab.build_topology({"mn": "cone"}, block_direct=True)
    inet = next(ns for ns in topo.namespaces if ns.name == "ntma-inet")
    assert set(inet.block_udp_between or ()) == expected
    rules = lab.block_direct_ruleset(lab.ntm_public_addresses())
    assert rules.startswith("table bridge ntma_block_direct {")
    assert "hook forward" in rules
    assert "ip protocol udp ip saddr @ntm_ends ip daddr @ntm_ends counter drop" in rules
    assert all(ip in rules for ip in expected)


def test_toml_writer_round_trips() -> None:
    sections = {
        "dc": {"listen": "198.51.100.10:7400", "keepalive_interval": 5, "path": Path("/x y")},
        "admission": {"mn.ntm.example": "a+b/c=", "plain_key": True},
        "dns": {"ntm_suffixes": ["ntm.example"]},
    }
    parsed = tomllib.loads(to_toml(sections))
    assert parsed["dc"] == {"listen": "198.51.100.10:7400", "keepalive_interval": 5, "path": "/x y"}
    assert parsed["admission"] == {"mn.ntm.example": "a+b/c=", "plain_key": True}
    assert parsed["dns"]["ntm_suffixes"] == ["ntm.example"]
    tables = to_toml({"a": {"x": 1}, "relays": [{"address": "h:1"}, {"address": "h:2"}]})
    assert "[[relays]]" in tables
    assert tomllib.loads(tables) == {
        "a": {"x": 1},
        "relays": [{"address": "h:1"}, {"address": "h:2"}],
    }


def test_generate_key_format(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    path = tmp_path / "k.key"
    pub = lab.generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.count("\n") == 1
    raw = base64.b64decode(text.strip(), validate=True)
    assert len(raw) == 32 and len(base64.b64decode(pub)) == 32
    derived = X25519PrivateKey.from_private_bytes(raw).public_key()
    assert base64.b64encode(derived.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode() == pub


def test_cli_rejects_unknown_nat_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        lab.main(["up", "--mn-nat", "full-cone-please"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lab.main(["up", "--adapter-nat", "full-cone-please"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_adapter_flags() -> None:
    args = lab.build_parser().parse_args(["up"])
    assert (args.adapter_nat, args.no_adapter) == ("cone", False)
    args = lab.build_parser().parse_args(["up", "--adapter-nat", "symmetric", "--no-adapter"])
    assert (args.adapter_nat, args.no_adapter) == ("symmetric", True)


@pytest.mark.parametrize("command", ["up", "demo"])
def test_cli_nat_and_block_direct_flags(command: str) -> None:
    args = lab.build_parser().parse_args([command])
    assert (args.mn_nat, args.cn_nat, args.adapter_nat) == ("cone", "none", "cone")
    assert args.block_direct is False
    for mode in ("none", "cone", "symmetric"):
        argv = [command, "--mn-nat", mode, "--cn-nat", mode, "--adapter-nat", mode]
        args = lab.build_parser().parse_args(argv)
        assert (args.mn_nat, args.cn_nat, args.adapter_nat) == (mode, mode, mode)
    args = lab.build_parser().parse_args([command, "--cn-nat", "same", "--block-direct"])
    assert (args.cn_nat, args.block_direct) == ("same", True)


def test_cli_demo_hands_block_direct_to_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_lab_up(run_dir: Path, **options: Any) -> dict[str, Any]:
        seen.update(options)
        raise LabError("stop here")

    monkeypatch.setattr(demo, "lab_up", fake_lab_up)
    argv = ["demo", "--mn-nat", "symmetric", "--cn-nat", "same", "--block-direct"]
    assert lab.main([*argv, "--run-dir", "/nonexistent"]) == 1
    assert seen["mn_nat"] == "symmetric" and seen["cn_nat"] == "same"
    assert seen["block_direct"] is True
    assert demo.lab_up is fake_lab_up  # put back afterwards


def _write_log(path: Path, events: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for event in events:
            f.write((event if isinstance(event, str) else json.dumps(event)) + "\n")


def test_status_routes_fallbacks_and_nat_types_from_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fake lab (state.json and logs, no namespaces): status reads the events."""
    topo = lab.build_topology({"mn": "cone", "cn": "cone"})
    state = lab.new_state(tmp_path, topo, {"mn": "cone", "cn": "cone"})
    logs = {name: Path(d["log"]) for name, d in state["daemons"].items()}
    old_lab = {"event": "route_decided", "tunnel_id": 1, "route": "direct", "requester": "x"}
    _write_log(logs["dc"], [old_lab])  # an earlier lab in this run dir: not reported
    state.daemons["dc"].log_start = logs["dc"].stat().st_size
    decided = {
        "event": "route_decided",
        "tunnel_id": 7,
        "requester": "mn.ntm.example",
        "target": "cn.ntm.example",
        "route": "punch",
        "why": "both behind endpoint-independent (cone) NATs",
        "initiator": "mn.ntm.example",
        "relay": "198.51.100.60:7500",
        "family": 4,
        "timestamp": "2025-01-01T00:00:01Z",
        "level": "info",
    }
    relayed = {**decided, "tunnel_id": 8, "route": "relay", "timestamp": "2025-01-01T00:00:03Z"}
    _write_log(
        logs["dc"],
        [
            "dc starting (not json)",
            {"event": "dc_ready"},
            {"event": "node_nat", "fqdn": "mn.ntm.example", "reach": "unknown"},
            {"event": "node_nat", "fqdn": "cn.ntm.example", "reach": "cone"},
            {"event": "node_nat", "fqdn": "cn.ntm.example", "reach": "filtered", "family": 6},
            decided,
            {"event": "node_nat", "fqdn": "mn.ntm.example", "reach": "cone"},
            {"event": "route_decided_not", "tunnel_id": 9},
            relayed,
            '{"event": "route_decided", "tunnel_id": 10',  # a line still being written
        ],
    )
    fallback = {
        "event": "route_fallback",
        "tunnel": 7,
        "peer": "cn.ntm.example",
        "from": "punch",
        "to": "relay",
        "timestamp": "2025-01-01T00:00:02Z",
    }
    _write_log(logs["mn"], [{"event": "tunnel_up", "route": "relay"}, fallback])
    _write_log(logs["adapter"], [{**fallback, "tunnel": 11, "timestamp": "2025-01-01T00:00:04Z"}])
    lab.save_state(state)

    status = lab_status(tmp_path)
    want_route = {k: decided[k] for k in (*lab.ROUTE_FIELDS, "timestamp")}
    assert status["routes"] == [
        want_route,
        {**want_route, "tunnel_id": 8, "route": "relay", "timestamp": "2025-01-01T00:00:03Z"},
    ]
    assert status["fallbacks"] == [
        {"node": "mn", **{k: fallback[k] for k in (*lab.FALLBACK_FIELDS, "timestamp")}},
        {
            "node": "adapter",
            "tunnel": 11,
            "peer": "cn.ntm.example",
            "from": "punch",
            "to": "relay",
            "timestamp": "2025-01-01T00:00:04Z",
        },
    ]
    assert status["nat_types"] == {"mn.ntm.example": "cone", "cn.ntm.example": "cone"}
    assert status["nat_types6"] == {"cn.ntm.example": "filtered"}
    assert status["relay"]["address"] == "198.51.100.60" and status["relay"]["port"] == 7500

    assert lab.main(["status", "--json", "--run-dir", str(tmp_path)]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert as_json["routes"] == status["routes"] and as_json["nat_types"] == status["nat_types"]
    assert lab.main(["status", "--run-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "tunnel 7: mn.ntm.example -> cn.ntm.example: punch" in text
    assert "tunnel 8: mn.ntm.example -> cn.ntm.example: relay" in text
    assert "mn: tunnel 7 to cn.ntm.example: punch -> relay" in text
    assert "adapter: tunnel 11 to cn.ntm.example: punch -> relay" in text
    assert "cn.ntm.example" in text.split("NAT types")[1].split("routes")[0]


def test_relay_and_dc_configs(tmp_path: Path) -> None:
    """Keys and configs are written without namespaces; the project's loaders accept them."""
    topo = lab.build_topology({})
    state = lab.new_state(tmp_path, topo, {})
    lifecycle.prepare_run_dir(tmp_path)
    configs.write_keys_and_configs(state)
    keys = state["keys"]
    assert set(keys) == {"dc", "rs", "mn", "cn", "adapter"}
    rs_key = Path(keys["rs"]["private_key_file"])
    assert rs_key == tmp_path / "keys" / "rs.key"
    assert stat.S_IMODE(rs_key.stat().st_mode) == 0o600
    relay_toml = tmp_path / "configs" / "relay.toml"
    assert state["configs"]["relay"] == str(relay_toml)
    assert relay_toml.read_text() == (
        "[relay]\n"
        'listen = "198.51.100.60:7500"\n'
        f'private_key_file = "{tmp_path}/keys/rs.key"\n'
        "idle_timeout = 60\n"
        f'control_socket = "{configs.control_socket(state, "relay")}"\n'
        'metrics_listen = "127.0.0.1:9400"\n'
        "\n"
        "[dc]\n"
        f'public_key = "{keys["dc"]["public_key"]}"\n'
        "\n"
        "[log]\n"
        'level = "info"\n'
        "stats_interval = 2\n"
    )
    dc_text = (tmp_path / "configs" / "dc.toml").read_text()
    assert dc_text.index("[admission]") < dc_text.index("[[relays]]") < dc_text.index("[log]")
    dc = tomllib.loads(dc_text)
    assert dc["dc"]["probe_listen"] == "198.51.100.10:7401"
    assert dc["relays"] == [
        {"address": "198.51.100.60:7500", "public_key": keys["rs"]["public_key"]}
    ]
    relay = state["daemons"]["relay"]
    assert relay["ns"] == "ntma-rs"
    assert relay["cmd"][1:] == ["-m", "ntma", "relay", "--config", str(relay_toml)]
    assert relay["log"] == str(tmp_path / "logs" / "relay.log")
    assert list(state["daemons"]).index("relay") == list(state["daemons"]).index("dc") + 1
    config = pytest.importorskip("ntma.config")
    loaded = config.load_dc_config(tmp_path / "configs" / "dc.toml")
    if hasattr(loaded, "relays"):
        rs_pub = base64.b64decode(keys["rs"]["public_key"])
        assert loaded.relays == [(("198.51.100.60", 7500), rs_pub)]
        assert loaded.probe_listen == (lab.DC_IP, 7401)
    if hasattr(config, "load_relay_config"):
        rs = config.load_relay_config(relay_toml)
        assert rs.listen == ("198.51.100.60", 7500)
        assert rs.dc_public_key == loaded.key.public


def test_state_json_round_trip_and_read_only_view(tmp_path: Path) -> None:
    topo = lab.build_topology({"mn": "symmetric", "cn": "same"}, block_direct=True)
    state = lab.new_state(tmp_path, topo, {"mn": "symmetric", "cn": "same"})
    lifecycle.prepare_run_dir(tmp_path)
    configs.write_keys_and_configs(state)
    state.daemons["dc"].pid = 4242
    lab.save_state(state)
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved == state.to_json() and saved["version"] == 2
    loaded = lab.load_state(tmp_path)
    assert loaded == state  # typed all the way: Paths, Namespace rows, records
    assert loaded.namespaces["ntma-inet"].block_udp_between == tuple(
        saved["block_direct"]["addresses"]
    )
    assert state["daemons"]["dc"]["pid"] == 4242 and state["run_dir"] == str(tmp_path)
    with pytest.raises(TypeError):  # a snapshot: writing into it would be lost
        state["daemons"]["dc"]["pid"] = 1  # type: ignore[index]
    with pytest.raises(KeyError):
        state["no_such_field"]
    (tmp_path / "state.json").write_text(json.dumps({**saved, "version": 1}))
    assert lab.load_state(tmp_path) is None  # another version: `down` cleans up by name


def test_lab_configs_load_back_as_built(tmp_path: Path) -> None:
    """One schema: each config the lab builds is what the role's loader reads from its file."""
    from dataclasses import replace

    from ntma import config

    loaders = {
        config.DcConfig: config.load_dc_config,
        config.RelayConfig: config.load_relay_config,
        config.NodeConfig: config.load_node_config,
        config.AdapterConfig: config.load_adapter_config,
    }
    state = lab.new_state(tmp_path, lab.build_topology({}), {})
    lifecycle.prepare_run_dir(tmp_path)
    configs.write_keys_and_configs(state)
    built = configs.lab_configs(state)
    assert list(built) == ["dc", "relay", "mn", "cn", "adapter"] == list(state.configs)
    for name, (cfg, _) in built.items():
        loaded = loaders[type(cfg)](state.configs[name])
        assert replace(loaded, key=cfg.key) == cfg, name
        assert loaded.key.public == cfg.key.public


def _imports(path: Path) -> list[str]:
    """Modules `path` imports, lazy ones included, spelled absolutely (ntma.x.y: names)."""
    import ast

    here = list(path.parts[:-1])  # the package a relative import starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [f"{module}:{alias.name}" for alias in node.names]
    return found


def test_only_the_lab_imports_its_parts() -> None:
    """ntma.bench, the CLI and the other tests use `ntma.lab`'s API, never a submodule or an
    underscore name (the lab's own tests, test_lab_*.py, may test its parts)."""
    root = Path(__file__).resolve().parents[1]
    submodules = {p.stem for p in (root / "ntma" / "lab").glob("*.py")} - {"__init__"}
    lab_dir = root / "ntma" / "lab"
    files = [p for p in (root / "ntma").rglob("*.py") if lab_dir not in p.parents]
    files += [p for p in (root / "tests").glob("*.py") if not p.name.startswith("test_lab_")]
    offending = []
    for path in files:
        for name in _imports(path.relative_to(root)):
            module, _, imported = name.partition(":")
            if module.startswith("ntma.lab.") or (
                module == "ntma.lab" and (imported in submodules or imported.startswith("_"))
            ):
                offending.append(f"{path.relative_to(root)}: {name}")
    assert offending == []
    assert set(lab.__all__) <= set(dir(lab))
