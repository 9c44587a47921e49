"""`ntma bench` (in process part) runs end to end and reports every stage; the many-device
variants do each device's real work (nothing they time is dropped)."""

import json
import subprocess
import sys

from ntma.bench.stages import (
    DEVICES,
    answer_arps,
    answer_dhcp,
    many_devices_arp,
    many_devices_classify,
    many_devices_dhcp,
    sort_frames,
)
from ntma.observe.spans import StageStats
from ntma.proto.dhcp_codec import parse_dhcp
from ntma.proto.ether import ETH_HEADER, ip_packed, parse_udp
from ntma.testing.traffic import device_mac, device_vip


def test_bench_writes_json_markdown_and_covers_every_stage(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ntma", "bench", "--seconds", "0.1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    stages = {r["stage"] for r in report["stages"]}
    assert stages == {
        "classify",
        "arp",
        "dhcp",
        "encapsulate",
        "decapsulate",
        "inject",
        "signalling",
        "dns",
    }
    assert all(r["packets"] > 0 and r["median_ns"] > 0 for r in report["stages"])
    many = {r["stage"] for r in report["stages"] if f"{DEVICES} devices" in r["what"]}
    assert many == {"classify", "arp", "dhcp"}
    pipeline = report["pipeline"]
    assert pipeline["saturation"]["delivered"] > 0
    assert pipeline["light_load"]["latency_median_ns"] > 0
    assert pipeline["channel_hop_ns"] > 0
    assert pipeline["trio_memory_channel_hop_ns"] > 0
    assert pipeline["scheduler_pass_ns"] > 0
    assert "| encapsulate |" in (tmp_path / "bench.md").read_text()


def test_many_devices_classify_sends_each_frame_into_its_own_devices_tunnel():
    frames, link, table = many_devices_classify()
    stats = StageStats("classify")
    routed = sort_frames(frames, link, table, 1400, stats).routed
    assert len(routed) == DEVICES and not stats.drops
    assert len({id(tunnel) for tunnel, _ in routed}) == DEVICES
    assert all(tunnel.self_vip_packed == packet[12:16] for tunnel, packet in routed)
    devices = link.devices.by_mac.values()
    assert all(d.packets_out == 1 for d in devices)  # counted per device


def test_many_devices_arp_answers_each_device():
    requests, link = many_devices_arp()
    stats = StageStats("arp")
    replies = answer_arps(requests, link, stats)
    assert not stats.drops
    assert [r[:6] for r in replies] == [device_mac(i) for i in range(1, DEVICES + 1)]


def test_many_devices_dhcp_offers_each_device_its_own_vip():
    discovers, link = many_devices_dhcp()
    stats = StageStats("dhcp")
    replies, _ = answer_dhcp(discovers, link, stats, 0.0)
    assert not stats.drops and len(replies) == DEVICES
    offers = [parse_dhcp(parse_udp(r[ETH_HEADER:])[2]) for r in replies]
    assert all(o.message_type == 2 for o in offers)  # OFFER
    assert [(o.chaddr, o.yiaddr) for o in offers] == [
        (device_mac(i), device_vip(i)) for i in range(1, DEVICES + 1)
    ]
    assert {link.devices.by_mac[o.chaddr].vip for o in offers} == {
        ip_packed(device_vip(i)) for i in range(1, DEVICES + 1)
    }
