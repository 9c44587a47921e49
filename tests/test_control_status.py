"""What `ntma status` shows (ntma/control/node_status.py, server_status.py, render.py), read
from real machines: a DC, an RS and two nodes over tests/sim.py's network, with tunnels
built by the real handshakes and DATA sealed and opened by the data path's own code."""

from __future__ import annotations

import ipaddress
import json
import struct
from types import SimpleNamespace

from ntma.control.node_status import device_status, node_status
from ntma.control.render import columns, render, size
from ntma.control.server_status import dc_status, relay_status
from ntma.observe.spans import Spans
from ntma.proto.devices import Device

from .sim import EPOCH, Net

ZONE = "ntm.example"
MN_PUBLIC, CN_PUBLIC = ("198.51.100.40", 7401), ("198.51.100.30", 7401)
MN_LAN, CN_LAN = ("10.10.1.2", 7401), ("10.10.2.2", 7401)
MN_NAT, CN_NAT = ("198.51.100.41", 7401), ("198.51.100.31", 7401)
PAYLOAD = 20


def _net(mn, cn) -> Net:
    net = Net(filtering=True)
    net.add_node("mn", *mn)
    net.add_node("cn", *cn)
    for node in net.nodes.values():
        node.start(net.now)
    net.run(1.0)
    net.nodes["mn"].request_direction(f"cn.{ZONE}", net.now)
    net.run(4.0)
    return net


def _tunnel(net: Net, name: str):
    (tunnel,) = net.nodes[name].tunnels.by_ref.values()
    return tunnel


def _packet(src_vip: str, dst_vip: str) -> bytes:
    body = struct.pack("!HHHH", 5000, 5001, 8 + PAYLOAD, 0) + b"m" * PAYLOAD
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, 17, 0,
        ipaddress.IPv4Address(src_vip).packed, ipaddress.IPv4Address(dst_vip).packed,
    )  # fmt: skip
    return header + body


def _send(net: Net, src: str, dst: str, count: int) -> list[bytes]:
    tunnel = _tunnel(net, src)
    sent = [tunnel.seal(_packet(tunnel.self_vip, tunnel.peer_vip), net.now) for _ in range(count)]
    net.deliver([(d, tunnel.endpoint) for d in sent], src)
    return sent


def _status(net: Net, name: str) -> dict:
    return node_status(net.nodes[name], Spans(), net.now)


def _only_tunnel(status: dict) -> dict:
    (tunnel,) = status["tunnels"]
    return tunnel


def test_a_direct_tunnel_between_public_nodes_with_its_traffic_and_drops():
    net = _net((MN_PUBLIC,), (CN_PUBLIC,))
    packets_before = _tunnel(net, "mn").packets_out
    sent = _send(net, "mn", "cn", 3)
    net.deliver([(sent[0], _tunnel(net, "mn").endpoint)], "mn")  # one replayed
    mn, cn = _status(net, "mn"), _status(net, "cn")
    assert mn["role"] == "node" and mn["fqdn"] == f"mn.{ZONE}"
    assert mn["registration"]["state"] == "registered"
    assert mn["registration"]["nat"] == "public"
    assert ipaddress.IPv4Address(mn["registration"]["vip"]) in ipaddress.IPv4Network("10.99.0.0/16")
    assert mn["dc"]["last_ack_s_ago"] is not None and mn["dc"]["keepalives_lost"] == 0
    tunnel = _only_tunnel(mn)
    assert tunnel["peer"] == f"cn.{ZONE}" and tunnel["peer_vip"] == cn["registration"]["vip"]
    assert (tunnel["route"], tunnel["directed"]) == ("direct", "direct")
    assert tunnel["why"] == "the DC directed direct; we open it"
    assert tunnel["endpoint"] == f"{CN_PUBLIC[0]}:{CN_PUBLIC[1]}"
    assert tunnel["handshake_s_ago"] is not None
    assert tunnel["packets_out"] == packets_before + 3
    assert tunnel["bytes_out"] == 3 * (28 + PAYLOAD)  # the confirming keep-alive has none
    received = _only_tunnel(cn)
    assert received["why"] == "the DC directed direct; the peer opens it"
    assert received["bytes_in"] == 3 * (28 + PAYLOAD)
    assert received["drops"] == {"replay": 1}
    json.dumps(mn)  # plain data only


def test_the_dc_lists_every_node_and_the_route_it_decided_and_why():
    net = _net((MN_LAN, MN_NAT, None), (CN_PUBLIC,))
    status = dc_status(net.dc, net.now, wall_now=EPOCH + net.now)
    assert status["role"] == "dc" and status["zone"] == ZONE
    nodes = {n["name"]: n for n in status["nodes"]}
    assert set(nodes) == {f"mn.{ZONE}", f"cn.{ZONE}"}
    assert nodes[f"mn.{ZONE}"]["endpoints"] == {"ipv4": f"{MN_NAT[0]}:{MN_NAT[1]}"}
    assert nodes[f"mn.{ZONE}"]["nat"] == {"ipv4": "cone"}  # both DC ports saw one mapping
    assert nodes[f"cn.{ZONE}"]["nat"] == {"ipv4": "public"}
    assert all(n["online"] and n["last_seen_s_ago"] is not None for n in nodes.values())
    (route,) = status["routes"]
    assert (route["requester"], route["target"], route["route"]) == (
        f"mn.{ZONE}",
        f"cn.{ZONE}",
        "direct",
    )
    assert route["why"] == "requester behind NAT or firewall, target public"
    assert route["initiator"] == f"mn.{ZONE}" and not route["dormant"]
    text = render(status)
    assert text.splitlines()[0] == f"dc: {ZONE}, 2 nodes, 1 routes"
    assert "NAME" in text and "LAST SEEN" in text and f"mn.{ZONE} -> cn.{ZONE}" in text
    assert "requester behind NAT or firewall, target public" in text
    json.dumps(status)


