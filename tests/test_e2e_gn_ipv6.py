"""IPv6 for the unmodified device behind the adapter (issue 13, docs/protocol.md 14 item 2),
on the lab with `--vip6`: the GN's own kernel configures its IPv6 VIP by SLAAC from the
adapter's Router Advertisements (no ntma code, no DHCPv6 client needed); the adapter learns
the address from its duplicate address detection and the DC keeps it for the GN's name;
`dhclient -6` gets the same address and the DNS server; the GN gets AAAA for cn (over IPv4
and over IPv6 DNS) and fetches from cn with `curl -6`; cn reaches the GN by name over IPv6;
a packet too big for the tunnel gets ICMPv6 Packet Too Big and a SYN's MSS is clamped to
fit; after an adapter restart the GN's first packet teaches the adapter its address."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import DC_IP, events_named, lab_restart, ns_run

from .netns_util import dig, gn_dhclient, start_in_ns, stop, wait_for

pytestmark = pytest.mark.netns

GN, CN = "ntma-gn", "ntma-cn"
CN_NAME, GN_NAME = "cn.ntm.example", "gn.ntm.example"
LINK_PREFIX = ipaddress.IPv6Network("fd00:99::/64")
ROUTER6 = "fd00:99::1"
ONE_MB = bytes(range(256)) * 4096


def _slaac_address(ns: str = GN) -> str | None:
    """The GN's global address the kernel configured from an RA (not tentative)."""
    info = json.loads(ns_run(ns, "ip", "-j", "-6", "addr", "show", "dev", "eth0").stdout)[0]
    for a in info.get("addr_info", []):
        if a.get("scope") == "global" and a.get("dynamic") and not a.get("tentative"):
            return a["local"]
    return None


def _eui64(mac: str) -> str:
    octets = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    return str(ipaddress.IPv6Address(LINK_PREFIX.network_address.packed[:8] + iid))


