"""`ntma lab demo`: the main demo, told as a short story with measured times.

The lab is the source paper's set-up: an unmodified general node (GN) behind the
adapter (NTMA), the adapter behind a NAT, the DC and the NTM node cn on the Internet.
In the GN's namespace only ordinary tools run: ISC dhclient gets the GN its VIP, dig
resolves cn's name (which makes the adapter run the Direction Request and build the
tunnel), curl fetches a file from cn through the tunnel and a page from an ordinary
web host through the adapter's passthrough. Then the responder side: cn fetches from a
web server on the GN by its name. With `--gns N` every further GN asks for its own lease
(dhclient; udhcpc in ntma-gn2); with `--adapters 2` the GN fetches from a web server on
gnb, behind the second adapter, by name. The adapter's own per-stage timings are
printed beside the paper's Table 2. The lab is torn down at the end.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from ..bench.paper import PAPER_TABLE_2_US, TABLE2_LABELS, TABLE2_PATHS
from ..observe.logread import LogEvent, events_named
from .lifecycle import gn_address, lab_down, lab_up
from .netns import ns_exec, ns_run
from .settings import GN_NS, ZONE
from .state import GnState, LabState

GN = GN_NS
GN_WEB_PORT = 8080
#: How long a further GN's DHCP client may try (the demo goes on without its lease).
EXTRA_LEASE_S = 20


def _timed(ns: str, *cmd: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = ns_run(ns, *cmd, check=False, timeout=60)
    return result, (time.perf_counter() - started) * 1000


def _latest_paths(log: Path) -> dict[str, LogEvent]:
    return {e["path"]: e for e in events_named(log, "path_stats")}


def _table2(paths: dict[str, LogEvent]) -> list[tuple[str, LogEvent | None]]:
    """Our figures for the paper's four measures, from the adapter's path spans (each
    from a batch's arrival stamp to the end of the path, so queue waits are included)."""
    return [(TABLE2_LABELS[path], paths.get(path)) for path in TABLE2_PATHS]


def _web_server(ns: str, www: Path, text: str) -> subprocess.Popen:
    """python3 -m http.server on every address of `ns`, serving hello.txt = `text`;
    returned once it listens (a fetch sent earlier would be refused)."""
    www.mkdir(parents=True, exist_ok=True)
    (www / "hello.txt").write_text(text)
    server = ns_exec(
        ns,
        "python3",
        "-m",
        "http.server",
        str(GN_WEB_PORT),
        "--directory",
        str(www),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while f":{GN_WEB_PORT} " not in ns_run(ns, "ss", "-ltn", check=False).stdout:
        if time.monotonic() >= deadline or server.poll() is not None:
            break  # the fetch then says what is wrong
        time.sleep(0.05)
    return server


def _extra_lease(run_dir: Path, gn: GnState) -> tuple[str | None, float]:
    """A further GN's DHCP client, once, bounded (it keeps no daemon behind); its address."""
    files = run_dir / f"{gn.name}-dhclient"
    if gn.dhcp_client == "udhcpc":
        cmd = ["udhcpc", "-n", "-q", "-i", gn.interface, "-t", "5", "-T", "2"]
    else:
        cmd = ["dhclient", "-1", "-pf", f"{files}.pid", "-lf", f"{files}.leases", gn.interface]
    _, ms = _timed(gn.ns, "timeout", str(EXTRA_LEASE_S), *cmd)
    return gn_address(gn), ms


def _leases_of_the_others(state: LabState, say: Any) -> bool:
    """Step 1b: every GN but ntma-gn asks for its own lease; True when all got one."""
    ok = True
    for gn in list(state.gns.values())[1:]:
        address, ms = _extra_lease(state.run_dir, gn)
        ok &= address is not None
        say(
            f"1b. {gn.ns} ({gn.mac}, behind {gn.adapter}): {gn.dhcp_client} {gn.interface} -> "
            f"{address or 'no lease'} in {ms:.0f} ms ([devices] names it {gn.fqdn})"
        )
    return ok


def _responder(state: LabState, say: Any) -> bool:
    """Step 6 (and 7 with two adapters): a GN as a server, reached by its name."""
    server = _web_server(GN, state.run_dir / "gn-www", "hello from the GN, reached by name\n")
    servers = [server]
    try:
        curl, ms = _timed(
            "ntma-cn",
            "curl",
            "-sS",
            "--max-time",
            "10",
            f"http://gn.{ZONE}:{GN_WEB_PORT}/hello.txt",
        )
        ok = "hello from the GN" in curl.stdout
        say(
            f"6. cn: curl http://gn.{ZONE}:{GN_WEB_PORT}/hello.txt (a server on the unmodified "
            f"GN, the responder side) -> {curl.stdout.strip() or curl.stderr.strip()!r} in "
            f"{ms:.0f} ms"
        )
        gnb = next((g for g in state.gns.values() if g.adapter != state.adapter.name), None)
        if gnb is None:
            return ok
        if gn_address(gnb) is None:
            say(f"7. {gnb.ns} has no address, so nothing to fetch from it through two adapters")
            return False
        www = state.run_dir / "gnb-www"
        servers.append(_web_server(gnb.ns, www, "hello from gnb, through two adapters\n"))
        url = f"http://{gnb.fqdn}:{GN_WEB_PORT}/hello.txt"
        curl, ms = _timed(GN, "curl", "-sS", "--max-time", "10", url)
        ok &= "hello from gnb" in curl.stdout
        say(
            f"7. GN: curl {url} (GN to GN, adapter to adapter) -> "
            f"{curl.stdout.strip() or curl.stderr.strip()!r} in {ms:.0f} ms"
        )
        return ok
    finally:
        for s in servers:
            s.terminate()
            s.wait(5)


def run_demo(
    run_dir: Path,
    mn_nat: str = "cone",
    cn_nat: str = "none",
    adapter_nat: str = "cone",
    block_direct: bool = False,
    gns: int = 1,
    adapters: int = 1,
    adapter2_nat: str = "cone",
) -> int:
    say = print
    t0 = time.perf_counter()
    state = lab_up(
        run_dir,
        mn_nat=mn_nat,
        cn_nat=cn_nat,
        adapter_nat=adapter_nat,
        block_direct=block_direct,
        gns=gns,
        adapters=adapters,
        adapter2_nat=adapter2_nat,
    )
    server = _web_server(
        "ntma-cn", run_dir / "cn-www", "hello from cn, through the NTMobile tunnel\n"
    )
    leases = run_dir / "gn-dhclient"
    ok = True
    try:
        logs = {name: state.daemons[name].log for name in ("dc", "adapter", "cn")}
        gn_reg = events_named(logs["adapter"], "registered")[-1]
        cn_reg = events_named(logs["cn"], "registered")[-1]
        say(
            f"Lab up in {time.perf_counter() - t0:.1f} s: GN -- adapter -- NAT -- Internet "
            "(DC 198.51.100.10, cn, web.example)"
        )
        say(
            f"  The adapter registered the GN as gn.ntm.example: VIP {gn_reg['vip']}; the DC "
            f"sees the adapter at {gn_reg['observed']} (behind NAT: {gn_reg['behind_nat']})"
        )
        say(f"  cn registered: VIP {cn_reg['vip']} at {cn_reg['observed']}")
        time.sleep(0.5)
        dhcp, dhcp_ms = _timed(
            GN, "dhclient", "-1", "-pf", f"{leases}.pid", "-lf", f"{leases}.leases", "eth0"
        )
        address = json.loads(ns_run(GN, "ip", "-j", "addr", "show", "eth0").stdout)[0]
        inet = [a["local"] for a in address.get("addr_info", []) if a["family"] == "inet"]
        ok &= inet == [gn_reg["vip"]]
        say(
            f"1. GN: dhclient eth0 -> {', '.join(inet) or 'no address'} (mtu {address['mtu']})"
            f" in {dhcp_ms:.0f} ms; resolv.conf points at the adapter"
        )
        ok &= _leases_of_the_others(state, say)
        dig, dig_ms = _timed(GN, "dig", "+short", "+time=5", "cn.ntm.example")
        ok &= dig.stdout.strip() == cn_reg["vip"]
        say(
            f"2. GN: dig cn.ntm.example -> {dig.stdout.strip() or dig.stderr.strip()} in "
            f"{dig_ms:.0f} ms (Direction Request, route decision, tunnel handshake, answer)"
        )
        decided = events_named(logs["dc"], "route_decided")
        if decided:
            d = decided[-1]
            say(f"   DC: route {d['route']}, {d['initiator']} opens it ({d['why']})")
        curl, curl_ms = _timed(
            GN, "curl", "-sS", "--max-time", "10", "http://cn.ntm.example:8080/hello.txt"
        )
        ok &= "hello from cn" in curl.stdout
        say(
            f"3. GN: curl http://cn.ntm.example:8080/hello.txt -> {curl.stdout.strip()!r} in "
            f"{curl_ms:.0f} ms"
        )
        ping, _ = _timed(GN, "ping", "-c", "200", "-i", "0.01", "-q", cn_reg["vip"])
        rtt = ping.stdout.strip().splitlines()[-1] if ping.stdout.strip() else ping.stderr
        say(f"4. GN: ping {cn_reg['vip']} x200 through the tunnel: {rtt}")
        web, web_ms = _timed(GN, "curl", "-sS", "--max-time", "10", "http://web.example/")
        ok &= "ordinary web host" in web.stdout
        say(
            f"5. GN: curl http://web.example/ (ordinary name and host, through the adapter's "
            f"NAT) -> {'ok' if 'ordinary web host' in web.stdout else 'FAILED'} in "
            f"{web_ms:.0f} ms"
        )
        ok &= _responder(state, say)
        time.sleep(2.5)  # one more stats interval, so the spans include the traffic above
        say(
            "The adapter's own path spans beside the paper's Table 2 (light load: every"
            " packet alone; mean / median / p99, from arrival to the end of the path):"
        )
        for (name, ours), path in zip(
            _table2(_latest_paths(logs["adapter"])), TABLE2_PATHS, strict=True
        ):
            paper = PAPER_TABLE_2_US[path]
            shown = (
                (
                    f"{ours['mean_ns'] / 1000:7.1f} / {ours['p50_ns'] / 1000:7.1f} / "
                    f"{ours['p99_ns'] / 1000:7.1f} us (n={ours['count']})"
                    + (
                        f", median {ours['send_p50_ns'] / 1000:.1f} us of it in send()"
                        if "send_p50_ns" in ours
                        else ""
                    )
                )
                if ours
                else "n/a"
            )
            say(f"   {name:<55} paper {paper:6.1f} us   ours {shown}")
        say(f"Logs: {run_dir / 'logs'}")
    finally:
        ns_run(GN, "dhclient", "-x", "-pf", f"{leases}.pid", check=False)
        for gn in list(state.gns.values())[1:]:  # dhclient -1 stays to renew a lease it got
            pid = state.run_dir / f"{gn.name}-dhclient.pid"
            if pid.exists():
                ns_run(gn.ns, "dhclient", "-x", "-pf", str(pid), check=False)
        server.terminate()
        server.wait(5)
        lab_down(run_dir)
    say(f"Lab down. Demo {'succeeded' if ok else 'FAILED'}.")
    return 0 if ok else 1
