"""The lab benchmark's markdown section: one table of the setups, one of Table 2, notes."""

from __future__ import annotations

from collections.abc import Callable
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


def _lab_of(result: dict[str, Any], setup: str) -> dict[str, Any]:
    """The record of the lab `setup` was measured on ({} if none)."""
    return next((lab for lab in result.get("labs", []) if setup in lab.get("setups", [])), {})


def _tunnel(entry: dict[str, Any]) -> str:
    return (
        f"the adapter's tunnel: route {entry.get('route') or '?'}, "
        f"to {entry.get('peer_endpoint') or '?'}"
    )


def _a2a_text(entry: dict[str, Any], lab: dict[str, Any]) -> str:
    return (
        "from the GN to ntma-gnb, the GN behind the second adapter (both adapters behind "
        "cone NATs), by name, through both adapters; the DC's route: "
        f"{entry.get('route') or '?'}."
    )


def _v6_text(entry: dict[str, Any], lab: dict[str, Any]) -> str:
    return (
        f"from the GN's SLAAC address ({entry.get('gn_address', '?')}) to cn's IPv6 VIP "
        f"({entry.get('target', '?')}, by dig AAAA): IPv6 inside the tunnel, whose outer "
        f"packets are {entry.get('outer') or '?'} (the adapter behind its cone NAT); "
        f"{_tunnel(entry)}."
    )


def _u6_text(entry: dict[str, Any], lab: dict[str, Any]) -> str:
    if "lab_rebuilt_s" in entry:
        when = f"the lab brought down and up again for it in {entry['lab_rebuilt_s']:g} s"
    else:
        when = f"its lab up in {lab.get('up_s', '?')} s"
    return (
        f"from the GN to cn's IPv4 VIP ({entry.get('target', '?')}) through a tunnel whose "
        f"outer packets are {entry.get('outer') or '?'}, on a lab of its own (the adapter "
        f"and cn public and dual-stack; {when}); {_tunnel(entry)}. Its ratios are to the "
        "plain row, on the main lab, where the adapter is behind a cone NAT."
    )


#: The rows described under the table, once measured: setup -> its text (entry, its lab).
ROW_TEXTS: dict[str, Callable[[dict[str, Any], dict[str, Any]], str]] = {
    "ntma-v6": _v6_text,
    "ntma-u6": _u6_text,
    "ntma-a2a": _a2a_text,
}


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
    for key, describe in ROW_TEXTS.items():
        entry = result.get("setups", {}).get(key, {})
        if "tcp_bps" in entry:
            lines += ["", f"{SETUP_LABELS[key]}: {describe(entry, _lab_of(result, key))}"]
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
