"""The lab benchmark's UDP round-trip probe on loopback (no root): one dual-stack echo
server answers an IPv4 and an IPv6 client; a port with no server counts every datagram as
lost; the IPv6 counter read from /proc/net/snmp6's text."""

from __future__ import annotations

import socket
import threading

import pytest

from ntma.bench import udp_rtt
from ntma.bench.lab.session import snmp6_counter


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def echo_port():
    """`serve`'s socket, echoing in a thread until the test is over."""
    sock = udp_rtt.echo_socket(0)
    sock.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            sock.sendto(data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], sock.family
    finally:
        done.set()
        thread.join(2)
        sock.close()


def test_one_dual_stack_echo_server_answers_ipv4_and_ipv6(echo_port):
    port, family = echo_port
    hosts = ["127.0.0.1"]
    if family == socket.AF_INET6 and _has_ipv6_loopback():
        hosts.append("::1")
    for host in hosts:
        result = udp_rtt.client(host, port, 20, size=64)
        assert result["received"] == 20 and result["lost"] == 0, result
        assert result["family"] == ("ipv6" if ":" in host else "ipv4")
        assert 0 < result["min_us"] <= result["median_us"] <= result["max_us"]


def test_a_port_with_no_server_loses_every_datagram_and_gives_up(monkeypatch):
    monkeypatch.setattr(udp_rtt, "TIMEOUT_S", 0.05)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never read: no echo, no ICMP either
        result = udp_rtt.client("127.0.0.1", port, 10, give_up=3)
    assert result["received"] == 0 and result["lost"] == 10
    assert result["sent"] == 3 and result["aborted"] is True
    assert result["median_us"] is None


def test_snmp6_counter_reads_one_name_value_line():
    text = "Ip6InReceives                   \t12\nUdp6InDatagrams                 \t345\n"
    assert snmp6_counter(text, "Udp6InDatagrams") == 345
    assert snmp6_counter(text, "Udp6OutDatagrams") == 0
    assert snmp6_counter("", "Udp6InDatagrams") == 0
