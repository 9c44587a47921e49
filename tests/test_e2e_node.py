"""Node to node on the namespace lab: unmodified curl, nc, iperf3 and dig reach a server
on another NTM node by name, through the encrypted tunnel, across a NAT.

Two topologies: mn behind a NAT with cn public (mn initiates), and mn public with cn
behind a NAT (the DC directs cn to open the tunnel through its keep-alive mapping).
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import log_events, ns_run, start_daemon, stop_daemon
from ntma.proto.crypto import StaticKey, write_key_file
from ntma.proto.handshake import T_DATA

from .netns_util import (
    dig,
    iperf,
    nc_one_way,
    serve_dir,
    start_in_ns,
    stop,
    udp_payloads,
    wait_for,
)

pytestmark = pytest.mark.netns

MARKER = b"NTMA-PLAINTEXT-MARKER-7f3c9a"
CN_NAME = "cn.ntm.example"
MN_NAME = "mn.ntm.example"
# The bridge port in ntma-inet facing mn's NAT: a bridge's own interface does not see
# unicast frames forwarded between ports, a port does.
MN_PORT = "p-mn-nat"


def _serve_files(lab: dict[str, Any], tmp: Path) -> subprocess.Popen:
    www = tmp / "cn-www"
    www.mkdir()
    (www / "hello.txt").write_text("hello from cn\n")
    (www / "marker.bin").write_bytes(MARKER * 40_000)  # ~1.1 MB of a recognisable pattern
    return serve_dir("ntma-cn", www, tmp / "http.log")


@pytest.fixture(scope="class")
def lab_cn_public(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("lab-a")
    with open_lab(tmp / "run", mn_nat="cone", cn_nat="none") as lab:
        server = _serve_files(lab, tmp)
        try:
            yield lab, tmp
        finally:
            stop(server)


@pytest.fixture(scope="class")
def lab_cn_nat(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("lab-b")
    with open_lab(tmp / "run", mn_nat="none", cn_nat="cone") as lab:
        server = _serve_files(lab, tmp)
        try:
            yield lab, tmp
        finally:
            stop(server)


def _vip(lab: dict[str, Any], name: str) -> str:
    registered = [
        e for e in log_events(lab["daemons"][name]["log"]) if e.get("event") == "registered"
    ]
    assert registered, f"{name} never registered"
    return registered[-1]["vip"]


def _curl(ns: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    return ns_run(ns, "curl", "-sS", "--max-time", "20", *extra, url, check=False, timeout=30)


class _ReachesCn:
    """Checks shared by both topologies (the fixture decides the NAT placement)."""

    lab_fixture_name = ""

    @pytest.fixture
    def lab(self, request):
        return request.getfixturevalue(self.lab_fixture_name)

    def test_dig_returns_cn_vip(self, lab):
        lab_state, _ = lab
        assert dig("ntma-mn", CN_NAME) == _vip(lab_state, "cn")
        assert ipaddress.ip_address(_vip(lab_state, "cn")) in ipaddress.ip_network("10.99.0.0/16")

    def test_curl_by_name_through_tunnel(self, lab):
        result = _curl("ntma-mn", f"http://{CN_NAME}:8080/hello.txt")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello from cn\n"

    def test_curl_one_megabyte(self, lab):
        result = ns_run(
            "ntma-mn",
            "sh",
            "-c",
            f"curl -sS --max-time 30 http://{CN_NAME}:8080/marker.bin | sha256sum",
            timeout=40,
        )
        import hashlib

        assert result.stdout.split()[0] == hashlib.sha256(MARKER * 40_000).hexdigest()

    def test_udp_datagrams_both_ways(self, lab):
        _, tmp = lab
        assert "from ntma-mn" in nc_one_way("ntma-mn", "ntma-cn", CN_NAME, 9000, tmp)
        assert "from ntma-cn" in nc_one_way("ntma-cn", "ntma-mn", MN_NAME, 9001, tmp)

    def test_iperf3_runs(self, lab):

        report = iperf("ntma-mn", "ntma-cn", CN_NAME, 5)
        assert report["end"]["sum_received"]["bytes"] > 1_000_000

    def test_ordinary_names_still_resolve(self, lab):
        assert dig("ntma-mn", "web.example") == "198.51.100.20"
        result = _curl("ntma-mn", "http://web.example/")
        assert "ordinary web host" in result.stdout


@pytest.mark.usefixtures("lab_cn_public")
class TestMnBehindNatCnPublic(_ReachesCn):
    lab_fixture_name = "lab_cn_public"

    def test_route_was_requester_initiates(self, lab):
        lab_state, _ = lab
        _curl("ntma-mn", f"http://{CN_NAME}:8080/hello.txt")
        decided = _events(lab_state, "dc", "route_decided")
        assert decided and decided[-1]["initiator"] == MN_NAME
        assert decided[-1]["why"] == "requester behind NAT or firewall, target public"

    def test_iperf3_reverse(self, lab):

        report = iperf("ntma-mn", "ntma-cn", CN_NAME, 5, "-R")
        assert report["end"]["sum_received"]["bytes"] > 1_000_000

    def test_internet_segment_carries_no_plaintext(self, lab):
        _, tmp = lab
        pcap = tmp / "inet.pcap"
        capture = _capture(pcap, "udp", tmp)
        try:
            result = _curl("ntma-mn", f"http://{CN_NAME}:8080/marker.bin", "-o", "/dev/null")
            assert result.returncode == 0
            time.sleep(0.5)
        finally:
            capture.terminate()
            capture.wait(5)
        raw = pcap.read_bytes()
        tunnel = [p for p in udp_payloads(pcap) if p[3] == 7401 or p[1] == 7401]
        carried = sum(len(p[4]) for p in tunnel)
        # The file crossed this segment inside the tunnel (a capture may miss a few frames).
        assert carried > len(MARKER) * 40_000 // 2
        assert MARKER not in raw and MARKER[:12] not in raw

    def test_replayed_and_tampered_packets_are_dropped_and_counted(self, lab):
        lab_state, tmp = lab
        pcap = tmp / "replay.pcap"
        capture = _capture(pcap, "udp and dst host 198.51.100.30 and dst port 7401", tmp)
        try:
            assert _curl("ntma-mn", f"http://{CN_NAME}:8080/hello.txt").returncode == 0
            time.sleep(0.5)
        finally:
            capture.terminate()
            capture.wait(5)
        data = [p[4] for p in udp_payloads(pcap) if len(p[4]) > 32 and p[4][1] == T_DATA]
        assert data, "no tunnel data packets captured"
        before = _decap_drops(lab_state)
        original = data[0]
        # A fresh counter passes the replay window, so authentication must catch it
        # (the header is authenticated data); a flipped payload byte likewise.
        tampered = bytearray(data[-1])
        tampered[8:16] = (1 << 40).to_bytes(8, "big")
        flipped = bytearray(data[-1])
        flipped[8:16] = ((1 << 40) + 1).to_bytes(8, "big")
        flipped[-1] ^= 0x01
        # An attacker on the Internet segment resends them from another address.
        script = (
            "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            "[s.sendto(bytes.fromhex(h),('198.51.100.30',7401)) for h in sys.argv[1:]]"
        )
        ns_run(
            "ntma-web",
            "python3",
            "-c",
            script,
            original.hex(),
            bytes(tampered).hex(),
            bytes(flipped).hex(),
        )
        after = wait_for(
            lambda: _decap_drops(lab_state, newer_than=before), 10, "cn's stats to count the drops"
        )
        assert after.get("replay", 0) >= 1
        assert after.get("auth", 0) >= 2
        # The tunnel keeps working, and its endpoint did not follow the attacker.
        assert _curl("ntma-mn", f"http://{CN_NAME}:8080/hello.txt").returncode == 0

    def test_unadmitted_key_cannot_register(self, lab):
        """v2 (docs/protocol.md 4.3 step 4): a key on no admission entry gets no reply at
        all (counted at the DC); an admitted key asking for another's name gets a bare
        REFUSED, and only the DC's log says why."""
        lab_state, tmp = lab
        rogue_key, mn_key = tmp / "rogue.key", tmp / "mn-copy.key"
        write_key_file(rogue_key, StaticKey.generate())
        mn_key.write_text(Path(lab_state["run_dir"], "keys", "mn.key").read_text())
        mn_key.chmod(0o600)  # a key file every user can read is refused at start
        dc_key = _dc_public(lab_state)
        unadmitted_before = _dc_drops(lab_state).get("unadmitted_key", 0)
        logs = {}
        cases = (
            ("cn.ntm.example", rogue_key),
            ("rogue.ntm.example", rogue_key),
            ("cn.ntm.example", mn_key),
        )
        for n, (fqdn, key_file) in enumerate(cases):
            config = tmp / f"rogue{n}.toml"
            log = logs[n] = tmp / f"rogue{n}.log"
            config.write_text(
                f'[node]\nfqdn = "{fqdn}"\nprivate_key_file = "{key_file}"\n'
                f'listen = "198.51.100.20:7409"\ntun_name = "rogue0"\n'
                f'[dc]\naddress = "198.51.100.10:7400"\npublic_key = "{dc_key}"\n'
                f'[dns]\nlisten = "127.0.0.9:5353"\n'
            )
            proc = start_in_ns(
                "ntma-web", "python3", "-m", "ntma", "node", "--config", str(config), log=log
            )
            try:
                if key_file == mn_key:
                    wait_for(
                        lambda log=log: [
                            e for e in log_events(log) if e.get("event") == "registration_refused"
                        ],
                        15,
                        f"{fqdn} under mn's key to be refused",
                    )
                else:
                    time.sleep(4.0)  # registration retries go unanswered
            finally:
                stop(proc)
            assert not [e for e in log_events(log) if e.get("event") == "registered"]
        for n in (0, 1):  # no reply at all: nothing to refuse, nothing said
            assert not [e for e in log_events(logs[n]) if e.get("event") == "registration_refused"]
        (refused,) = [e for e in log_events(logs[2]) if e.get("event") == "registration_refused"]
        assert refused["level"] == "error" and refused["status"] == "REFUSED"
        assert "not the one admitted" not in refused["reason"]  # the node is told no more
        dc_refused = _events(lab_state, "dc", "registration_refused")
        assert "not the one admitted" in dc_refused[-1]["reason"]
        assert dc_refused[-1]["fqdn"] == "cn.ntm.example"
        wait_for(
            lambda: _dc_drops(lab_state).get("unadmitted_key", 0) >= unadmitted_before + 2,
            10,
            "the DC to count the unadmitted key's inits",
        )
        # cn's real registration was not disturbed, nor mn's.
        assert dig("ntma-mn", CN_NAME) == _vip(lab[0], "cn")
        assert _curl("ntma-mn", f"http://{CN_NAME}:8080/hello.txt").returncode == 0

    def test_dc_restart_nodes_reregister_keep_vips_traffic_resumes(self, lab):
        lab_state, _ = lab
        vips = {n: _vip(lab_state, n) for n in ("mn", "cn")}
        counts = {n: _count(lab_state, n, "registered") for n in ("mn", "cn")}
        stop_daemon(lab_state, "dc")
        start_daemon(lab_state, "dc")
        for name in ("mn", "cn"):
            wait_for(
                lambda name=name: _count(lab_state, name, "registered") > counts[name],
                30,
                f"{name} to register again",
            )
            assert _vip(lab_state, name) == vips[name]
        assert dig("ntma-mn", CN_NAME, "@198.51.100.10") == vips["cn"]  # the DC's own DNS
        result = _curl("ntma-mn", f"http://{CN_NAME}:8080/hello.txt")
        assert result.stdout == "hello from cn\n"


