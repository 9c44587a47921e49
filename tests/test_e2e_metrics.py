"""The metrics endpoints on the lab: every daemon serves /metrics on 127.0.0.1:9400 in its
own namespace (lab/configs.py). curl scrapes the adapter and the DC before and after the
GN reaches cn through the tunnel (ISC dhclient, dig, curl in the GN's namespace, no ntma
code there); the counters grow, the latency histograms have samples, and every scrape is
valid text exposition (prometheus_client's parser reads it back)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ntma.lab import ns_run

from .netns_util import dig, gn_dhclient, serve_dir, stop

pytestmark = pytest.mark.netns

GN = "ntma-gn"
CN_NAME = "cn.ntm.example"
METRICS_URL = "http://127.0.0.1:9400/metrics"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("metrics-lab")
    with open_lab(tmp / "run") as state:
        www = tmp / "www"
        www.mkdir()
        (www / "blob.bin").write_bytes(bytes(range(256)) * 1024)
        server = serve_dir("ntma-cn", www, tmp / "http.log")
        try:
            yield state, tmp
        finally:
            stop(server)
            gn_dhclient(tmp, "-x")


def scrape(state, daemon: str) -> Samples:
    """curl in the daemon's namespace; the text must parse as the exposition format."""
    ns = state.daemons[daemon].ns
    text = ns_run(ns, "curl", "-sS", "--fail", "--max-time", "10", METRICS_URL).stdout
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def gn_traffic() -> None:
    """The GN's VIP by DHCP is there already; a name lookup and 256 KiB from cn."""
    assert dig(GN, CN_NAME)
    got = ns_run(GN, "sh", "-c", f"curl -sS --max-time 30 http://{CN_NAME}:8080/blob.bin | wc -c")
    assert got.stdout.strip() == str(256 * 1024)


def test_scrapes_during_gn_traffic_grow_and_have_latency_samples(lab):
    state, tmp = lab
    assert gn_dhclient(tmp).returncode == 0
    adapter_before, dc_before = scrape(state, "adapter"), scrape(state, "dc")
    gn_traffic()
    adapter_after, dc_after = scrape(state, "adapter"), scrape(state, "dc")

    for stage in (
        "capture",
        "classify",
        "encapsulate",
        "udp_send",
        "udp_receive",
        "decapsulate",
        "inject",
    ):
        labels = {"role": "adapter", "stage": stage}
        assert value(adapter_after, "ntma_stage_packets_total", **labels) > value(
            adapter_before, "ntma_stage_packets_total", **labels
        ), stage
    encap = {"role": "adapter", "stage": "encapsulate"}
    assert value(adapter_after, "ntma_stage_latency_seconds_count", **encap) > 0
    assert value(adapter_after, "ntma_stage_latency_seconds_sum", **encap) > 0
    assert value(adapter_after, "ntma_stage_latency_seconds_bucket", **encap, le="+Inf") > 0
    assert value(adapter_after, "ntma_registration_state", role="adapter", state="registered") == 1
    tunnels = sum(
        value(adapter_after, "ntma_tunnels", role="adapter", route=r)
        for r in ("direct", "punch", "relay")
    )
    assert tunnels >= 1
    up = {"role": "adapter", "direction": "up"}
    assert value(adapter_after, "ntma_tunnel_transitions_total", **up) >= 1

    signalling = {"role": "dc", "stage": "dc_signalling"}
    assert value(dc_after, "ntma_stage_packets_total", **signalling) > value(
        dc_before, "ntma_stage_packets_total", **signalling
    )
    assert value(dc_after, "ntma_stage_latency_seconds_count", **signalling) > 0
    assert value(dc_after, "ntma_dc_nodes", role="dc", state="online") >= 3  # mn, cn, adapter
    assert value(dc_after, "ntma_dc_registrations_total", role="dc") >= 3
    assert value(dc_after, "ntma_handshakes_total", role="dc") >= 3


def test_the_node_and_the_relay_serve_theirs(lab):
    state, _ = lab
    cn = scrape(state, "cn")
    assert value(cn, "ntma_registration_state", role="node", state="registered") == 1
    relay = scrape(state, "relay")
    assert ("ntma_relay_entries", frozenset({("role", "relay")})) in relay


def test_other_paths_are_404_and_junk_leaves_it_serving(lab):
    state, _ = lab
    ns = state.daemons["adapter"].ns
    other = ns_run(
        ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9400/"
    )
    assert other.stdout == "404"
    junk = "printf '\\026\\003\\001junk\\r\\n\\r\\n' | nc -w 3 127.0.0.1 9400"
    assert ns_run(ns, "sh", "-c", junk, check=False).stdout.startswith("HTTP/1.1 400")
    after = scrape(state, "adapter")
    metrics = {"role": "adapter", "stage": "metrics"}
    assert value(after, "ntma_stage_drops_total", **metrics, reason="not_found") >= 1
    assert value(after, "ntma_stage_drops_total", **metrics, reason="bad_request") >= 1
