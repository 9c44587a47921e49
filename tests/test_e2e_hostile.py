"""Hostile input from outside, on the default lab (issue 10, item 7).

From the Internet segment (ntma-web, 198.51.100.20) and from the GN link, with
`python -m ntma.fuzz.blast` (the fuzz engine's mutations of seeds.py, bounded bursts):
- hostile datagrams at the DC's signalling and probe ports, the RS and cn's node port;
- replayed captures (tcpdump) of a real registration and tunnel set-up, at the DC and cn;
- hostile DNS (long names, 64-byte labels, pointer loops, garbage, an idle TCP flood) at the
  DC's zone DNS, the adapter's resolver (from the GN) and mn's resolver (from inside mn);
- a second MAC on the GN link (a macvlan in the GN's namespace) sending a DHCP RELEASE and
  REQUEST in the GN's name, then a burst of mutated ARP/DHCP/IPv4 frames.
After each: every daemon still runs and the drops were counted; at the end the DC still
directs a new tunnel and the GN still reaches cn by name. Nothing here depends on the
protocol's message layouts: inputs are mutated seeds, random bytes or replayed captures.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import (
    DC_IP,
    RS_IP,
    WEB_IP,
    LabError,
    lab_events,
    lab_status,
    log_events,
    log_size,
    ns_run,
    start_daemon,
    stop_daemon,
    wait_log_events,
)
from ntma.proto import dhcp_codec as dhcp
from ntma.proto.ether import ETH_P_IP, build_udp, eth_header, ip_packed

from .netns_util import (
    dig,
    gn_dhclient,
    serve_dir,
    start_in_ns,
    stop,
    udp_payloads,
    wait_for,
)

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[1]
ATTACKER = "ntma-web"  # a host on the Internet segment
GN = "ntma-gn"
CN_IP = "198.51.100.30"  # cn is public on the default lab
ROUTER = "10.99.0.1"  # the adapter, as the GN sees it
INTRUDER = "intr0"  # the second MAC on the GN link
INTRUDER_MAC = "02:de:ad:be:ef:02"
BURST = 3000
CN_STAGES = ("udp_receive", "signalling", "decapsulate")
STATS_WAIT_S = 15  # stats lines come every 2 s; a loaded 2-core machine may be slower


# --------------------------------------------------------------------------- helpers

BLAST = ("env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "ntma.fuzz.blast")


def blast(ns: str, args: str, timeout: float = 40) -> dict[str, Any]:
    """`python -m ntma.fuzz.blast ARGS` in `ns` (args split on blanks); its JSON report."""
    proc = ns_run(ns, *BLAST, *args.split(), timeout=timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def blast_popen(ns: str, args: str, log: Path):
    return start_in_ns(ns, *BLAST, *args.split(), log=log)


def events(state: Any, daemon: str, event: str, since: int | None = None) -> list[dict]:
    d = state.daemons[daemon]
    offset = (d.log_start or 0) if since is None else since
    return [e for e in log_events(d.log, offset) if e.get("event") == event]


def drops(state: Any, daemon: str, stages: tuple[str, ...]) -> dict[str, int]:
    """The latest cumulative drop counters of `stages` (stage:reason -> count)."""
    latest: dict[str, dict] = {}
    for e in events(state, daemon, "stage_stats"):
        latest[e.get("stage")] = e
    return {
        f"{stage}:{reason}": n
        for stage in stages
        for reason, n in latest.get(stage, {}).get("drops", {}).items()
    }


def wait_drops_grow(
    state: Any, daemon: str, stages: tuple[str, ...], before: dict[str, int], reason: str = ""
) -> dict[str, int]:
    """Wait until drops of `stages` (whose reason contains `reason`) grew past `before`."""

    def grown():
        now = drops(state, daemon, stages)
        diff = {
            k: n - before.get(k, 0) for k, n in now.items() if n > before.get(k, 0) and reason in k
        }
        return diff or None

    return wait_for(grown, STATS_WAIT_S, f"{daemon} to count drops in {stages}")


def baseline(state: Any, daemon: str, stages: tuple[str, ...]) -> dict[str, int]:
    """The drops before a test's burst, once two stats lines in a row agree (the daemon has
    worked off an earlier test's burst, whose drops would otherwise count for this one)."""

    def history(stage: str) -> list[dict]:
        return [
            e.get("drops", {})
            for e in events(state, daemon, "stage_stats")
            if e.get("stage") == stage
        ]

    def still() -> bool:
        return all(len(h) >= 2 and h[-1] == h[-2] for h in map(history, stages))

    with contextlib.suppress(AssertionError):  # a baseline a little off only weakens a check
        wait_for(still, STATS_WAIT_S, f"{daemon}'s drops to settle")
    return drops(state, daemon, stages)