@pytest.mark.usefixtures("lab_cn_nat")
class TestCnBehindNatMnPublic(_ReachesCn):
    lab_fixture_name = "lab_cn_nat"

    def test_route_directs_natted_cn_to_initiate(self, lab):
        lab_state, _ = lab
        _curl("ntma-mn", f"http://{CN_NAME}:8080/hello.txt")
        decided = _events(lab_state, "dc", "route_decided")
        assert decided and decided[-1]["initiator"] == CN_NAME
        tunnel_up = _events(lab_state, "mn", "tunnel_up")
        assert tunnel_up[-1]["peer_endpoint"] == "198.51.100.31:7401"  # cn's NAT mapping


def _capture(pcap: Path, bpf: str, tmp: Path) -> subprocess.Popen:
    """tcpdump on the Internet segment, returned once it is listening."""
    err = tmp / f"{pcap.stem}.tcpdump.log"
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            "ntma-inet",
            "tcpdump",
            "-i",
            MN_PORT,
            "-Z",
            "root",
            "-U",
            "--immediate-mode",
            "-B",
            "32768",
            "-n",
            "-w",
            str(pcap),
            bpf,
        ],
        stdout=subprocess.DEVNULL,
        stderr=err.open("wb"),
    )
    wait_for(lambda: "listening on" in err.read_text(), 10, "tcpdump to listen")
    return proc


