"""Helpers for the Wireshark dissector tests: run tshark with contrib/wireshark/ntma.lua,
flatten its JSON, and write a pcap of IPv4/UDP datagrams (the codec's own bytes).

Each decoded datagram is a `Decoded`: the ntma fields of its outer layer (`fields`), the
fields of a handshake carried in a RELAY_ENVELOPE (`inner`), the expert infos the
dissector added (`experts`), and whether tshark reported a Lua error."""

from __future__ import annotations

import functools
import json
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ntma.proto.ether import checksum

ROOT = Path(__file__).resolve().parent.parent
DISSECTOR = ROOT / "contrib" / "wireshark" / "ntma.lua"
LINKTYPE_RAW = 101  # the frame is the IP header on


@functools.cache
def tshark_skip_reason() -> str | None:
    if shutil.which("tshark") is None:
        return "tshark is not installed (scripts/install.sh installs it)"
    return None


@dataclass
class Decoded:
    frame: int
    src_port: int
    dst_port: int
    fields: dict[str, Any] = field(default_factory=dict)
    inner: dict[str, Any] = field(default_factory=dict)
    experts: list[str] = field(default_factory=list)  # "abbrev: message"
    lua_error: bool = False

    @property
    def type(self) -> int:
        return int(self.fields["ntma.type"], 0)

    @property
    def malformed(self) -> bool:
        return any(e.startswith("ntma.malformed") for e in self.experts)

    def get(self, name: str, inner: bool = False) -> Any:
        return (self.inner if inner else self.fields).get(name)

    def int(self, name: str, inner: bool = False) -> int:
        return int((self.inner if inner else self.fields)[name], 0)


def _walk(tree: dict[str, Any], out: dict[str, Any], experts: list[str]) -> None:
    for key, value in tree.items():
        if key == "_ws.expert":
            names = [k for k in value if not k.startswith("_ws.expert")]
            experts.append(f"{names[0] if names else '?'}: {value.get('_ws.expert.message')}")
        elif key == "ntma.inner_tree":
            continue  # the carried handshake: read separately
        elif isinstance(value, dict):
            _walk(value, out, experts)
        else:
            out.setdefault(key, value)


def tshark_decode(pcap: Path, *extra: str) -> list[Decoded]:
    """Every frame of `pcap` through tshark and the dissector (UDP frames only)."""
    proc = subprocess.run(
        [
            "tshark",
            "-n",
            "-X",
            f"lua_script:{DISSECTOR}",
            "-r",
            str(pcap),
            "-T",
            "json",
            "--no-duplicate-keys",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Lua: Error" not in proc.stderr, proc.stderr[-2000:]
    out = []
    for packet in json.loads(proc.stdout or "[]"):
        layers = packet["_source"]["layers"]
        if "udp" not in layers:
            continue
        udp = layers["udp"]
        got = Decoded(
            frame=int(layers["frame"]["frame.number"]),
            src_port=int(udp["udp.srcport"]),
            dst_port=int(udp["udp.dstport"]),
        )
        text = json.dumps(layers)
        got.lua_error = "_ws.lua.error" in text or "Lua Error" in text
        tree = layers.get("ntma")
        if isinstance(tree, dict):
            _walk(tree, got.fields, got.experts)
            inner_tree = _find(tree, "ntma.inner_tree")
            if inner_tree is not None:
                _walk(inner_tree, got.inner, got.experts)
        out.append(got)
    return out


def _find(tree: dict[str, Any], key: str) -> dict[str, Any] | None:
    if key in tree:
        return tree[key]
    for value in tree.values():
        if isinstance(value, dict):
            found = _find(value, key)
            if found is not None:
                return found
    return None


# --- pcap writing ----------------------------------------------------------------------


def ipv4_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4/UDP packet (UDP checksum 0: none, which IPv4 allows)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    addrs = bytes(map(int, src[0].split("."))) + bytes(map(int, dst[0].split(".")))
    head = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0) + addrs
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return head + udp


def write_pcap(path: Path, packets: list[bytes]) -> None:
    """A pcap (raw IPv4 link type) with one frame per packet, a millisecond apart."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
    for i, packet in enumerate(packets):
        out += struct.pack("<IIII", 1_700_000_000, i * 1000, len(packet), len(packet))
        out += packet
    path.write_bytes(bytes(out))