def assert_all_alive(state: Any) -> None:
    """Every daemon of the lab runs (the lab's status), else its log's last lines."""
    status = lab_status(Path(state.run_dir))
    dead = [n for n, d in status["daemons"].items() if not d["alive"]]
    tails = {n: Path(status["daemons"][n]["log"]).read_text()[-3000:] for n in dead}
    detail = "\n".join(f"--- {n}\n{t}" for n, t in tails.items())
    assert not dead, f"daemons died: {dead}\n{detail}"


def answered(ns: str, name: str, expected: str | None, *extra: str, timeout: float = 20) -> str:
    """dig's answer (`expected`, or any) within `timeout` (a daemon under load may drop one)."""

    def answer() -> str | None:
        got = dig(ns, name, *extra)
        return got if got and expected in (None, got) else None

    return wait_for(answer, timeout, f"dig {name} {' '.join(extra)} in {ns}", interval=0.5)


def gn_address() -> str | None:
    info = json.loads(ns_run(GN, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    return next((a["local"] for a in info.get("addr_info", []) if a["family"] == "inet"), None)


def mac_of(ns: str, ifname: str) -> str:
    return ns_run(ns, "cat", f"/sys/class/net/{ifname}/address").stdout.strip().lower()


def capture(ns: str, out: Path, bpf: str, log: Path):
    proc = start_in_ns(ns, "tcpdump", "-i", "eth0", "-U", "-n", "-w", str(out), bpf, log=log)
    wait_for(lambda: "listening on" in log.read_text(), 10, f"tcpdump in {ns}", interval=0.05)
    return proc


def ping_ok(ns: str, target: str, count: int = 3) -> bool:
    out = ns_run(ns, "ping", "-c", str(count), "-W", "2", target, check=False).stdout
    return " 100% packet loss" not in out and f"{count} packets transmitted" in out


# --------------------------------------------------------------------------- the lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("hostile-lab")
    with open_lab(tmp / "run") as state:
        www = tmp / "www"
        www.mkdir()
        (www / "hello.txt").write_text("hello from cn\n")
        server = serve_dir("ntma-cn", www, tmp / "http.log")
        try:
            leased = gn_dhclient(tmp)
            assert leased.returncode == 0, leased.stderr
            yield state, tmp
        finally:
            stop(server)
            gn_dhclient(tmp, "-x")


# --------------------------------------------------------------------------- replay

MN_WAN = "198.51.100.41"  # mn's NAT on the default lab: the source the DC and cn see
#: DC events that only a registration, a move, a probe or a direction request cause.
DC_STATE_EVENTS = (
    "node_registered",
    "node_deregistered",
    "node_moved",
    "node_nat",
    "route_decided",
)


@pytest.fixture(scope="module")
def captured(lab) -> dict[str, Any]:
    """tcpdump at the DC and at cn while mn registers again (deregistration, registration,
    NAT probes: it sits behind a NAT) and sets up a tunnel to cn: the UDP payloads."""
    state, tmp = lab
    dc_pcap, cn_pcap = tmp / "dc.pcap", tmp / "cn.pcap"
    dumps = [
        capture("ntma-dc", dc_pcap, "udp and (port 7400 or port 7401)", tmp / "tcpdump-dc.log"),
        capture("ntma-cn", cn_pcap, "udp port 7401", tmp / "tcpdump-cn.log"),
    ]
    try:
        since = {"mn": log_size(state, "mn"), "dc": log_size(state, "dc")}
        stop_daemon(state, "mn")
        start_daemon(state, "mn")
        wait_log_events(state, {"mn": "registered", "dc": "node_nat"}, since=since, timeout=30)
        cn_vip = answered("ntma-mn", "cn.ntm.example", None)  # a real tunnel set-up
        assert ping_ok("ntma-mn", cn_vip)
        time.sleep(0.5)
    finally:
        for proc in dumps:
            stop(proc)
    at_dc = [(p, dport) for src, _, dst, dport, p in udp_payloads(dc_pcap) if src == MN_WAN]
    to_cn = [(src, p) for src, _, dst, _, p in udp_payloads(cn_pcap) if dst == CN_IP]
    out = {
        "dc:7400": [p for p, dport in at_dc if dport == 7400],
        "dc:7401": [p for p, dport in at_dc if dport == 7401],
        "cn:7401": [p for src, p in to_cn if src in (MN_WAN, DC_IP)],
    }
    counts = {k: len(v) for k, v in out.items()}
    assert all(counts.values()), f"no registration, probe or tunnel set-up captured: {counts}"
    out["cn_vip"] = cn_vip
    return out


def _replay(tmp: Path, name: str, to: str, datagrams: list[bytes], times: int = 3) -> None:
    """Every captured datagram, `times` over in capture order, from the attacker's address."""
    path = tmp / f"replay-{name}.hex"
    path.write_text("\n".join(p.hex() for p in datagrams * times) + "\n")
    report = blast(ATTACKER, f"--to {to} --replay {path}")
    assert report["sent"] == len(datagrams) * times, report


def _wait_mn_back(state: Any, since: int) -> None:
    """After a replay moved mn at the DC: wait until mn's own keep-alives have put it back
    (later tests need the DC's view right), or give up quietly after 15 s."""

    def back() -> bool:
        seen = [
            e
            for e in log_events(state.daemons["dc"].log, since)
            if e.get("fqdn") == "mn.ntm.example"
            and e.get("event") in ("node_registered", "node_moved", "node_deregistered")
        ]
        if not seen:
            return True
        last = seen[-1]
        return MN_WAN in str(last.get("endpoint") or last.get("new") or "")

    with contextlib.suppress(AssertionError):
        wait_for(back, 15, "mn back at its own address at the DC")


@pytest.fixture(scope="module")
def replayed(lab, captured) -> dict[str, Any]:
    """The captures sent again from the attacker's address: mn's signalling at the DC's two
    ports, then what mn and the DC sent cn at cn's port. Log offsets before, and drops."""
    state, tmp = lab
    since = {name: log_size(state, name) for name in ("dc", "cn")}
    before = {
        "dc": baseline(state, "dc", ("dc_signalling",)),
        "cn": baseline(state, "cn", CN_STAGES),
    }
    _replay(tmp, "dc-7400", f"{DC_IP}:7400", captured["dc:7400"])
    _replay(tmp, "dc-7401", f"{DC_IP}:7401", captured["dc:7401"])
    _replay(tmp, "cn", f"{CN_IP}:7401", captured["cn:7401"])
    time.sleep(1.0)
    return {"since": since, "before": before}


def test_replayed_captures_stop_nothing_and_break_no_tunnel(lab, captured, replayed):
    state, _ = lab
    cn_vip = captured["cn_vip"]
    assert_all_alive(state)
    wait_drops_grow(state, "dc", ("dc_signalling",), replayed["before"]["dc"])
    wait_drops_grow(state, "cn", CN_STAGES, replayed["before"]["cn"])
    to_attacker = [
        e for e in events(state, "cn", "tunnel_up", replayed["since"]["cn"]) if WEB_IP in str(e)
    ]
    assert not to_attacker, f"a replay made cn send a tunnel to the attacker: {to_attacker}"
    assert ping_ok("ntma-mn", cn_vip), "the replay broke the working mn -> cn tunnel"
    assert answered(ATTACKER, "cn.ntm.example", cn_vip, f"@{DC_IP}") == cn_vip
    _wait_mn_back(state, replayed["since"]["dc"])  # see the next test
    assert_all_alive(state)


def test_replayed_signalling_changes_nothing_at_the_dc(lab, replayed):
    """v1 acted on these (a replayed REGISTER moved mn to the attacker's address, a replayed
    PROBE marked it symmetric); v2 takes nothing before key confirmation."""
    state, _ = lab
    fields = ("event", "fqdn", "endpoint", "old", "new", "reach", "requester", "target")
    changed = [
        {k: e[k] for k in fields if k in e}
        for e in log_events(state.daemons["dc"].log, replayed["since"]["dc"])
        if e.get("event") in DC_STATE_EVENTS
    ]
    assert not changed, f"replayed signalling changed the DC's state: {changed}"


# --------------------------------------------------------------------------- datagrams

#: target -> (address, its daemon, the stages that count its drops, the capture to mutate).
DATAGRAM_TARGETS = {
    "dc": (f"{DC_IP}:7400", "dc", ("dc_signalling",), "dc:7400"),
    "dc_probe": (f"{DC_IP}:7401", "dc", ("dc_signalling",), "dc:7401"),
    "rs": (f"{RS_IP}:7500", "relay", ("relay",), None),
    "cn": (f"{CN_IP}:7401", "cn", CN_STAGES, "cn:7401"),
}


@pytest.mark.parametrize("target", sorted(DATAGRAM_TARGETS))
def test_hostile_datagrams_from_the_internet(lab, captured, target):
    """Mutated seeds (signalling, tunnel data, envelopes, grants), mutated captures of the
    real signalling this port saw, and random bytes, from a host on the Internet segment."""
    state, tmp = lab
    to, daemon, stages, capture_name = DATAGRAM_TARGETS[target]
    before = baseline(state, daemon, stages)
    seed = sorted(DATAGRAM_TARGETS).index(target)
    report = blast(
        ATTACKER, f"--to {to} --corpus signalling --count {BURST} --seconds 4 --seed {seed}"
    )
    assert report["sent"] > BURST // 2, report
    if capture_name:
        path = tmp / f"seeds-{target}.hex"
        path.write_text("\n".join(p.hex() for p in captured[capture_name]) + "\n")
        blast(ATTACKER, f"--to {to} --mutate {path} --count 1000 --seconds 3 --seed {seed}")
    blast(ATTACKER, f"--to {to} --corpus random --count 300 --seed {seed}")
    assert_all_alive(state)
    wait_drops_grow(state, daemon, stages, before)
    assert_all_alive(state)


# --------------------------------------------------------------------------- DNS

#: resolver -> (where the attacker is, address, the daemon, its stage, over TCP too,
#: a query that must still be answered, its answer or None for any).
RESOLVERS = {
    "dc_zone": (ATTACKER, DC_IP, "dc", "dc_dns", False, "cn.ntm.example", None),
    "adapter": (GN, ROUTER, "adapter", "dns", True, "web.example", WEB_IP),
    "mn": ("ntma-mn", "127.0.0.1", "mn", "dns", True, "web.example", WEB_IP),
}


@pytest.mark.parametrize("resolver", sorted(RESOLVERS))
def test_hostile_dns_at_every_resolver(lab, resolver):
    state, tmp = lab
    ns, address, daemon, stage, tcp, name, expected = RESOLVERS[resolver]
    before = baseline(state, daemon, (stage,))
    to = f"--to {address}:53"
    report = blast(ns, f"{to} --corpus dns --count {BURST} --seconds 4 --rate 1500 --seed 7")
    assert report["sent"] > BURST // 4, report
    blast(ns, f"{to} --corpus random --count 300 --seed 7")
    at = f"@{address}"
    if tcp:
        blast(ns, f"{to} --tcp --corpus dns --count 200 --seconds 5 --seed 8")
        flood_log = tmp / f"flood-{resolver}.log"
        flood = blast_popen(ns, f"{to} --hold 12 --count 12 --seconds 20", log=flood_log)
        try:
            wait_for(lambda: '"held"' in flood_log.read_text(), 10, "the idle TCP flood")
            assert answered(ns, name, expected, at, "+tcp")  # a 13th connection, same source
            assert answered(ns, name, expected, at)
        finally:
            stop(flood)
    assert answered(ns, name, expected, at)
    assert_all_alive(state)
    wait_drops_grow(state, daemon, (stage,), before)


# --------------------------------------------------------------------------- GN link


def _spoofed_dhcp(gn_mac: bytes, adapter_mac: bytes, vip: str) -> list[bytes]:
    """A RELEASE and a REQUEST for the GN's lease, chaddr the GN's MAC, sent by the intruder."""
    intruder = bytes.fromhex(INTRUDER_MAC.replace(":", ""))
    router = ip_packed(ROUTER)
    release = dhcp.build_dhcp(
        message_type=dhcp.RELEASE,
        xid=0x5A5A0001,
        chaddr=gn_mac,
        ciaddr=vip,
        options=[(dhcp.OPT_SERVER_ID, router)],
    )
    request = dhcp.build_dhcp(
        message_type=dhcp.REQUEST,
        xid=0x5A5A0002,
        chaddr=gn_mac,
        options=[(dhcp.OPT_REQUESTED_IP, ip_packed(vip)), (dhcp.OPT_SERVER_ID, router)],
    )
    return [
        eth_header(adapter_mac, intruder, ETH_P_IP)
        + build_udp(ip_packed(vip), router, 68, 67, release),
        eth_header(b"\xff" * 6, intruder, ETH_P_IP)
        + build_udp(bytes(4), b"\xff" * 4, 68, 67, request),
    ]


@pytest.fixture
def intruder(lab):
    """A second interface, with another MAC, on the GN's link (macvlan on the GN's eth0)."""
    add = f"link add link eth0 name {INTRUDER} address {INTRUDER_MAC} type macvlan mode private"
    try:
        ns_run(GN, "ip", *add.split())
    except LabError as exc:  # a kernel without macvlan (CONFIG_MACVLAN)
        pytest.skip(f"a second MAC on the GN link needs macvlan: {exc}")
    try:
        no_v6 = f"echo 1 > /proc/sys/net/ipv6/conf/{INTRUDER}/disable_ipv6"  # no DAD, no RS
        ns_run(GN, "sh", "-c", no_v6, check=False)
        ns_run(GN, "ip", "link", "set", INTRUDER, "arp", "off", "up")
        yield INTRUDER
    finally:
        ns_run(GN, "ip", "link", "del", INTRUDER, check=False)


def test_second_mac_on_the_gn_link_cannot_take_the_lease(lab, intruder):
    state, tmp = lab
    vip = gn_address()
    assert vip, "the GN has no lease"
    gn_mac = mac_of(GN, "eth0")
    adapter_mac = bytes.fromhex(mac_of("ntma-adapter", "gn0").replace(":", ""))
    since = log_size(state, "adapter")
    stages = ("capture", "classify", "arp", "dhcp", "dns")
    before = baseline(state, "adapter", stages)

    frames = _spoofed_dhcp(bytes.fromhex(gn_mac.replace(":", "")), adapter_mac, vip) * 10
    (tmp / "spoof.hex").write_text("\n".join(f.hex() for f in frames) + "\n")
    sent = blast(GN, f"--iface {intruder} --replay {tmp / 'spoof.hex'}")
    assert sent["sent"] == len(frames), sent
    blast(GN, f"--iface {intruder} --corpus frames --count {BURST} --seconds 4 --seed 11")

    # The intruder's MAC is no device of the adapter's (the lab lists its GNs by MAC, and
    # no default device): its DHCP gets no answer at all. A listed device speaking for
    # another's chaddr is tests/test_e2e_devices.py's.
    wait_drops_grow(state, "adapter", ("dhcp",), before, reason="unknown_device")
    wait_drops_grow(state, "adapter", ("capture", "classify", "arp"), before)
    assert_all_alive(state)
    assert not events(state, "adapter", "dhcp_released", since), "the intruder released it"
    leased_to = {e["mac"] for e in events(state, "adapter", "dhcp_lease", since)}
    assert leased_to <= {gn_mac}, f"a lease went to {leased_to - {gn_mac}}"
    assert gn_address() == vip

    # The GN's own client still holds and renews its lease (INIT-REBOOT REQUEST: ACK).
    gn_dhclient(tmp, "-x")
    renewed = gn_dhclient(tmp)
    assert renewed.returncode == 0, renewed.stderr
    wait_for(
        lambda: [e for e in events(state, "adapter", "dhcp_lease", since) if e["mac"] == gn_mac],
        10,
        "the GN's renewal",
    )
    assert gn_address() == vip


# --------------------------------------------------------------------------- afterwards

#: (namespace, its fqdn, the fqdn it reaches): pairs tried in order for a tunnel not built yet.
NEW_TUNNEL_CANDIDATES = (
    ("ntma-cn", "cn.ntm.example", "gn.ntm.example"),
    ("ntma-mn", "mn.ntm.example", "gn.ntm.example"),
    ("ntma-cn", "cn.ntm.example", "mn.ntm.example"),
)


def test_afterwards_every_daemon_runs_and_new_tunnels_work(lab):
    state, tmp = lab
    assert_all_alive(state)
    routed = {frozenset((r["requester"], r["target"])) for r in lab_events(state)["routes"]}
    choice = next((c for c in NEW_TUNNEL_CANDIDATES if frozenset(c[1:]) not in routed), None)
    if choice is None:  # every pair has a tunnel already: mn starts afresh, then asks for cn
        since = {"mn": log_size(state, "mn")}
        stop_daemon(state, "mn")
        start_daemon(state, "mn")
        wait_log_events(state, {"mn": "registered"}, since=since, timeout=30)
        choice = ("ntma-mn", "mn.ntm.example", "cn.ntm.example")
    ns, me, peer = choice
    routes_before = len(lab_events(state)["routes"])
    vip = answered(ns, peer, None)
    new = lab_events(state)["routes"][routes_before:]
    assert {frozenset((r["requester"], r["target"])) for r in new} >= {frozenset((me, peer))}, (
        f"the DC directed no new tunnel for {me} -> {peer}: {new}"
    )
    assert wait_for(lambda: ping_ok(ns, vip, 2), 15, f"ping {peer} from {ns}", interval=0.5)

    # The GN resolves cn by name and fetches from it through the tunnel.
    hello = ns_run(
        GN, "curl", "-sS", "--max-time", "20", "http://cn.ntm.example:8080/hello.txt", check=False
    )
    assert hello.stdout == "hello from cn\n", hello.stderr
    assert_all_alive(state)