def _events(lab_state: dict[str, Any], name: str, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(lab_state["daemons"][name]["log"]) if e.get("event") == event]


def _dc_drops(lab_state: dict[str, Any]) -> dict[str, int]:
    stats = [
        e for e in _events(lab_state, "dc", "stage_stats") if e.get("stage") == "dc_signalling"
    ]
    return stats[-1]["drops"] if stats else {}


def _count(lab_state: dict[str, Any], name: str, event: str) -> int:
    return len(_events(lab_state, name, event))


def _decap_drops(lab_state: dict[str, Any], newer_than: dict | None = None) -> dict | None:
    """cn's latest decapsulate drop counters; with newer_than, only once they changed."""
    stats = [
        e
        for e in log_events(lab_state["daemons"]["cn"]["log"])
        if e.get("event") == "stage_stats" and e.get("stage") == "decapsulate"
    ]
    latest = stats[-1]["drops"] if stats else {}
    if newer_than is None:
        return latest
    return (
        latest
        if latest != newer_than and sum(latest.values()) >= 3 + sum(newer_than.values())
        else None
    )


def _dc_public(lab_state: dict[str, Any]) -> str:
    return _events(lab_state, "dc", "dc_ready")[-1]["public_key"]


@pytest.mark.usefixtures("lab_cn_public")
class TestCleanShutdown:
    """Runs last on the lab (it stops mn): SIGTERM deregisters, logs final stats, and
    the TUN device disappears."""

    def test_sigterm_deregisters_and_removes_tun(self, lab_cn_public):
        lab_state, _ = lab_cn_public
        assert "ntm0" in ns_run("ntma-mn", "ip", "-o", "link").stdout
        stop_daemon(lab_state, "mn")
        mn_events = [e.get("event") for e in log_events(lab_state["daemons"]["mn"]["log"])]
        assert "shutting_down" in mn_events and mn_events[-1] == "stopped"
        assert "stage_stats_final" in mn_events
        assert "ntm0" not in ns_run("ntma-mn", "ip", "-o", "link").stdout
        wait_for(lambda: _count(lab_state, "dc", "node_deregistered") >= 1, 5, "deregister")
        # cn was told TUNNEL_GONE: its DNS says mn is not online (NOERROR, no address)
        # rather than giving a stale answer from the dead tunnel.
        out = ns_run("ntma-cn", "dig", "+time=15", "+tries=1", MN_NAME, check=False).stdout
        assert "status: NOERROR" in out and "ANSWER: 0" in out