def test_a_relayed_tunnel_at_both_nodes_and_its_entry_at_the_relay():
    net = _net((MN_LAN, MN_NAT, (MN_NAT[0], 40001)), (CN_LAN, CN_NAT, (CN_NAT[0], 40002)))
    _send(net, "mn", "cn", 4)
    mn = _status(net, "mn")
    assert mn["registration"]["nat"] == "symmetric"
    tunnel = _only_tunnel(mn)
    assert tunnel["route"] == tunnel["directed"] == "relay"
    assert tunnel["relay"] == tunnel["endpoint"] == "198.51.100.60:7500"
    status = relay_status(net.relay, net.now, wall_now=EPOCH + net.now)
    (entry,) = status["entries"]
    assert entry["tunnel_id"] == tunnel["tunnel_id"]
    assert all(end["endpoint"] for end in entry["ends"])  # both ends bound
    assert entry["packets"] >= 4 and entry["bytes"] > 4 * (28 + PAYLOAD)
    assert 0 < entry["grant_expires_in_s"] <= 3600
    assert 0 < entry["idle_expires_in_s"] <= 60
    text = render(status)
    assert text.startswith("relay: 1 entries")
    assert str(entry["tunnel_id"]) in text and "GRANT EXPIRES IN" in text
    json.dumps(status)


def test_the_node_table_reads_like_wg_show():
    net = _net((MN_PUBLIC,), (CN_PUBLIC,))
    _send(net, "mn", "cn", 2)
    text = render(_status(net, "mn"))
    lines = text.splitlines()
    assert lines[0] == f"node: mn.{ZONE}"
    assert "  state: registered" in lines
    assert "  nat: public (seen as 198.51.100.40:7401)" in lines
    assert f"tunnel: cn.{ZONE}" in lines
    assert "  route: direct (the DC directed direct; we open it)" in lines
    assert "  endpoint: 198.51.100.30:7401" in lines
    transfer = next(line for line in lines if line.startswith("  transfer: "))
    assert "0 B received" in transfer and "96 B sent" in transfer
    assert "  drops: none" in lines


def test_a_node_before_registration_shows_no_tunnels():
    net = Net()
    net.add_node("mn", MN_PUBLIC)
    status = _status(net, "mn")
    assert status["registration"] == {
        "state": "unregistered",
        "vip": None,
        "vip6": None,
        "observed": None,
        "nat": None,
        "keepalive_s": None,
    }
    assert status["dc"]["last_ack_s_ago"] is None
    assert "(no tunnels)" in render(status)


def test_an_adapters_device_with_its_lease():
    device = Device(bytes.fromhex("020000000a01"), "gn.ntm.example", "table")
    device.vip = ipaddress.IPv4Address("10.99.0.4").packed
    device.packets_out, device.bytes_out = 3, 300
    device.drops["foreign_ip"] += 2
    device.dhcp = SimpleNamespace(lease_end=700.0, address="10.99.0.4")  # type: ignore[assignment]
    status = device_status(device, now=100.0)
    assert status["mac"] == "02:00:00:00:0a:01" and status["vip"] == "10.99.0.4"
    assert status["lease"] == {"address": "10.99.0.4", "expires_in_s": 600.0, "valid": True}
    assert status["drops"] == {"foreign_ip": 2}
    node = {
        "role": "adapter",
        "fqdn": "gn.ntm.example",
        "registration": {"state": "registered", "vip": "10.99.0.4", "vip6": None},
        "dc": {"address": "198.51.100.10:7400", "last_ack_s_ago": 1.0, "keepalives_lost": 0},
        "tunnels": [],
        "devices": [status],
    }
    node["registration"] |= {"observed": None, "nat": "cone"}
    lines = render(node).splitlines()
    assert "device: gn.ntm.example" in lines
    assert "  lease: 10.99.0.4, expires in 600 s" in lines
    assert "  drops: foreign_ip 2" in lines
    node["stage_drops"] = {"inject": {"not_for_gn": 1}, "decapsulate": {"punch": 2}}
    assert "  stage drops: decapsulate/punch 2, inject/not_for_gn 1" in render(node).splitlines()
    device.dhcp = SimpleNamespace(lease_end=50.0, address="10.99.0.4")  # type: ignore[assignment]
    assert device_status(device, now=100.0)["lease"]["valid"] is False


def test_sizes_and_columns():
    assert [size(n) for n in (0, 1023, 1024, 1536, 3 * 1024**2)] == [
        "0 B",
        "1023 B",
        "1.00 KiB",
        "1.50 KiB",
        "3.00 MiB",
    ]
    assert columns(("A", "LONG"), [("xyz", "1")]) == "A    LONG\nxyz  1\n"
