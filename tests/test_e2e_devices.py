"""Several unmodified devices behind one adapter, on the lab (`--gns 3`, issue 12): real DHCP
clients in every GN namespace (ISC dhclient in ntma-gn and ntma-gn3, busybox udhcpc in
ntma-gn2) get distinct VIPs, each the DC's record for that GN's name; cn fetches by name from
a web server on each GN (the responder side, nothing changed on the GNs); the GNs reach each
other by name through the adapter without a tunnel; a GN that sends with another's VIP or
speaks for another's MAC in DHCP is dropped and counted while the real one keeps working;
every GN keeps its VIP across an adapter restart; and, where the operator allows it, a device
not in the adapter's table is named by its DHCP host name (udhcpc -x hostname:...), reached
by that name, and keeps it across a restart."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ntma.config import load_adapter_config, load_dc_config
from ntma.config_write import write_config
from ntma.dc.admission import SubZone
from ntma.lab import DC_IP, events_named, lab_restart, log_events, log_size, ns_run
from ntma.proto import dhcp_codec as dhcp
from ntma.proto.crypto import decode_key
from ntma.proto.ether import ETH_P_IP, build_udp, eth_header, ip_packed

from .netns_util import dig, nc_one_way, serve_dir, stop, wait_for
from .test_e2e_hostile import blast, drops

pytestmark = pytest.mark.netns

GNS = {  # namespace -> (its name, its DHCP client)
    "ntma-gn": ("gn.ntm.example", "dhclient"),
    "ntma-gn2": ("gn2.ntm.example", "udhcpc"),
    "ntma-gn3": ("gn3.ntm.example", "dhclient"),
}
ROUTER = "10.99.0.1"
CN_NAME = "cn.ntm.example"


def _v4(ns: str) -> str | None:
    info = json.loads(ns_run(ns, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    return next((a["local"] for a in info.get("addr_info", []) if a["family"] == "inet"), None)


def _mac(ns: str, ifname: str = "eth0") -> bytes:
    text = ns_run(ns, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()
    return bytes.fromhex(text.replace(":", ""))


def _lease(ns: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """The namespace's own DHCP client, once (it configures eth0 and resolv.conf)."""
    if GNS[ns][1] == "udhcpc":
        cmd = ["udhcpc", "-n", "-q", "-i", "eth0", "-t", "5", "-T", "2"]
    else:
        files = tmp / ns
        cmd = ["timeout", "40", "dhclient", "-1", "-pf", f"{files}.pid", "-lf", f"{files}.leases"]
        cmd.append("eth0")
    return ns_run(ns, *cmd, check=False, timeout=50)


def _release_dhclients(tmp: Path) -> None:
    for ns, (_, client) in GNS.items():
        if client == "dhclient":
            files = tmp / ns
            ns_run(ns, "dhclient", "-x", "-pf", f"{files}.pid", "-lf", f"{files}.leases",
                   "eth0", check=False, timeout=20)


def _curl(ns: str, url: str) -> str:
    return ns_run(ns, "curl", "-sS", "--max-time", "20", url, timeout=30).stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory, open_lab) -> Any:
    tmp = tmp_path_factory.mktemp("devices-lab")
    with open_lab(tmp / "run", gns=3) as state:
        servers = []
        try:
            for ns, (name, _) in GNS.items():
                www = tmp / f"www-{ns}"
                www.mkdir()
                (www / "who.txt").write_text(f"{name}\n")
                servers.append(serve_dir(ns, www, tmp / f"http-{ns}.log"))
            yield state, tmp
        finally:
            for server in servers:
                stop(server)
            _release_dhclients(tmp)


@pytest.fixture(scope="module")
def leased(lab) -> Any:
    state, tmp = lab
    for ns in GNS:
        result = _lease(ns, tmp)
        assert result.returncode == 0, (ns, result.stdout, result.stderr)
        wait_for(lambda ns=ns: _v4(ns), 10, f"{ns}'s client to set its address")
    return state, tmp, {ns: _v4(ns) for ns in GNS}


def test_every_gn_gets_its_own_vip_the_dcs_record_of_its_name(leased):
    state, _, vips = leased
    assert len(set(vips.values())) == len(GNS), vips
    for ns, (name, _) in GNS.items():
        assert dig("ntma-web", name, f"@{DC_IP}") == vips[ns]  # the zone's record
    leases = [e for e in log_events(state.daemons["adapter"].log) if e.get("event") == "dhcp_lease"]
    assert {e["device"]: e["ip"] for e in leases} == {
        name: vips[ns] for ns, (name, _) in GNS.items()
    }


def test_cn_fetches_by_name_from_a_server_on_each_gn(leased):
    for _, (name, _) in GNS.items():
        assert _curl("ntma-cn", f"http://{name}:8080/who.txt") == f"{name}\n"


