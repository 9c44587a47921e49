#!/usr/bin/env bash
# Installs everything ntma, its lab and its tests need on a fresh Debian machine (as root):
# the system tools the lab and the real clients use, then the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# tshark (tests/test_wireshark*.py read captures with contrib/wireshark/ntma.lua): answer
# wireshark-common's question about setuid dumpcap up front, so the install never asks.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    iproute2 nftables dnsmasq-base isc-dhcp-client udhcpc dnsutils iperf3 tcpdump ethtool \
    conntrack tinc wireguard-go wireguard-tools openvpn tshark \
    netcat-openbsd curl iputils-ping procps python3 python3-pip python3-venv >/dev/null
# Debian's own python3 refuses system-wide pip installs (PEP 668); a Python of one's own
# (pyenv, as on the project's machines) does not. Try the plain way first.
python3 -m pip install -q -e '.[test,bench]' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages -e '.[test,bench]'
