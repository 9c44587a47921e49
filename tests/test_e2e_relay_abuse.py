"""The Relay Server on the lab is never an open relay (protocol v2): from a host on the
Internet segment, datagrams with no binding, an envelope from an unbound address, binds
with an expired, forged, foreign or colliding grant (each in the stranger's own RS session:
a bind outside one is not even read), replays of the stranger's own signalling and of the
ends' captured signalling from another address, and data into the relayed tunnel from a
holder of another tunnel's grant are all dropped and counted; no binding moves, nothing
reaches the end, and the relayed tunnel keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import log_events, ns_run
from ntma.proto.crypto import StaticKey, load_key_file
from ntma.proto.envelope import wrap
from ntma.proto.fields_v2 import Status, dc_id_of
from ntma.proto.grant import Grant, grant_key, make_grant
from ntma.proto.handshake import T_DATA, T_INIT, header

from .netns_util import dig, udp_payloads, wait_for

pytestmark = pytest.mark.netns

RS_PORT_ON_INET = "p-rs"  # the RS's port on the Internet segment's bridge
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    run = tmp_path_factory.mktemp("relay-abuse") / "run"
    # mn behind a symmetric NAT, cn behind a cone NAT: their tunnel goes through the RS.
    with open_lab(run, mn_nat="symmetric", cn_nat="cone") as state:
        yield state


def _all(log: str, event: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in log_events(log)
        if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
    ]


def _last(log: str, event: str, **match: Any) -> dict[str, Any] | None:
    found = _all(log, event, **match)
    return found[-1] if found else None


def _relay_drops(state: dict[str, Any]) -> dict[str, int]:
    stats = _last(state["daemons"]["relay"]["log"], "stage_stats", stage="relay")
    return stats["drops"] if stats else {}


def _capture_rs(pcap: Path, tmp: Path) -> subprocess.Popen:
    """tcpdump of what reaches the RS on the Internet segment, once it is listening."""
    err = tmp / "rs.tcpdump.log"
    cmd = ["ip", "netns", "exec", "ntma-inet", "tcpdump", "-i", RS_PORT_ON_INET, "-Z", "root"]
    cmd += ["-U", "--immediate-mode", "-n", "-w", str(pcap), "udp and dst port 7500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    wait_for(lambda: "listening on" in err.read_text(), 10, "tcpdump to listen")
    return proc


def _stranger(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        ["ip", "netns", "exec", "ntma-web", "python3", "-m", "tests.rs_stranger"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=True,
    )
    return json.loads(out.stdout)


def test_abuse_of_the_relay_is_dropped_counted_and_not_forwarded(lab, tmp_path):
    state = lab
    run = Path(state["run_dir"])
    pcap = tmp_path / "rs.pcap"
    capture = _capture_rs(pcap, tmp_path)
    try:
        assert dig("ntma-mn", "cn.ntm.example")  # builds the relayed tunnel
        time.sleep(1.0)
    finally:
        capture.terminate()
        capture.wait(5)
    captured = [p[4].hex() for p in udp_payloads(pcap) if p[0] != "198.51.100.20"]
    assert captured, "nothing captured on its way to the RS"
    route = _last(state["daemons"]["dc"]["log"], "route_decided")
    assert route["route"] == "relay"
    tunnel_id = route["tunnel_id"]
    keys = {n: load_key_file(run / "keys" / f"{n}.key") for n in ("dc", "rs", "mn", "cn")}
    secret = grant_key(keys["dc"], keys["rs"].public)
    dc_id = dc_id_of(keys["dc"].public)
    now_ms = int(time.time() * 1000)
    stranger = StaticKey.generate()
    ends = (keys["mn"].public, keys["cn"].public)
    theirs = (stranger.public, keys["cn"].public)
    other_id = tunnel_id ^ 0x5A5A

    def grant(tid: int, expires_ms: int, pair=ends) -> str:
        return make_grant(secret, Grant(dc_id, tid, expires_ms, *pair)).hex()

    forged = bytearray.fromhex(grant(tunnel_id, now_ms + 60_000))
    forged[-1] ^= 1
    data = header(T_DATA) + (0x0BADF00D).to_bytes(4, "big") + (1 << 40).to_bytes(8, "big")
    data += b"\xee" * 64
    envelope = wrap(dc_id, tunnel_id, header(T_INIT) + bytes(200))
    cn_before = _last(state["daemons"]["cn"]["log"], "stage_stats", stage="decapsulate")
    before = _relay_drops(state)
    result = _stranger(
        {
            "key": stranger.private_base64(),
            "rs_public": keys["rs"].public.hex(),
            "before": [data.hex(), envelope.hex()],  # no binding; from an unbound address
            "binds": [
                grant(tunnel_id, now_ms - 1000),  # expired
                forged.hex(),  # a tag that does not verify
                grant(tunnel_id, now_ms + 60_000),  # valid, but the stranger is not an end
                grant(tunnel_id, now_ms + 60_000, theirs),  # the live tunnel's id, other ends
                grant(other_id, now_ms + 60_000, theirs),  # a real grant for another tunnel...
            ],
            "replays": captured,  # the ends' own hellos, binds, keep-alives, envelopes, data
            "after": [data.hex()],  # ... does not let its holder into this one
        }
    )
    refused = int(Status.REFUSED)
    assert result["statuses"] == [refused, refused, refused, refused, int(Status.OK)]

    wanted = (
        "no_binding",
        "unbound_source",
        "expired_grant",
        "bad_grant",
        "not_an_end",
        "grant_collision",
        "replayed",
        "replayed_init",
    )

    def counted():
        drops = _relay_drops(state)
        grown = {k: drops.get(k, 0) - before.get(k, 0) for k in drops}
        return grown if all(grown.get(k, 0) >= 1 for k in wanted) else None

    grown = wait_for(counted, 10, "the relay to count every kind of abuse")
    assert grown["no_binding"] >= 2 and grown["replayed"] >= 5  # 5 binds replayed twice
    rs_log = state["daemons"]["relay"]["log"]
    # No binding moved: the relayed tunnel's ends are where they bound, never the stranger.
    real = _all(rs_log, "relay_bound", tunnel=tunnel_id)
    assert real and not [e for e in real if e["moved"]]
    assert not [e for e in real if e["endpoint"].startswith("198.51.100.20:")]
    # The stranger's own tunnel bound once, at the session's endpoint, never at the replays'.
    (own,) = _all(rs_log, "relay_bound", tunnel=other_id)
    assert own["endpoint"] == result["endpoint"] and not own["moved"]
    time.sleep(2.5)  # one more stats interval at cn
    cn_after = _last(state["daemons"]["cn"]["log"], "stage_stats", stage="decapsulate")
    for reason in ("auth", "replay", "unknown_index", "malformed"):  # nothing reached cn
        assert cn_after["drops"].get(reason, 0) == (cn_before or {"drops": {}})["drops"].get(
            reason, 0
        ), reason
    # The real tunnel still works through the relay.
    cn_vip = dig("ntma-mn", "cn.ntm.example")
    ping = ns_run("ntma-mn", "ping", "-c", "3", "-W", "2", cn_vip, check=False)
    assert " 0% packet loss" in ping.stdout
