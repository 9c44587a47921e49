"""The adapter's device table (proto/devices.py) and inbound rules (proto/inbound.py), pure:
which name a MAC gets, host names and what is remembered, bounds, MAC and VIP bound
together, and which packets from peers a rule lets in."""

from __future__ import annotations

import struct

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ntma.adapter.devices import load_leases, save_leases
from ntma.proto.devices import HELD_MAX, DeviceRule, Devices, client_fqdn, host_label
from ntma.proto.ether import build_ipv4, build_udp, ip_packed
from ntma.proto.gnlink import GnLink, Kind, classify_frame
from ntma.proto.inbound import UDP_FLOW_IDLE_S, UDP_FLOWS_MAX, InboundFilter, parse_rule
from ntma.testing.traffic import ADAPTER_MAC, gn_frame

OWN = "gn.ntm.example"
MAC1, MAC2, MAC3 = (bytes.fromhex(f"0200000a000{i}") for i in (1, 2, 3))
DEV2 = "gn2.ntm.example"
VIP1, VIP2, PEER = "10.99.0.3", "10.99.0.4", "10.99.0.9"


def _devices(**kwargs) -> Devices:
    return Devices(OWN, (DeviceRule(MAC2, DEV2),), **kwargs)


def test_the_table_names_its_macs_and_the_first_other_device_is_the_default():
    devices = _devices()
    assert devices.names_to_add() == [DEV2]  # the adapter's own name comes with REGISTER
    two, source = devices.admit(MAC2)
    assert (two.fqdn, source) == (DEV2, "table")
    one, source = devices.admit(MAC1)
    assert (one.fqdn, source) == (OWN, "default")
    assert devices.admit(MAC3) == (None, "unknown_device")  # the default is taken
    assert devices.admit(MAC1)[0] is one  # known: the same device


def test_no_default_device_when_the_operator_turns_it_off():
    assert _devices(default_device=False).admit(MAC1) == (None, "unknown_device")


def test_host_names_name_devices_in_the_operators_zone_and_are_remembered():
    devices = _devices(host_names="site1.ntm.example", default_device=False)
    printer, source = devices.admit(MAC1, host_name="Printer_Lobby.local")
    assert (printer.fqdn, source) == ("printer-lobby.site1.ntm.example", "host_name")
    assert devices.leases == {MAC1: printer.fqdn} and devices.leases_changed
    assert devices.admit(MAC3, host_name="printer-lobby") == (None, "name_taken")
    camera, _ = devices.admit(MAC3, fqdn="cam.site1.ntm.example")
    assert camera.fqdn == "cam.site1.ntm.example"
    restarted = Devices(OWN, (), host_names="site1.ntm.example", leases=dict(devices.leases))
    assert restarted.names_to_add() == [printer.fqdn, camera.fqdn]  # asked at start again
    assert restarted.admit(MAC1)[0].fqdn == printer.fqdn  # even without a host name now


def test_a_host_name_outside_the_zone_or_with_no_usable_label_is_not_used():
    devices = _devices(host_names="site1.ntm.example", default_device=False)
    assert devices.admit(MAC1, fqdn="evil.other.example") == (None, "unknown_device")
    assert devices.admit(MAC1, host_name="...") == (None, "unknown_device")


@given(st.text(max_size=300))
def test_any_host_name_gives_a_valid_label_or_none(text):
    label = host_label(text)
    assert label is None or (0 < len(label) <= 63 and label.strip("-") == label)
    if label is not None:
        assert set(label) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_client_fqdn_in_ascii_and_in_dns_wire_format():
    assert client_fqdn(b"\x00\x00\x00cam.site1.ntm.example") == "cam.site1.ntm.example"
    wire = b"\x05\x00\x00" + b"\x03cam\x05site1\x03ntm\x07example\x00"
    assert client_fqdn(wire) == "cam.site1.ntm.example"
    assert client_fqdn(b"\x00") is None


def test_at_most_max_devices():
    devices = Devices(OWN, (), host_names="s.ntm.example", max_devices=2)
    assert devices.admit(MAC1, host_name="a")[0] and devices.admit(MAC2, host_name="b")[0]
    assert devices.admit(MAC3, host_name="c") == (None, "too_many_devices")


def test_dhcp_frames_wait_for_the_vip_bounded():
    devices = _devices()
    two, _ = devices.admit(MAC2)
    assert all(devices.hold(two, bytes([i])) for i in range(HELD_MAX))
    assert not devices.hold(two, b"newest")  # the oldest makes room
    assert devices.take_held(two)[-1] == b"newest" and not two.held


def test_a_vip_comes_before_or_after_the_device_shows_up():
    devices = _devices()
    devices.named(DEV2, VIP2)  # asked at start: the VIP is known before the device
    two, _ = devices.admit(MAC2)
    assert two.vip == ip_packed(VIP2) and devices.by_vip[ip_packed(VIP2)] is two
    one, _ = devices.admit(MAC1)
    assert one.vip is None
    assert devices.named(OWN, VIP1) is one and devices.by_vip[ip_packed(VIP1)] is one
    assert devices.vip_of_name(DEV2) == ip_packed(VIP2)
    assert devices.name_of_vip(ip_packed(VIP2)) == DEV2 and devices.name_of_vip(b"\0" * 4) == ""


def _link() -> GnLink:
    link = GnLink(ADAPTER_MAC, _devices())
    link.set_vip(VIP1, 16)
    link.devices.named(DEV2, VIP2)
    link.devices.admit(MAC1)
    link.devices.admit(MAC2)
    return link


