"""`ntma lab demo`: the main demo, told as a short story with measured times.

The lab is the source paper's set-up: an unmodified general node (GN) behind the
adapter (NTMA), the adapter behind a NAT, the DC and the NTM node cn on the Internet.
In the GN's namespace only ordinary tools run: ISC dhclient gets the GN its VIP, dig
resolves cn's name (which makes the adapter run the Direction Request and build the
tunnel), curl fetches a file from cn through the tunnel and a page from an ordinary
web host through the adapter's passthrough. The adapter's own per-stage timings are
printed beside the paper's Table 2. The lab is torn down at the end.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from ..bench.paper import PAPER_TABLE_2_US, TABLE2_LABELS, TABLE2_PATHS
from ..observe.logread import LogEvent, events_named
from .lifecycle import lab_down, lab_up
from .netns import ns_exec, ns_run
from .settings import GN_NS

GN = GN_NS


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


def run_demo(
    run_dir: Path,
    mn_nat: str = "cone",
    cn_nat: str = "none",
    adapter_nat: str = "cone",
    block_direct: bool = False,
) -> int:
    say = print
    t0 = time.perf_counter()
    state = lab_up(
        run_dir, mn_nat=mn_nat, cn_nat=cn_nat, adapter_nat=adapter_nat, block_direct=block_direct
    )
    www = run_dir / "cn-www"
    www.mkdir(exist_ok=True)
    (www / "hello.txt").write_text("hello from cn, through the NTMobile tunnel\n")
    server = ns_exec(
        "ntma-cn",
        "python3",
        "-m",
        "http.server",
        "8080",
        "--directory",
        str(www),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
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
        server.terminate()
        server.wait(5)
        lab_down(run_dir)
    say(f"Lab down. Demo {'succeeded' if ok else 'FAILED'}.")
    return 0 if ok else 1
