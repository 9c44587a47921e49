"""`ntma status`'s readable output: blocks like `wg show` for a node's tunnels and an
adapter's devices, column tables for the DC's nodes and routes and the RS's entries.
Pure: a status dict (node_status.py, server_status.py) in, text out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render(status: dict[str, Any]) -> str:
    role = status.get("role")
    if role == "dc":
        return render_dc(status)
    if role == "relay":
        return render_relay(status)
    return render_node(status)


def size(n: int) -> str:
    """Bytes as wg shows them: 512 B, 1.50 KiB, 3.20 MiB, 1.00 GiB."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"


def ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:g} s ago"


def drops_text(drops: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(drops.items())) or "none"


def _vips(*vips: str | None) -> str:
    return ", ".join(v for v in vips if v) or "none"


def _block(title: str, lines: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"  {key}: {value}\n" for key, value in lines)
    return f"{title}\n{body}"


def _transfer(item: dict[str, Any]) -> str:
    received = f"{size(item['bytes_in'])} received ({item['packets_in']} packets)"
    return f"{received}, {size(item['bytes_out'])} sent ({item['packets_out']} packets)"


def render_node(status: dict[str, Any]) -> str:
    reg, dc = status["registration"], status["dc"]
    nat = reg["nat"] or "unknown"
    if reg["observed"]:
        nat += f" (seen as {reg['observed']})"
    dc_line = f"{dc['address']}, last ack {ago(dc['last_ack_s_ago'])}"
    dc_line += f", {dc['keepalives_lost']} keep-alives lost"
    lines = [
        ("state", reg["state"]),
        ("vip", _vips(reg["vip"], reg["vip6"])),
        ("nat", nat),
        ("dc", dc_line),
    ]
    if status.get("signalling_drops"):
        lines.append(("signalling drops", drops_text(status["signalling_drops"])))
    stages = status.get("stage_drops") or {}
    if stages:
        per_stage = {f"{stage}/{why}": n for stage, d in stages.items() for why, n in d.items()}
        lines.append(("stage drops", drops_text(per_stage)))
    blocks = [_block(f"{status['role']}: {status['fqdn']}", lines)]
    blocks += [_tunnel_block(t, status["fqdn"]) for t in status["tunnels"]]
    blocks += [_device_block(d) for d in status.get("devices", [])]
    if not status["tunnels"]:
        blocks.append("(no tunnels)\n")
    return "\n".join(blocks)


def _tunnel_block(tunnel: dict[str, Any], fqdn: str) -> str:
    title = f"tunnel: {tunnel['peer']}"
    if tunnel["self"] and tunnel["self"] != fqdn:
        title += f" (from {tunnel['self']})"
    lines = [
        ("peer vip", _vips(tunnel["peer_vip"], tunnel["peer_vip6"])),
        ("route", f"{tunnel['route']} ({tunnel['why']})"),
        ("endpoint", tunnel["endpoint"] + (" (the relay)" if tunnel["route"] == "relay" else "")),
        ("latest handshake", ago(tunnel["handshake_s_ago"])),
        ("transfer", _transfer(tunnel)),
        ("drops", drops_text(tunnel["drops"])),
    ]
    return _block(title, lines)


def _lease_text(lease: dict[str, Any] | None) -> str:
    if lease is None:
        return "none"
    if lease["expires_in_s"] is None:
        return f"{lease['address']}, infinite"
    if not lease["valid"]:
        return f"{lease['address']}, expired {-lease['expires_in_s']:g} s ago"
    return f"{lease['address']}, expires in {lease['expires_in_s']:g} s"


def _device_block(device: dict[str, Any]) -> str:
    lines = [
        ("mac", f"{device['mac']} (named by {device['source']})"),
        ("vip", _vips(device["vip"], device["vip6"]) + (" (refused)" if device["refused"] else "")),
        ("lease", _lease_text(device["lease"])),
        ("transfer", _transfer(device)),
        ("drops", drops_text(device["drops"])),
    ]
    return _block(f"device: {device['name']}", lines)


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table: each column as wide as its widest cell, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines) + "\n"


def _per_family(values: dict[str, str | None]) -> str:
    return ", ".join(f"{v}" for v in values.values() if v) or "-"


def render_dc(status: dict[str, Any]) -> str:
    nodes = [
        (
            n["name"],
            _vips(n["vip"], n["vip6"]),
            _per_family(n["endpoints"]),
            ", ".join(f"{fam}:{reach}" for fam, reach in n["nat"].items()) or "-",
            "yes" if n["online"] else "no",
            ago(n["last_seen_s_ago"]),
        )
        for n in status["nodes"]
    ]
    nodes += [
        (f"  +{a['name']}", _vips(a["vip"], a["vip6"]), "", "", "", "")
        for n in status["nodes"]
        for a in n["added"]
    ]
    headers = ("NAME", "VIP", "ENDPOINT", "NAT", "ONLINE", "LAST SEEN")
    text = f"dc: {status['zone']}, {len(status['nodes'])} nodes, {len(status['routes'])} routes\n\n"
    text += columns(headers, sorted(nodes, key=lambda row: row[0].lstrip(" +")))
    routes = [
        (
            f"{r['requester']} -> {r['target']}",
            r["route"] + (" (dormant)" if r["dormant"] else ""),
            r["initiator"],
            r["why"],
        )
        for r in status["routes"]
    ]
    if routes:
        text += "\n" + columns(("PAIR", "ROUTE", "OPENS", "WHY"), routes)
    return text


def render_relay(status: dict[str, Any]) -> str:
    def end(e: dict[str, Any]) -> str:
        return f"{e['endpoint'] or 'unbound'} ({e['key'][:8]})"

    rows = [
        (
            str(e["tunnel_id"]),
            end(e["ends"][0]),
            end(e["ends"][1]),
            str(e["packets"]),
            size(e["bytes"]),
            f"{e['idle_s']:g} s",
            f"{e['grant_expires_in_s']} s",
        )
        for e in status["entries"]
    ]
    text = f"relay: {len(rows)} entries, {status['forwarded']} datagrams forwarded\n"
    if rows:
        headers = ("TUNNEL", "END A", "END B", "PACKETS", "BYTES", "IDLE", "GRANT EXPIRES IN")
        text += "\n" + columns(headers, rows)
    return text