def _udp(src: str, dst: str, sport: int = 40000, dport: int = 9000) -> bytes:
    return build_udp(ip_packed(src), ip_packed(dst), sport, dport, b"x")


def test_mac_and_vip_are_bound_together_and_counted_per_device():
    link = _link()
    one, two = link.devices.by_mac[MAC1], link.devices.by_mac[MAC2]
    assert classify_frame(gn_frame(_udp(VIP1, PEER), MAC1), link) == (Kind.TUNNEL, "")
    assert classify_frame(gn_frame(_udp(VIP1, PEER), MAC2), link) == (Kind.DROP, "foreign_ip")
    assert classify_frame(gn_frame(_udp(VIP2, PEER), MAC1), link) == (Kind.DROP, "foreign_ip")
    assert classify_frame(gn_frame(_udp(VIP2, PEER), MAC3), link) == (Kind.DROP, "foreign_mac")
    assert (one.packets_out, two.packets_out) == (1, 0)
    assert (one.drops["foreign_ip"], two.drops["foreign_ip"]) == (1, 1)


# --- inbound rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "proto", "low", "high"),
    [("tcp/80", 6, 80, 80), ("UDP/5353", 17, 5353, 5353), ("tcp/8000-8100", 6, 8000, 8100),
     ("icmp", 1, 0, 0xFFFF)],
)
def test_rules_parse(text, proto, low, high):
    rule = parse_rule(text)
    assert (rule.proto, rule.low, rule.high) == (proto, low, high)


@pytest.mark.parametrize("text", ["sctp/1", "tcp", "tcp/0", "tcp/9-1", "tcp/x", "icmp/8", ""])
def test_bad_rules_say_what_is_wrong(text):
    with pytest.raises(ValueError):
        parse_rule(text)


def _tcp(src: str, dst: str, dport: int, flags: int) -> bytes:
    header = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)
    return build_ipv4(ip_packed(src), ip_packed(dst), 6, header)


def test_a_rule_list_lets_in_what_it_names_and_answers_to_the_device():
    rule = InboundFilter((parse_rule("tcp/80"), parse_rule("udp/5353")))
    assert rule.allows(_tcp(PEER, VIP1, 80, 0x02), 0.0)  # a SYN to the web server
    assert not rule.allows(_tcp(PEER, VIP1, 22, 0x02), 0.0)  # a SYN to ssh
    assert rule.allows(_tcp(PEER, VIP1, 40000, 0x12), 0.0)  # SYN-ACK: the device connected
    assert rule.allows(_tcp(PEER, VIP1, 40000, 0x10), 0.0)  # established
    assert rule.allows(_udp(PEER, VIP1, 9, 5353), 0.0)
    assert not rule.allows(_udp(PEER, VIP1, 9000, 40000), 0.0)  # nothing asked for it
    rule.note_outbound(_udp(VIP1, PEER, 40000, 9000), 1.0)  # the device asks...
    assert rule.allows(_udp(PEER, VIP1, 9000, 40000), 2.0)  # ...and the reply comes in
    assert not rule.allows(_udp(PEER, VIP1, 9001, 40000), 2.0)  # another port: not a reply
    assert not rule.allows(_udp(PEER, VIP1, 9000, 40000), 2.0 + UDP_FLOW_IDLE_S)  # expired
    echo_request = build_ipv4(ip_packed(PEER), ip_packed(VIP1), 1, b"\x08\x00" + bytes(6))
    echo_reply = build_ipv4(ip_packed(PEER), ip_packed(VIP1), 1, b"\x00\x00" + bytes(6))
    assert not rule.allows(echo_request, 0.0) and rule.allows(echo_reply, 0.0)
    assert InboundFilter((parse_rule("icmp"),)).allows(echo_request, 0.0)
    assert not rule.allows(build_ipv4(ip_packed(PEER), ip_packed(VIP1), 47, b"gre!"), 0.0)


def test_the_udp_flow_table_is_bounded():
    rule = InboundFilter(())
    for port in range(UDP_FLOWS_MAX + 10):
        rule.note_outbound(_udp(VIP1, PEER, 1024 + port, 53), 0.0)
    assert len(rule._udp) == UDP_FLOWS_MAX
    assert not rule.allows(_udp(PEER, VIP1, 53, 1024), 0.0)  # the oldest went first
    assert rule.allows(_udp(PEER, VIP1, 53, 1024 + UDP_FLOWS_MAX + 9), 0.0)


@given(st.binary(max_size=80), st.floats(0, 1e6))
def test_any_bytes_are_judged_without_raising(packet, now):
    rule = InboundFilter((parse_rule("tcp/80"),))
    rule.note_outbound(packet, now)
    assert rule.allows(packet, now) in (True, False)


def test_the_leases_file_round_trips_and_a_refusing_file_system_is_no_crash(tmp_path):
    path = tmp_path / "adapter.devices.json"
    save_leases(path, {MAC1: "printer.site1.ntm.example"})
    assert load_leases(path, None) == {MAC1: "printer.site1.ntm.example"}
    path.write_text("{not json")
    with capture_logs() as logs:
        assert load_leases(path, structlog.get_logger()) == {}
        save_leases(tmp_path / "no-such-dir" / "x.json", {MAC1: "a.ntm.example"})
    assert [e["event"] for e in logs] == ["leases_unreadable", "leases_not_saved"]
