"""The lab benchmark's IPv6 rows without root: which labs a run builds for which setups,
the GN's SLAAC address from `ip -j -6 addr`, the adapter's tunnel from its log events,
the rows' labels and texts in the report, and `ntma bench --setups`."""

from __future__ import annotations

import pytest

from ntma.bench.lab import SETUP_LABELS, SETUPS, compute_ratios, format_lab_report
from ntma.bench.lab.ipv6 import endpoint_host, tunnel_to
from ntma.bench.lab.plan import LabPlan, own_topology, plan_labs
from ntma.bench.lab.session import check_ip, slaac_address
from ntma.bench.lab.settings import NTMA_SETUPS, TOOLS, BenchError
from ntma.bench.report import parse_args

U6_LAB = {"adapter_nat": "none", "adapter_net": "dual", "cn_nat": "none", "cn_net": "dual"}


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        (  # the whole bench: one lab with every additive need (IPv6 inside first, on the
            # adapter's first start), then the underlay's own
            list(SETUPS),
            [
                LabPlan(
                    {"vip6": True, "adapters": 2},
                    ["ntma-v6", "ntma", "ntma-a2a", "plain", "tinc", "wireguard-go", "openvpn"],
                ),
                LabPlan(U6_LAB, ["ntma-u6"]),
            ],
        ),
        (["ntma"], [LabPlan({}, ["ntma"])]),  # as before: no vip6, one adapter
        (["ntma-v6"], [LabPlan({"vip6": True}, ["ntma-v6"])]),
        (["ntma-u6"], [LabPlan(U6_LAB, ["ntma-u6"])]),  # alone: its lab is the only one
        (
            ["ntma-u6", "ntma-v6"],
            [LabPlan({"vip6": True}, ["ntma-v6"]), LabPlan(U6_LAB, ["ntma-u6"])],
        ),
        (["plain", "ntma-a2a"], [LabPlan({"adapters": 2}, ["ntma-a2a", "plain"])]),
        ([], []),
    ],
    ids=["all", "ntma", "v6", "u6", "v6+u6", "a2a+plain", "none"],
)
def test_plan_labs_shares_the_main_lab_and_gives_a_topology_its_own(chosen, expected):
    assert plan_labs(chosen) == expected


def test_every_setup_has_tools_a_function_and_the_ipv6_rows_labels():
    from ntma.bench.lab.setups import SETUP_FUNCS

    assert set(SETUP_FUNCS) == set(SETUPS) == set(TOOLS)
    assert {"ntma-v6", "ntma-u6"} <= set(NTMA_SETUPS)
    assert SETUP_LABELS["ntma-v6"] == "ntma IPv6 inside"
    assert SETUP_LABELS["ntma-u6"] == "ntma IPv6 underlay"
    assert [s for s in SETUPS if own_topology(s)] == ["ntma-u6"]


ADDR_SHOW = [  # `ip -j -6 addr show dev eth0` in ntma-gn, trimmed
    {
        "ifname": "eth0",
        "addr_info": [
            {
                "family": "inet6",
                "local": "fd00:99::dead",
                "scope": "global",
                "tentative": True,
                "dynamic": True,
            },
            {"family": "inet6", "local": "fd00:99::7", "scope": "global", "noprefixroute": True},
            {
                "family": "inet6",
                "local": "fd00:99::ff:fe00:a01",
                "scope": "global",
                "dynamic": True,
                "mngtmpaddr": True,
                "valid_life_time": 86400,
            },
            {"family": "inet6", "local": "fe80::ff:fe00:a01", "scope": "link"},
        ],
    }
]


def test_slaac_address_is_the_global_dynamic_one_past_dad():
    assert slaac_address(ADDR_SHOW) == "fd00:99::ff:fe00:a01"
    only_tentative = [{"addr_info": ADDR_SHOW[0]["addr_info"][:2]}]
    assert slaac_address(only_tentative) is None  # still in DAD, or static: not yet
    assert slaac_address([]) is None and slaac_address([{"ifname": "eth0"}]) is None


def test_check_ip_takes_the_family_asked_for():
    assert check_ip(" fd00:99::0a ", "dig AAAA", 6) == "fd00:99::a"
    assert check_ip("10.99.0.3\n", "dig") == "10.99.0.3"
    with pytest.raises(BenchError, match="dig AAAA: expected an IPv6 address, got '10.99.0.3'"):
        check_ip("10.99.0.3", "dig AAAA", 6)
    with pytest.raises(BenchError, match="expected an IPv4 address"):
        check_ip(";; connection timed out", "dig")