def test_gns_reach_each_other_by_name_without_a_tunnel(leased):
    state, _, vips = leased
    since = log_size(state, "adapter")
    assert dig("ntma-gn", "gn2.ntm.example") == vips["ntma-gn2"]  # answered by the adapter
    assert _curl("ntma-gn", "http://gn2.ntm.example:8080/who.txt") == "gn2.ntm.example\n"
    assert _curl("ntma-gn3", "http://gn.ntm.example:8080/who.txt") == "gn.ntm.example\n"
    ups = [
        e
        for e in log_events(state.daemons["adapter"].log, since)
        if e.get("event") == "tunnel_up" and e.get("peer", "").startswith("gn")
    ]
    assert ups == [], ups


def _spoofs(
    gn2_mac: bytes, gn_mac: bytes, adapter_mac: bytes, gn_vip: str, cn_vip: str
) -> list[bytes]:
    """From gn2: UDP with gn's VIP; a DHCP REQUEST for gn's address; a RELEASE as gn."""
    router = ip_packed(ROUTER)
    as_gn = eth_header(adapter_mac, gn2_mac, ETH_P_IP) + build_udp(
        ip_packed(gn_vip), ip_packed(cn_vip), 40000, 9, b"spoofed"
    )
    take = dhcp.build_dhcp(
        message_type=dhcp.REQUEST,
        xid=0x5A5A0010,
        chaddr=gn2_mac,
        options=[(dhcp.OPT_REQUESTED_IP, ip_packed(gn_vip)), (dhcp.OPT_SERVER_ID, router)],
    )
    release = dhcp.build_dhcp(
        message_type=dhcp.RELEASE,
        xid=0x5A5A0011,
        chaddr=gn_mac,
        ciaddr=gn_vip,
        options=[(dhcp.OPT_SERVER_ID, router)],
    )
    bootp = [(take, bytes(4), b"\xff" * 4), (release, ip_packed(gn_vip), router)]
    dhcp_frames = [
        eth_header(b"\xff" * 6, gn2_mac, ETH_P_IP) + build_udp(src, dst, 68, 67, payload)
        for payload, src, dst in bootp
    ]
    return [as_gn, *dhcp_frames]


def test_a_gn_sending_as_another_is_dropped_and_counted(leased, tmp_path: Path):
    state, _, vips = leased
    since = log_size(state, "adapter")
    before = drops(state, "adapter", ("classify", "dhcp"))
    cn_vip = dig("ntma-gn", CN_NAME)
    adapter_mac = _mac("ntma-adapter", "gn0")
    frames = _spoofs(_mac("ntma-gn2"), _mac("ntma-gn"), adapter_mac, vips["ntma-gn"], cn_vip) * 10
    (tmp_path / "spoof.hex").write_text("\n".join(f.hex() for f in frames) + "\n")
    sent = blast("ntma-gn2", f"--iface eth0 --replay {tmp_path / 'spoof.hex'}")
    assert sent["sent"] == len(frames), sent

    def grown() -> dict[str, int] | None:
        now = drops(state, "adapter", ("classify", "dhcp"))
        keys = ("classify:foreign_ip", "dhcp:chaddr not the frame's source")
        diff = {k: now.get(k, 0) - before.get(k, 0) for k in keys}
        return diff if all(n >= 10 for n in diff.values()) else None

    wait_for(grown, 15, "the adapter to count the spoofs")
    events = log_events(state.daemons["adapter"].log, since)
    assert not [e for e in events if e.get("event") == "dhcp_released"]
    taken = [e for e in events if e.get("event") == "dhcp_lease" and e["ip"] == vips["ntma-gn"]]
    assert not [e for e in taken if e["device"] != "gn.ntm.example"], taken
    wait_for(
        lambda: [
            e
            for e in log_events(state.daemons["adapter"].log, since)
            if e.get("event") == "device_stats"
            and e["device"] == "gn2.ntm.example"
            and e["drops"].get("foreign_ip", 0) >= 10
        ],
        15,
        "gn2's device_stats with its drops",
    )
    # the real gn keeps its address, and cn still reaches it by name
    assert _v4("ntma-gn") == vips["ntma-gn"]
    assert _curl("ntma-cn", "http://gn.ntm.example:8080/who.txt") == "gn.ntm.example\n"


def test_every_gn_keeps_its_vip_across_an_adapter_restart(leased):
    state, tmp, vips = leased
    restarted = lab_restart(Path(state.run_dir), "adapter")
    assert restarted["pid"] != restarted["old_pid"]
    for ns in GNS:
        ns_run(ns, "ip", "addr", "flush", "dev", "eth0")
        result = _lease(ns, tmp)
        assert result.returncode == 0, (ns, result.stdout, result.stderr)
        wait_for(lambda ns=ns: _v4(ns), 10, f"{ns}'s address after the restart")
        assert _v4(ns) == vips[ns]
    assert _curl("ntma-cn", "http://gn2.ntm.example:8080/who.txt") == "gn2.ntm.example\n"