def _gn_mac() -> str:
    return json.loads(ns_run(GN, "ip", "-j", "link", "show", "eth0").stdout)[0]["address"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("gn-ipv6")
    with open_lab(tmp / "run", vip6=True) as state:
        www = tmp / "www"
        www.mkdir()
        (www / "one-mb.bin").write_bytes(ONE_MB)
        server = start_in_ns(
            CN, "python3", "-m", "http.server", "8080", "--bind", "::",
            "--directory", str(www), log=tmp / "http.log",
        )
        try:
            wait_for(lambda: ":8080" in ns_run(CN, "ss", "-ltn6").stdout, 10, "http.server")
            assert gn_dhclient(tmp).returncode == 0  # a dual-stack GN: IPv4 by DHCP too
            wait_for(lambda: _slaac_address() is not None, 30, "the GN's SLAAC address")
            yield state, tmp
        finally:
            stop(server)
            gn_dhclient(tmp, "-x")


def _cn_vip6(state) -> str:
    return events_named(state.daemons["cn"].log, "registered")[-1]["vip6"]


def test_the_gns_kernel_configures_its_ipv6_vip_from_the_adapters_ra(lab):
    state, _ = lab
    address = _slaac_address()
    assert address == _eui64(_gn_mac())  # Linux's own choice: the EUI-64 of its MAC
    assert ipaddress.IPv6Address(address) in LINK_PREFIX
    routes = ns_run(GN, "ip", "-6", "route", "show", "dev", "eth0").stdout
    assert "fd00:99::/64 proto ra" in routes or "fd00:99::/64 proto kernel" in routes
    assert "default" not in routes  # the adapter has no IPv6 upstream: no default router
    mtu = ns_run(GN, "sysctl", "-n", "net.ipv6.conf.eth0.mtu").stdout.strip()
    assert mtu == "1400"  # the RA's MTU option: the tunnel's
    adapter_log = state.daemons["adapter"].log
    (learnt,) = [e for e in events_named(adapter_log, "device_ipv6") if e["vip6"] == address]
    assert learnt["device"] == GN_NAME
    assert events_named(adapter_log, "gn_ipv6")[-1]["prefix"] == str(LINK_PREFIX)
    chosen = [e for e in events_named(state.daemons["dc"].log, "vip6_chosen")]
    assert [(e["name"], e["vip6"], e["refused"]) for e in chosen] == [(GN_NAME, address, "")]
    assert dig("ntma-web", GN_NAME, "AAAA", f"@{DC_IP}") == address  # the DC's zone


def test_the_gn_gets_aaaa_for_cn_and_fetches_with_curl_6(lab):
    state, _ = lab
    cn6 = _cn_vip6(state)
    assert dig(GN, CN_NAME, "AAAA") == cn6  # DNS over IPv4 (the DHCP server's)
    assert dig(GN, CN_NAME, "AAAA", f"@{ROUTER6}") == cn6  # and over IPv6 (the RA's RDNSS)
    fetched = ns_run(
        GN,
        "sh",
        "-c",
        f"curl -6 -sS --max-time 20 http://{CN_NAME}:8080/one-mb.bin | sha256sum",
        timeout=30,
    )
    assert fetched.stdout.split()[0] == hashlib.sha256(ONE_MB).hexdigest()


def test_cn_reaches_the_gn_by_name_over_ipv6(lab):
    address = _slaac_address()
    assert dig(CN, GN_NAME, "AAAA") == address
    ping = ns_run(CN, "ping", "-6", "-c", "3", "-W", "2", GN_NAME, check=False, timeout=20)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_too_big_gets_packet_too_big_and_a_syn_is_clamped(lab):
    state, tmp = lab
    cn6 = _cn_vip6(state)
    ns_run(GN, "ip", "link", "set", "eth0", "mtu", "1500")  # a GN ignoring option 26
    ns_run(GN, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.mtu=1500")  # and the RA's MTU
    try:
        big = ns_run(GN, "ping", "-6", "-c", "1", "-W", "3", "-M", "do", "-s", "1420", cn6,
                     check=False)
        assert "Packet too big: mtu=1400" in big.stdout + big.stderr, big.stdout
        route = ns_run(GN, "ip", "-6", "route", "get", cn6).stdout
        assert "mtu 1400" in route  # the GN's kernel took the PTB's MTU for cn
        ns_run(GN, "ip", "-6", "route", "flush", "cache", check=False)
        capture = subprocess.Popen(
            ["ip", "netns", "exec", CN, "tcpdump", "-l", "-n", "-v", "-c", "1", "-i", "ntm0",
             "ip6 and tcp and dst port 8080"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            time.sleep(1.0)  # tcpdump attached
            ns_run(GN, "curl", "-6", "-sS", "--max-time", "10", "-o", "/dev/null",
                   f"http://[{cn6}]:8080/one-mb.bin", check=False, timeout=20)
            syn, _ = capture.communicate(timeout=10)
        finally:
            capture.kill()
        assert "mss 1340" in syn, syn  # 1440 from the GN's 1500, clamped to 1400 - 60
    finally:
        ns_run(GN, "ip", "link", "set", "eth0", "mtu", "1400")  # its IPv6 MTU follows
        ns_run(GN, "ip", "-6", "route", "flush", "cache", check=False)


def _adapter_drops(state) -> dict[str, dict[str, int]]:
    latest: dict[str, dict[str, int]] = {}
    for e in events_named(state.daemons["adapter"].log, "stage_stats"):
        latest[e["stage"]] = e.get("drops", {})
    return latest


def test_hostile_ipv6_from_the_gn_link_is_dropped_and_counted(lab):
    """An RS flood gets a few RAs, not one each; broken and spoofed ND, a rogue RA, DAD for
    the router's address (defended), DHCPv6 junk: dropped and counted, and IPv6 still works."""
    state, tmp = lab
    before = _adapter_drops(state)
    ras_only = "icmp6 and ip6[40] == 134"
    capture = subprocess.Popen(
        ["ip", "netns", "exec", GN, "tcpdump", "-l", "-n", "-i", "eth0", ras_only],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        time.sleep(1.0)
        sent = ns_run(GN, "python3", str(Path(__file__).with_name("gn_junk6.py")), "eth0")
        assert int(sent.stdout) > 200
        time.sleep(4.0)  # the next RAs are due within RA_MIN_GAP_S
    finally:
        capture.terminate()
        ras, _ = capture.communicate(timeout=10)
    assert 1 <= len(ras.splitlines()) <= 3, ras  # 200 RSs: one RA per 3 s at most

    def counted():
        now = _adapter_drops(state)
        grown = {
            stage: sum(now.get(stage, {}).values()) - sum(before.get(stage, {}).values())
            for stage in ("classify", "arp", "dhcp")
        }
        return grown if all(v > 0 for v in grown.values()) else None

    wait_for(counted, 15, "drops counted in classify, arp (ND) and dhcp")
    arp = _adapter_drops(state)["arp"]
    assert arp.get("malformed", 0) >= 3 and arp.get("foreign_ip", 0) >= 1
    assert _slaac_address() is not None  # nothing took the GN's address
    cn6 = _cn_vip6(state)
    ping = ns_run(GN, "ping", "-6", "-c", "2", "-W", "2", cn6, check=False, timeout=20)
    assert ping.returncode == 0, ping.stdout


def _dhclient6(tmp, *args: str) -> subprocess.CompletedProcess:
    return ns_run(
        GN, "dhclient", "-6", "-1", "-pf", str(tmp / "dhclient6.pid"),
        "-lf", str(tmp / "dhclient6.leases"), *args, "eth0", check=False, timeout=60,
    )


def test_dhclient_6_gets_the_same_address_and_the_dns_server(lab):
    state, tmp = lab
    address = _slaac_address()
    try:
        result = _dhclient6(tmp)
        assert result.returncode == 0, result.stderr
        lease = (tmp / "dhclient6.leases").read_text()
        assert f"iaaddr {address}" in lease and "dhcp6.name-servers fd00:99::1" in lease
        leased = events_named(state.daemons["adapter"].log, "dhcp6_lease")
        assert leased[-1]["ip"] == address and leased[-1]["device"] == GN_NAME
        stateless = _dhclient6(tmp, "-S")  # INFORMATION-REQUEST: DNS only
        assert stateless.returncode == 0, stateless.stderr
    finally:
        _dhclient6(tmp, "-x")
    assert _slaac_address() == address


def test_after_an_adapter_restart_the_gns_first_packet_teaches_it_the_address_again(lab):
    """Last: it restarts the adapter. The GN keeps its SLAAC address and sends no new DAD
    probe, so the adapter learns the address from its first packet (that one is dropped)."""
    state, _ = lab
    address = _slaac_address()
    restarted = lab_restart(Path(state.run_dir), "adapter")
    assert restarted["pid"] != restarted["old_pid"]
    cn6 = _cn_vip6(state)
    ns_run(GN, "ip", "-6", "neigh", "flush", "dev", "eth0")  # so it asks by NS again, too
    # Over IPv6: its first packet, which teaches the adapter and is dropped; dig retries.
    answer = dig(GN, CN_NAME, "AAAA", f"@{ROUTER6}", "+tries=3", "+time=2")
    assert answer.splitlines()[-1] == cn6, answer
    ping = ns_run(GN, "ping", "-6", "-c", "4", "-W", "2", cn6, check=False, timeout=30)
    assert " 0 received" not in ping.stdout, ping.stdout
    learnt = events_named(state.daemons["adapter"].log, "device_ipv6")
    assert learnt[-1]["vip6"] == address and len(learnt) == 2  # once before, once after
    assert _slaac_address() == address
    assert dig(CN, GN_NAME, "AAAA") == address
