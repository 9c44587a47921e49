"""The Relay Server on the lab is never an open relay: from a host on the Internet segment,
data with no grant, a bind with an expired grant, and a valid grant for another tunnel used
to inject into a relayed tunnel are all dropped and counted, and nothing reaches the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ntma.lab import log_events, ns_run
from ntma.proto.crypto import SignalBox, StaticKey, load_key_file
from ntma.proto.grant import Grant, grant_key, make_grant
from ntma.proto.messages import RelayBind
from ntma.proto.packet import pack_data_header, seal_message

from .netns_util import dig, wait_for

pytestmark = pytest.mark.netns

RS = ("198.51.100.60", 7500)
SEND = (
    "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
    "s.bind(('198.51.100.20',47000));"
    "[s.sendto(bytes.fromhex(h),('198.51.100.60',7500)) for h in sys.argv[1:]]"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    run = tmp_path_factory.mktemp("relay-abuse") / "run"
    # mn behind a symmetric NAT, cn behind a cone NAT: their tunnel goes through the RS.
    with open_lab(run, mn_nat="symmetric", cn_nat="cone") as state:
        yield state


def _last(log: str, event: str, **match: Any) -> dict[str, Any] | None:
    found = [
        e
        for e in log_events(log)
        if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
    ]
    return found[-1] if found else None


def _relay_drops(state: dict[str, Any]) -> dict[str, int]:
    stats = _last(state["daemons"]["relay"]["log"], "stage_stats", stage="relay")
    return stats["drops"] if stats else {}


def test_abuse_of_the_relay_is_dropped_counted_and_not_forwarded(lab):
    state = lab
    run = Path(state["run_dir"])
    assert dig("ntma-mn", "cn.ntm.example")  # builds the relayed tunnel
    route = _last(state["daemons"]["dc"]["log"], "route_decided")
    assert route["route"] == "relay"
    tunnel_id = route["tunnel_id"]
    keys = {n: load_key_file(run / "keys" / f"{n}.key") for n in ("dc", "rs", "mn", "cn")}
    secret = grant_key(keys["dc"], keys["rs"].public)
    now_ms = int(time.time() * 1000)
    ends = (keys["mn"].public, keys["cn"].public)

    def bind(grant: bytes, signer: StaticKey) -> str:
        box = SignalBox(signer, keys["rs"].public)
        msg = RelayBind(1, now_ms, grant)
        return seal_message(msg, box, signer.public, bytes(12)).hex()

    expired = make_grant(secret, Grant(tunnel_id, now_ms - 1000, *ends))
    other = make_grant(secret, Grant(tunnel_id ^ 0x5A5A, now_ms + 60_000, *ends))
    forged = bytearray(make_grant(secret, Grant(tunnel_id, now_ms + 60_000, *ends)))
    forged[-1] ^= 1
    stranger = StaticKey.generate()
    injected = pack_data_header(tunnel_id, 1 << 40) + b"\xee" * 64
    cn_before = _last(state["daemons"]["cn"]["log"], "stage_stats", stage="decapsulate")
    before = _relay_drops(state)
    packets = [
        (pack_data_header(0x0BADF00D, 1) + b"\xee" * 64).hex(),  # no grant for that tunnel
        injected.hex(),  # into the relayed tunnel, from an unbound address
        bind(expired, keys["mn"]),  # an end's key, but the grant has expired
        bind(bytes(forged), keys["mn"]),  # a grant whose tag does not verify
        bind(make_grant(secret, Grant(tunnel_id, now_ms + 60_000, *ends)), stranger),
        bind(other, keys["mn"]),  # a valid grant for another tunnel...
        injected.hex(),  # ... does not let its holder into this one
    ]
    ns_run("ntma-web", "python3", "-c", SEND, *packets)

    def counted():
        drops = _relay_drops(state)
        grown = {k: drops.get(k, 0) - before.get(k, 0) for k in drops}
        wanted = ("no_binding", "unbound_source", "expired_grant", "bad_grant", "not_an_end")
        return grown if all(grown.get(k, 0) >= 1 for k in wanted) else None

    grown = wait_for(counted, 10, "the relay to count every kind of abuse")
    assert grown["unbound_source"] >= 2
    time.sleep(2.5)  # one more stats interval at cn
    cn_after = _last(state["daemons"]["cn"]["log"], "stage_stats", stage="decapsulate")
    for reason in ("auth", "replay", "unknown_tunnel", "malformed"):  # nothing reached cn
        assert cn_after["drops"].get(reason, 0) == (cn_before or {"drops": {}})["drops"].get(
            reason, 0
        ), reason
    # The real tunnel still works through the relay.
    cn_vip = dig("ntma-mn", "cn.ntm.example")
    ping = ns_run("ntma-mn", "ping", "-c", "3", "-W", "2", cn_vip, check=False)
    assert " 0% packet loss" in ping.stdout
