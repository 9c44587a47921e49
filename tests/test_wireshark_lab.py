"""The Wireshark dissector on a capture of the running lab: every datagram type decoded.

The lab: mn and cn behind symmetric NATs (their tunnel goes through the RS), the adapter
public (the GN's tunnel to cn is direct). tcpdump on every interface of the Internet
segment (ntma-inet) records, in order: mn registering again (a restart), the DC under a
burst of inits from 30 sources answering with COOKIE_REPLY, mn reaching cn by name (RS
session, relay envelopes, relayed DATA), the GN reaching cn (a direct tunnel), pings both
ways and one UDP datagram each way on each tunnel. tshark with contrib/wireshark/ntma.lua
then has to show all six datagram types with fields that agree with each other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import lab_restart, log_events, ns_run

from .netns_util import gn_dhclient, nc_one_way, wait_for
from .wireshark_util import ROOT, Decoded, tshark_decode, tshark_skip_reason

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(tshark_skip_reason() is not None, reason=str(tshark_skip_reason())),
]

CN_NAME, MN_NAME, GN_NAME = "cn.ntm.example", "mn.ntm.example", "gn.ntm.example"
BLAST_NS = "ntma-web"
BLAST_SOURCES = [f"198.51.100.{200 + i}" for i in range(30)]  # unused by the lab
T_INIT, T_RESP, T_COOKIE, T_DATA, T_SIGNAL, T_ENVELOPE = 1, 2, 3, 4, 5, 6


def _events(lab: dict[str, Any], name: str, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(lab["daemons"][name]["log"]) if e.get("event") == event]


def _start_capture(pcap: Path, tmp: Path) -> subprocess.Popen:
    """tcpdump on every interface of the Internet segment. Not --immediate-mode: with it
    the kernel dropped most of the cookie burst; buffered, nothing is lost."""
    err = tmp / "tcpdump.log"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", "ntma-inet", "tcpdump", "-i", "any", "-Z", "root", "-U"]
        + ["-B", "65536", "-n", "-w", str(pcap), "udp"],
        stdout=subprocess.DEVNULL,
        stderr=err.open("wb"),
    )
    wait_for(lambda: "listening on" in err.read_text(), 10, "tcpdump to listen")
    return proc


def _stop_capture(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # tcpdump flushes and closes the file
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _cookie_blast(lab: dict[str, Any]) -> dict[str, Any]:
    dc_key = _events(lab, "dc", "dc_ready")[-1]["public_key"]
    for address in BLAST_SOURCES:
        ns_run(BLAST_NS, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    try:
        out = ns_run(
            BLAST_NS,
            "env",
            f"PYTHONPATH={ROOT}",
            sys.executable,
            "-m",
            "tests.wireshark_blast",
            "--dc",
            "198.51.100.10:7400",
            "--dc-key",
            dc_key,
            "--sources",
            ",".join(BLAST_SOURCES),
            timeout=60,
        )
    finally:
        for address in BLAST_SOURCES:
            ns_run(BLAST_NS, "ip", "addr", "del", f"{address}/24", "dev", "eth0", check=False)
    return json.loads(out.stdout)


def _traffic(client_ns: str, client_name: str, tmp: Path, port: int) -> None:
    """The client reaches cn by name; pings and a UDP datagram each way."""
    dig = ns_run(client_ns, "dig", "+short", "+time=20", "+tries=1", CN_NAME, check=False)
    assert dig.stdout.strip(), f"{client_ns} could not resolve {CN_NAME}: {dig.stderr}"
    ping = ns_run(client_ns, "ping", "-c", "5", "-i", "0.2", "-W", "5", CN_NAME, check=False)
    assert " 0% packet loss" in ping.stdout, ping.stdout
    assert "from" in nc_one_way(client_ns, "ntma-cn", CN_NAME, port, tmp)
    assert "from ntma-cn" in nc_one_way("ntma-cn", client_ns, client_name, port + 1, tmp)


@pytest.fixture(scope="module")
def capture(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("wireshark-lab")
    pcap = tmp / "lab.pcap"
    options = {"mn_nat": "symmetric", "cn_nat": "symmetric", "adapter_nat": "none"}
    with open_lab(tmp / "run", **options) as lab:
        tcpdump = _start_capture(pcap, tmp)
        try:
            lab_restart(Path(lab["run_dir"]), "mn")  # a registration handshake, captured
            blast = _cookie_blast(lab)
            _traffic("ntma-mn", MN_NAME, tmp, 9400)
            lease = gn_dhclient(tmp)
            assert lease.returncode == 0, lease.stderr
            _traffic("ntma-gn", GN_NAME, tmp, 9402)
        finally:
            _stop_capture(tcpdump)
            gn_dhclient(tmp, "-x")
        routes = {e.get("route") for e in _events(lab, "cn", "tunnel_up")}
        routes |= {e.get("route") for e in _events(lab, "mn", "tunnel_up")}
        yield tshark_decode(pcap), blast, routes
    if os.environ.get("NTMA_KEEP_CAPTURE") is None:
        pcap.unlink(missing_ok=True)


def _of(packets: list[Decoded], t: int) -> list[Decoded]:
    return [p for p in packets if "ntma.type" in p.fields and p.type == t]


def _carried(packets: list[Decoded], t: int) -> list[Decoded]:
    return [p for p in _of(packets, T_ENVELOPE) if p.int("ntma.type", inner=True) == t]


def test_the_lab_used_both_routes(capture) -> None:
    _, _, routes = capture
    assert {"direct", "relay"} <= routes, routes


def test_every_datagram_type_is_decoded(capture) -> None:
    packets, _, _ = capture
    ntma = [p for p in packets if "ntma.type" in p.fields]
    assert {p.type for p in ntma} == {1, 2, 3, 4, 5, 6}
    assert {p.int("ntma.type", inner=True) for p in _of(ntma, T_ENVELOPE)} == {T_INIT, T_RESP}
    for p in ntma:
        assert not p.lua_error and not p.malformed, (p.frame, p.experts)
        assert p.fields["ntma.version"] == "2" and p.fields["ntma.reserved"] == "0x0000"


def test_registration_init_and_response_agree(capture) -> None:
    packets, _, _ = capture
    to_dc = [p for p in _of(packets, T_INIT) if p.dst_port == 7400]
    assert any(p.get("ntma.session.kind") == "node-DC" for p in to_dc)
    init_indexes = {p.int("ntma.sender_index") for p in to_dc}
    answers = [p for p in _of(packets, T_RESP) if p.src_port == 7400]
    assert answers, "no HANDSHAKE_RESP from the DC"
    for resp in answers:
        assert resp.int("ntma.receiver_index") in init_indexes
        assert resp.int("ntma.body_length") > 0
        init_frame = resp.int("ntma.session.init_frame")
        init = next(p for p in packets if p.frame == init_frame)
        assert init.int("ntma.sender_index") == resp.int("ntma.receiver_index")
    # the session's first SIGNALs are tied to that handshake
    dc_index = {r.int("ntma.sender_index") for r in answers}
    to_dc_signals = [p for p in _of(packets, T_SIGNAL) if p.int("ntma.receiver_index") in dc_index]
    assert to_dc_signals and all(p.get("ntma.session.kind") == "node-DC" for p in to_dc_signals)


def test_relayed_handshakes_agree(capture) -> None:
    packets, _, _ = capture
    inits = {p.int("ntma.sender_index", inner=True) for p in _carried(packets, T_INIT)}
    resps = _carried(packets, T_RESP)
    assert inits and resps
    for p in _of(packets, T_ENVELOPE):
        assert p.int("ntma.tunnel_id") != 0 and p.get("ntma.dc_id")
        assert p.get("ntma.session.kind", inner=True) in (None, "tunnel (through the RS)")
    for resp in resps:
        assert resp.int("ntma.receiver_index", inner=True) in inits
    rs_sessions = [p for p in _of(packets, T_INIT) if p.dst_port == 7500]
    assert rs_sessions and rs_sessions[0].get("ntma.session.kind") == "node-RS"


def test_cookie_replies_answer_the_blast(capture) -> None:
    packets, blast, _ = capture
    assert blast["cookies"], blast
    cookies = _of(packets, T_COOKIE)
    assert cookies
    blasted = {p.int("ntma.sender_index") for p in _of(packets, T_INIT) if p.dst_port == 7400}
    assert {p.int("ntma.receiver_index") for p in cookies} <= blasted
    if blast["sent_mac2"]:
        assert any(p.get("ntma.has_mac2") == "1" for p in _of(packets, T_INIT))


def test_data_counters_increase_both_ways(capture) -> None:
    packets, _, _ = capture
    first_seen: dict[int, list[int]] = defaultdict(list)
    for p in _of(packets, T_DATA):
        if p.get("ntma.punch"):
            continue
        counters = first_seen[p.int("ntma.receiver_index")]
        counter = p.int("ntma.counter")
        if counter not in counters:  # the capture sees a packet on every port it crosses
            counters.append(counter)
    streams = {index: c for index, c in first_seen.items() if len(c) >= 5}
    assert len(streams) >= 4, first_seen  # two tunnels, both ways
    for index, counters in streams.items():
        assert counters == sorted(counters), (hex(index), counters)
    sizes = [p.int("ntma.plaintext_length") for p in _of(packets, T_DATA)]
    assert any(s >= 84 for s in sizes)  # an inner ping (IPv4 84 bytes)
    assert any(p.get("ntma.keepalive") == "1" for p in _of(packets, T_DATA))


def test_transport_packets_are_tied_to_their_handshake(capture) -> None:
    packets, _, _ = capture
    tied = [
        p for p in _of(packets, T_DATA) + _of(packets, T_SIGNAL) if p.get("ntma.session.direction")
    ]
    directions = {p.get("ntma.session.direction") for p in tied}
    assert directions == {"initiator to responder", "responder to initiator"}