def test_a_devices_inbound_rule_holds_peers_to_what_it_names(leased, tmp_path: Path):
    """gn2 is given inbound = ["tcp/8080"]: cn still fetches from its web server, a UDP
    datagram from cn to gn2 is dropped and counted, and gn2's own UDP (DNS) still works."""
    state, _, vips = leased
    path = state.configs["adapter"]
    adapter = load_adapter_config(path)
    devices = tuple(
        replace(d, inbound=("tcp/8080",)) if d.fqdn == "gn2.ntm.example" else d
        for d in adapter.devices
    )
    write_config(path, replace(adapter, devices=devices), state.keys["adapter"].private_key_file)
    lab_restart(Path(state.run_dir), "adapter")
    ns_run("ntma-gn2", "ip", "addr", "flush", "dev", "eth0")
    assert _lease("ntma-gn2", tmp_path).returncode == 0
    assert wait_for(lambda: _v4("ntma-gn2"), 10, "gn2's address") == vips["ntma-gn2"]
    before = drops(state, "adapter", ("inject",)).get("inject:inbound_rule", 0)
    assert _curl("ntma-cn", "http://gn2.ntm.example:8080/who.txt") == "gn2.ntm.example\n"
    assert dig("ntma-gn2", CN_NAME)  # gn2's own UDP out and its answer back
    with pytest.raises(subprocess.TimeoutExpired):  # the listener never got its datagram
        nc_one_way("ntma-cn", "ntma-gn2", "gn2.ntm.example", 5353, tmp_path)
    wait_for(
        lambda: drops(state, "adapter", ("inject",)).get("inject:inbound_rule", 0) > before,
        15,
        "the adapter to count the inbound_rule drop",
    )


HOST_ZONE = "gns.ntm.example"
PRINTER_MAC = "02:00:00:00:0a:77"  # not in the adapter's table


def _allow_host_names(state: Any) -> None:
    """The operator's change: the DC admits names below gns.ntm.example for the adapter's
    key, and the adapter names devices not in its table by their DHCP host names there."""
    dc_path, adapter_path = state.configs["dc"], state.configs["adapter"]
    adapter_key = decode_key(state.keys["adapter"].public_key)
    dc = load_dc_config(dc_path)
    dc = replace(dc, subzones=(*dc.subzones, SubZone(HOST_ZONE, adapter_key, 8)))
    write_config(dc_path, dc, state.keys["dc"].private_key_file)
    adapter = replace(load_adapter_config(adapter_path), host_names=HOST_ZONE)
    write_config(adapter_path, adapter, state.keys["adapter"].private_key_file)


def _udhcpc_named(ns: str, host: str | None) -> subprocess.CompletedProcess[str]:
    cmd = ["udhcpc", "-n", "-q", "-i", "eth0", "-t", "5", "-T", "2"]
    cmd += ["-x", f"hostname:{host}"] if host else []
    return ns_run(ns, *cmd, check=False, timeout=40)


def test_a_device_not_in_the_table_is_named_by_its_dhcp_host_name(leased):
    """Last in this module: it restarts the DC, which forgets the tunnels it directed (so a
    later restart of an end is not re-directed to the other; see the closing note)."""
    state, _, _ = leased
    _allow_host_names(state)
    since = log_size(state, "cn")
    lab_restart(Path(state.run_dir), "dc")
    lab_restart(Path(state.run_dir), "adapter")
    wait_for(
        lambda: events_named(state.daemons["cn"].log, "registered", offset=since),
        40,
        "cn to register with the restarted DC",
    )
    ns_run("ntma-gn3", "ip", "link", "set", "eth0", "down")
    ns_run("ntma-gn3", "ip", "addr", "flush", "dev", "eth0")
    ns_run("ntma-gn3", "ip", "link", "set", "eth0", "address", PRINTER_MAC, "up")
    result = _udhcpc_named("ntma-gn3", "Printer")
    assert result.returncode == 0, (result.stdout, result.stderr)
    address = wait_for(lambda: _v4("ntma-gn3"), 10, "the printer's address")
    printer = f"printer.{HOST_ZONE}"
    assert dig("ntma-web", printer, f"@{DC_IP}") == address
    assert _curl("ntma-cn", f"http://{printer}:8080/who.txt") == "gn3.ntm.example\n"
    leases = json.loads((state.keys["adapter"].private_key_file.with_suffix(".devices.json"))
                        .read_text())
    assert leases == {PRINTER_MAC: printer}
    # After a restart the adapter remembers the name (no host name sent now): same VIP.
    lab_restart(Path(state.run_dir), "adapter")
    ns_run("ntma-gn3", "ip", "addr", "flush", "dev", "eth0")
    assert _udhcpc_named("ntma-gn3", None).returncode == 0
    assert wait_for(lambda: _v4("ntma-gn3"), 10, "the printer's address again") == address
