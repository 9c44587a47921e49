#!/usr/bin/env bash
# Capture the Linux kernel's own Neighbor Discovery frames into the .hex files beside this
# script (root, Linux; iproute2, tcpdump, ping). Run it under the shared lock:
#
#     flock /tmp/ntma-netns.lock bash tests/vectors/ndp/capture.sh
#
# Two throw-away namespaces joined by a veth: the kernel of `b` (MAC 02:00:5e:10:00:0b, the
# GN) with the namespace defaults, the kernel of `a` (02:00:00:00:00:01) answering for
# fd00:99::a. tcpdump runs on a's end from before the link comes up; each frame kept is the
# first that matches its filter, written whole (Ethernet header on), 32 bytes a line.
# The namespaces go when the script ends, however it ends.
set -euo pipefail

for tool in ip tcpdump ping sysctl; do
    command -v "$tool" >/dev/null || { echo "capture.sh needs $tool" >&2; exit 1; }
done
HERE=$(cd "$(dirname "$0")" && pwd)
A=ntmacap-a-$$
B=ntmacap-b-$$
MAC_A=02:00:00:00:00:01
MAC_B=02:00:5e:10:00:0b
WORK=$(mktemp -d)
TCPDUMP=

cleanup() {
    if [ -n "$TCPDUMP" ]; then
        kill "$TCPDUMP" 2>/dev/null || true
        wait "$TCPDUMP" 2>/dev/null || true
    fi
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add ntmacap0 address "$MAC_A" type veth peer name ntmacap1 address "$MAC_B" netns "$B"
echo "b's defaults: $(ip netns exec "$B" sysctl -n net.ipv6.conf.ntmacap1.forwarding \
    net.ipv6.conf.ntmacap1.accept_ra net.ipv6.conf.ntmacap1.autoconf \
    net.ipv6.conf.ntmacap1.accept_dad | tr '\n' ' ')(forwarding accept_ra autoconf accept_dad)"

ip -n "$A" link set ntmacap0 up  # no carrier yet: b's end is down
ip netns exec "$A" tcpdump -i ntmacap0 -n -U -w "$WORK/nd.pcap" icmp6 2>"$WORK/tcpdump.err" &
TCPDUMP=$!
for _ in $(seq 50); do grep -q listening "$WORK/tcpdump.err" && break; sleep 0.1; done
grep -q listening "$WORK/tcpdump.err" || { cat "$WORK/tcpdump.err" >&2; exit 1; }

ip -n "$B" link set ntmacap1 up
for _ in $(seq 100); do  # b's link-local address out of DAD
    ip -n "$B" -6 addr show dev ntmacap1 scope link | grep -q 'inet6' &&
        ! ip -n "$B" -6 addr show dev ntmacap1 scope link | grep -q tentative && break
    sleep 0.1
done
sleep 2  # the Router Solicitation follows DAD

ip -n "$A" -6 addr add fd00:99::a/64 dev ntmacap0 nodad
ip -n "$B" -6 addr add fd00:99::b/64 dev ntmacap1 nodad
ip netns exec "$B" ping -6 -n -c 1 -W 2 fd00:99::a >/dev/null  # b's NS, a's NA
ip netns exec "$B" ping -6 -n -c 1 -W 2 fd00:99::99 >/dev/null || true  # nobody answers
sleep 0.5
kill "$TCPDUMP"
wait "$TCPDUMP" 2>/dev/null || true
TCPDUMP=

echo "captured (a's end):"
tcpdump -r "$WORK/nd.pcap" -n -tt -e 2>/dev/null

ICMP6='ip6[6] == 58'  # ICMPv6 right after the fixed header (not MLD, which has hop-by-hop)
save() {  # save NAME FILTER: the first frame matching FILTER as NAME.hex
    tcpdump -r "$WORK/nd.pcap" -c 1 -xx "$2" 2>/dev/null | grep -E '^\s+0x' |
        sed -E 's/^\s+0x[0-9a-f]+:\s+//' | tr -d ' \n' | fold -w 64 >"$WORK/$1.hex"
    [ -s "$WORK/$1.hex" ] || { echo "no frame for $1 ($2)" >&2; exit 1; }
    echo >>"$WORK/$1.hex"
    mv "$WORK/$1.hex" "$HERE/$1.hex"
    echo "$1.hex: $(($(tr -d '\n' <"$HERE/$1.hex" | wc -c) / 2)) bytes"
}
save linux_rs "ether src $MAC_B and $ICMP6 and ip6[40] == 133"
save linux_ns_dad "ether src $MAC_B and $ICMP6 and ip6[40] == 135 and src host ::"
save linux_ns_resolve "ether src $MAC_B and $ICMP6 and ip6[40] == 135 and dst host ff02::1:ff00:99"
save linux_na "ether src $MAC_A and $ICMP6 and ip6[40] == 136 and dst host fd00:99::b"
