"""SIGHUP reloads (reload.py), in process: the DC's admission list and relays over the sans-IO
machines (tests/sim.py), a node's and an adapter's names, the log level in force, and a
broken file refused whole. The lab test is tests/test_e2e_reload.py."""

from __future__ import annotations

import dataclasses
import logging

import structlog

from ntma.config import ConfigError, LogConfig
from ntma.dc.events import NameRemoved, NodeRevoked
from ntma.observe.log import _GATE, configure_logging, set_log_level
from ntma.proto.devices import DeviceRule, Devices
from ntma.proto.node import PeerGone
from ntma.reload import Reloader

from .sim import RS_EP, Net

MAC1, MAC2 = bytes.fromhex("020000000a01"), bytes.fromhex("020000000a02")


@dataclasses.dataclass(frozen=True)
class _Config:
    listen: tuple = ("0.0.0.0", 7400)
    names: tuple = ("a",)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)


def test_a_good_file_is_applied_and_a_broken_one_keeps_the_running_config():
    applied = []
    files = [_Config(names=("a", "b"), log=LogConfig(level="warning"), listen=("::", 7400))]

    def load():
        if not files:
            raise ConfigError("dc.zone", "missing", "add zone")
        return files.pop()

    reloader = Reloader(_Config(), load, lambda new: applied.append(new) or {"n": 1}, ("names",))
    try:
        assert reloader.reload()
        assert reloader.config.names == ("a", "b") and reloader.config.log.level == "warning"
        assert reloader.config.listen == ("0.0.0.0", 7400)  # needs a restart: not taken
        assert _GATE.level == logging.WARNING
        assert not reloader.reload()  # the broken file
        assert reloader.config.names == ("a", "b") and len(applied) == 1
    finally:
        set_log_level("info")


def test_the_level_in_force_filters_loggers_bound_before_it_changed(capsys):
    configure_logging("info", json=True)
    log = structlog.get_logger().bind(stage="x")  # bound at start, as every stage's is
    try:
        log.info("before")
        set_log_level("warning")
        log.info("hidden")
        log.warning("shown")
        set_log_level("debug")
        log.debug("now_shown")
    finally:
        set_log_level("info")
        structlog.reset_defaults()  # its logger factory holds this test's captured stderr
    err = capsys.readouterr().err
    assert "before" in err and "shown" in err and "now_shown" in err and "hidden" not in err


def _dc_net() -> Net:
    net = Net()
    for name, inside in (("mn", ("198.51.100.40", 7401)), ("cn", ("198.51.100.30", 7401))):
        net.add_node(name, inside)
        net.nodes[name].start(net.now)
    net.run(3.0)
    return net


def _admission(net: Net, *names: str) -> dict[str, bytes]:
    return {f"{n}.ntm.example": net.keys[n].public for n in names}


def test_the_dc_revokes_a_name_taken_off_the_list_and_admits_one_put_back():
    net = _dc_net()
    net.nodes["mn"].request_direction("cn.ntm.example", net.now)
    net.run(2.0)
    assert len(net.dc.tunnels.by_id) == 1
    changes = net.dc.reload(_admission(net, "mn"), (), [(RS_EP, net.rs_key.public)], net.now)
    assert changes["revoked"] == ["cn.ntm.example"] and changes["relays"] == 1
    net.dc_events.extend(net.dc.events())
    assert [e.fqdn for e in net.dc_events if isinstance(e, NodeRevoked)] == ["cn.ntm.example"]
    net.run(20.0)  # cn's keep-alives go unanswered, its REGISTERs get no reply at all
    assert net.keys["cn"].public not in net.dc.sessions
    gone = [e for e in net.events["mn"] if isinstance(e, PeerGone)]
    assert gone, net.events["mn"]  # mn was told its tunnel to cn is gone
    net.dc.reload(_admission(net, "mn", "cn"), (), [], net.now)
    assert net.dc.relays == []
    net.run(20.0)  # cn's next REGISTER is answered: no DC restart
    assert net.keys["cn"].public in net.dc.sessions


def test_an_added_name_taken_off_the_list_is_removed_and_the_session_stays():
    net = Net(admission={"tv.ntm.example": "mn"})
    net.add_node("mn", ("198.51.100.40", 7401))
    net.nodes["mn"].start(net.now)
    net.run(3.0)
    net.nodes["mn"].add_name("tv.ntm.example", net.now)
    net.run(2.0)
    session = net.dc.sessions[net.keys["mn"].public]
    assert "tv.ntm.example" in session.added
    changes = net.dc.reload(_admission(net, "mn"), (), [], net.now)
    assert changes["revoked"] == ["tv.ntm.example"]
    assert "tv.ntm.example" not in session.added and net.keys["mn"].public in net.dc.sessions
    assert any(isinstance(e, NameRemoved) for e in net.dc.events())


def test_a_new_devices_table_asks_new_names_and_forgets_devices_whose_rule_went():
    devices = Devices("gn.ntm.example", (DeviceRule(MAC1, "pc.ntm.example"),))
    device, _ = devices.admit(MAC1)
    devices.named("pc.ntm.example", "10.99.0.5")
    assert devices.by_vip and device is not None
    added, removed = devices.reconfigure((DeviceRule(MAC2, "tv.ntm.example"),))
    assert (added, removed) == (["tv.ntm.example"], ["pc.ntm.example"])
    assert MAC1 not in devices.by_mac and not devices.by_vip  # its packets now drop
    assert devices.admit(MAC2)[0].fqdn == "tv.ntm.example"
    assert devices.reconfigure((DeviceRule(MAC2, "tv.ntm.example"),)) == ([], [])