def test_tunnel_to_takes_the_last_tunnel_up_to_the_peer_and_its_outer_family():
    events = [
        {
            "event": "tunnel_up",
            "peer": "cn.ntm.example",
            "route": "punch",
            "peer_endpoint": "198.51.100.31:7401",
        },
        {
            "event": "tunnel_up",
            "peer": "mn.ntm.example",
            "route": "relay",
            "peer_endpoint": "198.51.100.60:7500",
        },
        {"event": "stage_stats", "peer": "cn.ntm.example"},
        {
            "event": "tunnel_up",
            "peer": "cn.ntm.example",
            "route": "direct",
            "peer_endpoint": "2001:db8::30:7401",
        },
    ]
    assert tunnel_to(events, "cn.ntm.example") == {
        "route": "direct",
        "peer_endpoint": "2001:db8::30:7401",
        "outer": "ipv6",
    }
    assert tunnel_to(events[:2], "cn.ntm.example")["outer"] == "ipv4"
    assert tunnel_to(events, "gnb.ntm.example") is None
    assert tunnel_to([{"event": "tunnel_up", "peer": "x"}], "x")["outer"] is None
    assert endpoint_host("[2001:db8::30]:7401") == "2001:db8::30"
    assert endpoint_host("198.51.100.30:7401") == "198.51.100.30"


def _entry(median: float, fwd: float, rev: float, **extra) -> dict:
    return {
        "target": "x",
        "rtt_us": {"median": median, "p99": median * 2, "mean": median, "lost": 0, "count": 100},
        "tcp_bps": {"forward": fwd, "reverse": rev},
        **extra,
    }


def test_the_report_shows_the_ipv6_rows_and_their_tunnels():
    setups = {
        "ntma": _entry(400.0, 800e6, 900e6),
        "ntma-v6": _entry(
            420.0,
            760e6,
            850e6,
            target="fd00:99::3",
            gn_address="fd00:99::a01",
            route="direct",
            peer_endpoint="198.51.100.30:7401",
            outer="ipv4",
        ),
        "ntma-u6": _entry(
            410.0,
            780e6,
            880e6,
            target="10.99.0.3",
            route="direct",
            peer_endpoint="2001:db8::30:7401",
            outer="ipv6",
            lab_rebuilt_s=9.4,
        ),
        "plain": _entry(50.0, 1600e6, 12000e6),
    }
    ratios = compute_ratios(setups)
    assert setups["ntma-v6"]["ratios"]["tcp_vs_plain"]["forward"] == 0.475
    labs = [
        {"setups": ["ntma", "ntma-v6", "plain"], "options": {"vip6": True}, "up_s": 6.1},
        {"setups": ["ntma-u6"], "options": {}, "down_s": 2.3, "up_s": 7.1},
    ]
    result = {"setups": setups, "ratios": ratios, "labs": labs, "parameters": {}, "versions": {}}
    report = format_lab_report(result)
    assert "| ntma IPv6 inside | 420.0 | 840.0 | 0 | 760.0 | 850.0 | 0.47 | 0.07 |" in report
    assert "| ntma IPv6 underlay | 410.0 | 820.0 | 0 | 780.0 | 880.0 | 0.49 | 0.07 |" in report
    assert (
        "ntma IPv6 inside: from the GN's SLAAC address (fd00:99::a01) to cn's IPv6 VIP "
        "(fd00:99::3, by dig AAAA): IPv6 inside the tunnel, whose outer packets are ipv4"
    ) in report
    assert "the adapter's tunnel: route direct, to 198.51.100.30:7401." in report
    assert "brought down and up again for it in 9.4 s" in report
    assert "the adapter's tunnel: route direct, to 2001:db8::30:7401." in report
    u6_alone = {k: v for k, v in setups["ntma-u6"].items() if k != "lab_rebuilt_s"}
    alone = {"setups": {"ntma-u6": u6_alone}, "labs": [{"setups": ["ntma-u6"], "up_s": 7.1}]}
    assert "its lab up in 7.1 s" in format_lab_report(alone)  # the run's only lab
    failed = {"setups": {"ntma-u6": {"error": "BenchError: not over IPv6"}}, "labs": []}
    text = format_lab_report(failed)
    assert "| ntma IPv6 underlay | BenchError: not over IPv6 |" in text
    assert "a lab of its own" not in text


def test_bench_setups_option_needs_lab_and_known_names(capsys):
    assert parse_args(["--lab", "--setups", "ntma-v6,ntma-u6"]).setups == ["ntma-v6", "ntma-u6"]
    assert parse_args(["--lab"]).setups is None
    for argv, said in (
        (["--setups", "ntma"], "--setups needs --lab"),
        (["--lab", "--setups", "ntma,ipv7"], "unknown setup 'ipv7'; choose from ntma, ntma-v6"),
        (["--lab", "--setups", ","], "no setup named"),
    ):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert said in capsys.readouterr().err
