"""The lab benchmark's markdown section: one table of the setups, one of Table 2, notes."""

from __future__ import annotations

from typing import Any

from ..paper import TABLE2_LABELS
from .settings import PEERS, SETUP_LABELS


def _fmt(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value / scale:.{digits}f}"


def _cpus_used(versions: dict[str, Any]) -> str:
    """ ", all processes on CPU 1" when the run was confined (taskset), else ""."""
    used = versions.get("cpus_used")
    if not used or len(used) == versions.get("cpus"):
        return ""
    return f", all processes on CPU {', '.join(map(str, used))}"


def format_lab_report(result: dict[str, Any]) -> str:
    """A short markdown section: one table of the setups, one of Table 2, the notes."""
    params = result.get("parameters", {})
    versions = result.get("versions", {})
    lines = [
        "## End-to-end on the lab: the adapter against userspace tunnels",
        "",
        f"One run, from the GN's namespace to ntma-cn: {params.get('rtt_count', '?')} UDP "
        f"round trips of {params.get('rtt_payload_bytes', 64)} bytes, iperf3 TCP for "
        f"{params.get('seconds', '?')} s each way. Kernel {versions.get('kernel', '?')}, "
        f"{versions.get('cpus', '?')} CPUs{_cpus_used(versions)}.",
        "",
        "| setup | RTT median µs | RTT p99 µs | lost | TCP fwd Mbit/s | TCP rev Mbit/s "
        "| fwd / plain | rev / plain | fwd / best peer | rev / best peer "
        "| RTT overhead µs | overhead / best peer's |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key, entry in result.get("setups", {}).items():
        name = SETUP_LABELS.get(key, key)
        if "error" in entry or "skipped" in entry:
            why = entry.get("error") or f"skipped: {entry['skipped']}"
            lines.append(f"| {name} | {why.replace('|', '/')} |" + " |" * 10)
            continue
        rtt, tcp = entry.get("rtt_us", {}), entry.get("tcp_bps", {})
        r = entry.get("ratios", {})
        vs_plain, vs_peer = r.get("tcp_vs_plain", {}), r.get("tcp_vs_best_peer", {})
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    _fmt(rtt.get("median")),
                    _fmt(rtt.get("p99")),
                    str(rtt.get("lost", "–")),
                    _fmt(tcp.get("forward"), 1e6),
                    _fmt(tcp.get("reverse"), 1e6),
                    _fmt(vs_plain.get("forward"), digits=2),
                    _fmt(vs_plain.get("reverse"), digits=2),
                    _fmt(vs_peer.get("forward"), digits=2),
                    _fmt(vs_peer.get("reverse"), digits=2),
                    _fmt(r.get("rtt_overhead_us")),
                    _fmt(r.get("rtt_overhead_vs_best_peer"), digits=2),
                ]
            )
            + " |"
        )
    a2a = result.get("setups", {}).get("ntma-a2a", {})
    if "tcp_bps" in a2a:
        lines += [
            "",
            f"{SETUP_LABELS['ntma-a2a']}: from the GN to ntma-gnb, the GN behind the second "
            f"adapter (both adapters behind cone NATs), by name, through both adapters; the "
            f"DC's route: {a2a.get('route') or '?'}.",
        ]
    best = result.get("ratios", {}).get("best_peer", {})
    if best:
        parts = [
            f"{k.replace('_', ' ')}: {v['setup']}" for k, v in best.items() if isinstance(v, dict)
        ]
        lines += ["", f"Best peer (of {', '.join(PEERS)}) — " + "; ".join(parts) + "."]
    table2 = result.get("table2")
    if table2:
        lines += [
            "",
            "The adapter's paths beside the paper's Table 2 (µs per packet):",
            "",
            "| measure | samples | ours mean | ours median | ours p99 "
            "| median before bulk | of which in send() | p99 before bulk | paper |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for path, row in table2.get("paths", {}).items():
            ours, light = row.get("ours") or {}, row.get("ours_before_bulk") or {}
            lines.append(
                f"| {TABLE2_LABELS.get(path, path)} | {ours.get('count', '–')} "
                f"| {_fmt(ours.get('mean_us'))} | {_fmt(ours.get('median_us'))} "
                f"| {_fmt(ours.get('p99_us'))} | {_fmt(light.get('median_us'))} "
                f"| {_fmt(light.get('send_median_us'))} "
                f"| {_fmt(light.get('p99_us'))} | {_fmt(row.get('paper_us'))} |"
            )
        lines += [
            "",
            "Mean over every packet of the run; median and p99 over each path's last 4096 "
            "batches: at the end (mostly under iperf3 load) and before the bulk transfers "
            '(after the RTT probe and the ARP requests, one packet at a time). "Of which in '
            "send()\": the median time in the path's last call, the send to the kernel; on "
            "this lab it includes the receiving namespaces' stack, as veth delivers in the "
            "sender's context.",
        ]
        if table2.get("note"):
            lines += ["", f"Table 2: {table2['note']}."]
    shown = [
        f"{k} {v}" for k, v in versions.items() if k not in ("kernel", "cpus", "cpus_used") and v
    ]
    lines += ["", "Versions: " + "; ".join(shown) + "." if shown else ""]
    notes = [e["note"] for e in result.get("setups", {}).values() if e.get("note")]
    notes += result.get("notes", [])
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(line for line in lines).rstrip() + "\n"
