#!/usr/bin/env bash
# Capture ISC dhclient -6's DHCPv6 messages into the .hex files beside this script (root,
# Linux; iproute2, tcpdump, dhclient, dnsmasq, python3). Run it under the shared lock:
#
#     flock /tmp/ntma-netns.lock bash tests/vectors/dhcp6/capture.sh
#
# Two throw-away namespaces joined by a veth: `c` (MAC 02:00:5e:10:00:0b, the device) runs
# dhclient -6 with a script of ours (-sf) that records each call's environment and sets the
# address as Debian's dhclient-script does, nothing else (no resolv.conf); `s`
# (02:00:00:00:00:01, fd00:99::1/64) runs dnsmasq as a real DHCPv6 server handing out the one
# address fd00:99::23 for 120 s (dnsmasq's shortest lease) with DNS server fd00:99::1. tcpdump
# on s's end keeps one pcap per phase; each .hex file is the UDP payload (port 546 -> 547,
# or dnsmasq's 547 -> 546) of the first message of its type in its phase, 32 bytes a line.
# Phases: a SOLICIT with -cf /dev/null and no server; a session with Debian's default
# `request` line (SOLICIT, REQUEST, RENEW at T1, REBIND at T2 with dnsmasq stopped); CONFIRM
# from a restart with the lease kept (-x); RELEASE (-r); a SOLICIT asking for rapid commit;
# DECLINE (the script says DAD failed: exit 3); INFORMATION-REQUEST (-S). About three minutes.
# The namespaces and every process started here go when the script ends, however it ends.
set -euo pipefail

for tool in ip tcpdump dhclient dnsmasq python3; do
    command -v "$tool" >/dev/null || { echo "capture.sh needs $tool" >&2; exit 1; }
done
HERE=$(cd "$(dirname "$0")" && pwd)
S=ntmacap6-s-$$
C=ntmacap6-c-$$
MAC_S=02:00:00:00:00:01
MAC_C=02:00:5e:10:00:0b
IF_S=ntmacap6s
IF_C=ntmacap6c
WORK=$(mktemp -d)
TCPDUMP= DNSMASQ= DHCLIENT=

stop_pid() {  # stop_pid PID: TERM, then KILL if it lingers
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    stop_pid "$DHCLIENT"
    stop_pid "$DNSMASQ"
    stop_pid "$TCPDUMP"
    ip netns del "$C" 2>/dev/null || true
    ip netns del "$S" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$WORK/script" <<'SCRIPT'
#!/bin/sh
# dhclient -sf: record the call, set the address as Debian's dhclient-script does.
env | sort >"$WORK/env.$(date +%s%N).$reason"
echo "$reason" >>"$WORK/reasons"
case "$reason" in
    BOUND6|RENEW6|REBIND6)
        if [ -e "$WORK/decline" ] && [ "$reason" = BOUND6 ]; then exit 3; fi
        [ -z "$new_ip6_address" ] || ip -6 addr replace "$new_ip6_address" dev "$interface" \
            scope global valid_lft "$new_max_life" preferred_lft "$new_preferred_life" ;;
    EXPIRE6|RELEASE6|STOP6)
        [ -z "$old_ip6_address" ] || ip -6 addr del "$old_ip6_address" dev "$interface" ;;
esac
exit 0
SCRIPT
sed -i "s|\$WORK|$WORK|g" "$WORK/script"
chmod +x "$WORK/script"
# Debian's /etc/dhcp/dhclient.conf, the part of it that concerns DHCPv6.
echo 'request dhcp6.name-servers, dhcp6.domain-search, dhcp6.fqdn, dhcp6.sntp-servers;' \
    >"$WORK/debian.conf"
{ cat "$WORK/debian.conf"; echo 'send dhcp6.rapid-commit;'; } >"$WORK/rapid.conf"

ip netns add "$S"
ip netns add "$C"
ip -n "$S" link add "$IF_S" address "$MAC_S" type veth peer name "$IF_C" address "$MAC_C" netns "$C"
ip -n "$S" -6 addr add fd00:99::1/64 dev "$IF_S" nodad
ip -n "$S" link set "$IF_S" up
ip -n "$C" link set lo up
ip -n "$C" link set "$IF_C" up
for _ in $(seq 100); do  # dhclient binds the link-local address: wait for it out of DAD
    addr=$(ip -n "$C" -6 addr show dev "$IF_C" scope link)
    echo "$addr" | grep -q inet6 && ! echo "$addr" | grep -q tentative && break
    sleep 0.1
done

capture() {  # capture PHASE: start tcpdump on s's end into PHASE.pcap
    # --immediate-mode: without it a frame can wait in the kernel's ring for up to a second
    # and be lost when tcpdump is stopped right after a quick exchange (RELEASE, CONFIRM).
    ip netns exec "$S" tcpdump -i "$IF_S" -n -U --immediate-mode -w "$WORK/$1.pcap" \
        'udp port 546 or udp port 547' 2>"$WORK/$1.err" &  # a file per phase: no stale line
    TCPDUMP=$!
    for _ in $(seq 50); do grep -q listening "$WORK/$1.err" 2>/dev/null && break; sleep 0.1; done
    grep -q listening "$WORK/$1.err" || { cat "$WORK/$1.err" >&2; exit 1; }
}
end_capture() { sleep 1; stop_pid "$TCPDUMP"; TCPDUMP=; }
start_dnsmasq() {
    ip netns exec "$S" dnsmasq --conf-file=/dev/null --keep-in-foreground --port=0 \
        --user=root --interface="$IF_S" --bind-interfaces --log-dhcp \
        --log-facility="$WORK/dnsmasq.log" --pid-file="$WORK/dnsmasq.pid" \
        --dhcp-leasefile="$WORK/dnsmasq.leases" \
        --dhcp-range=fd00:99::23,fd00:99::23,64,120 \
        --dhcp-option=option6:dns-server,[fd00:99::1] &
    DNSMASQ=$!
    sleep 1
}
dhclient6() {  # dhclient6 LEASEFILE CONF ARGS...: dhclient -6 -d in c, in the background
    local leases=$1 conf=$2
    shift 2
    ip netns exec "$C" dhclient -6 -d -v -cf "$conf" -pf "$WORK/dhclient.pid" \
        -lf "$WORK/$leases" -sf "$WORK/script" "$@" "$IF_C" >>"$WORK/dhclient.log" 2>&1 &
    DHCLIENT=$!
}
wait_reason() {  # wait_reason REASON SECONDS: until the script was called for REASON
    for _ in $(seq $(($2 * 10))); do
        grep -qx "$1" "$WORK/reasons" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no $1 from dhclient within $2 s; its log:" >&2
    cat "$WORK/dhclient.log" >&2
    exit 1
}
wait_sent() {  # wait_sent PHASE TYPE SECONDS: until a message of TYPE is in PHASE.pcap
    for _ in $(seq $(($3 * 10))); do
        python3 - "$WORK/$1.pcap" "$2" <<'PY' && return 0
import sys
from pathlib import Path
data = Path(sys.argv[1]).read_bytes() if Path(sys.argv[1]).exists() else b""
pos, want = 24, int(sys.argv[2])
while pos + 16 <= len(data):
    incl = int.from_bytes(data[pos + 8 : pos + 12], "little")
    frame = data[pos + 16 : pos + 16 + incl]
    pos += 16 + incl
    if len(frame) > 62 and frame[12:14] == b"\x86\xdd" and frame[56:58] == b"\x02\x23":
        if frame[62] == want:
            sys.exit(0)
sys.exit(1)
PY
        sleep 0.1
    done
    echo "no DHCPv6 message type $2 in phase $1 within $3 s" >&2
    exit 1
}
clear_reasons() { : >"$WORK/reasons"; }

# 1. A bare SOLICIT: no configuration at all, nobody answers.
capture bare
dhclient6 bare.leases /dev/null -1
wait_sent bare 1 5
stop_pid "$DHCLIENT"; DHCLIENT=
end_capture

# 2. A session with Debian's request line: SOLICIT, REQUEST; RENEW at T1 (60 s); dnsmasq
#    stopped after the RENEW's REPLY, REBIND at T2; dnsmasq back, it answers the REBIND.
start_dnsmasq
capture session
clear_reasons
dhclient6 session.leases "$WORK/debian.conf"
wait_reason BOUND6 20
echo "bound; waiting for the RENEW at T1"
wait_reason RENEW6 90
stop_pid "$DNSMASQ"; DNSMASQ=
echo "renewed; dnsmasq stopped, waiting for the REBIND at T2"
wait_sent session 6 90
start_dnsmasq
wait_reason REBIND6 60
# 3. Stop without releasing (-x) and start again: CONFIRM of the kept lease.
ip netns exec "$C" dhclient -6 -x -pf "$WORK/dhclient.pid" "$IF_C" >>"$WORK/dhclient.log" 2>&1 || true
wait "$DHCLIENT" 2>/dev/null || true
DHCLIENT=
end_capture
capture confirm
clear_reasons
dhclient6 session.leases "$WORK/debian.conf"
wait_reason BOUND6 20
end_capture
# 4. Release (-r): the running dhclient is stopped and a RELEASE sent.
capture release
ip netns exec "$C" dhclient -6 -r -v -cf "$WORK/debian.conf" -pf "$WORK/dhclient.pid" \
    -lf "$WORK/session.leases" -sf "$WORK/script" "$IF_C" >>"$WORK/dhclient.log" 2>&1
wait "$DHCLIENT" 2>/dev/null || true
DHCLIENT=
end_capture
# 5. A SOLICIT asking for rapid commit (`send dhcp6.rapid-commit;`), then released again.
capture rapid
clear_reasons
dhclient6 rapid.leases "$WORK/rapid.conf"
wait_reason BOUND6 20
ip netns exec "$C" dhclient -6 -r -cf "$WORK/rapid.conf" -pf "$WORK/dhclient.pid" \
    -lf "$WORK/rapid.leases" -sf "$WORK/script" "$IF_C" >>"$WORK/dhclient.log" 2>&1
wait "$DHCLIENT" 2>/dev/null || true
DHCLIENT=
end_capture
# 6. DECLINE: the script reports DAD failed for the new address.
capture decline
touch "$WORK/decline"
dhclient6 decline.leases "$WORK/debian.conf"
wait_sent decline 9 30
sleep 1
stop_pid "$DHCLIENT"; DHCLIENT=
rm "$WORK/decline"
end_capture
# 7. Stateless: INFORMATION-REQUEST (-S).
capture inform
clear_reasons
dhclient6 inform.leases "$WORK/debian.conf" -S
wait_reason RENEW6 20  # not INFORM6: dhclient 4.4 calls the script so for a stateless REPLY
stop_pid "$DHCLIENT"; DHCLIENT=
end_capture

for phase in bare session confirm release rapid decline inform; do
    echo "== $phase"
    tcpdump -r "$WORK/$phase.pcap" -n -tt -e -v 2>/dev/null
done
echo "== the script's calls"; ls "$WORK" | grep '^env\.' || true
echo "== dhclient's log"; cat "$WORK/dhclient.log"
echo "== dnsmasq's log"; cat "$WORK/dnsmasq.log"
echo "== a BOUND6 environment"
cat "$(ls "$WORK"/env.*.BOUND6 | head -1)"

python3 - "$WORK" "$HERE" <<'PY'
import sys
from pathlib import Path

work, here = Path(sys.argv[1]), Path(sys.argv[2])


def messages(phase):
    """(type, source port, payload) of each DHCPv6 message in a phase's pcap, in order."""
    data = (work / f"{phase}.pcap").read_bytes()
    pos, out = 24, []
    while pos + 16 <= len(data):
        incl = int.from_bytes(data[pos + 8 : pos + 12], "little")
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        if len(frame) > 62 and frame[12:14] == b"\x86\xdd" and frame[20] == 17:
            sport = int.from_bytes(frame[54:56], "big")
            length = int.from_bytes(frame[58:60], "big")
            out.append((frame[62], sport, frame[62 : 54 + length]))
    return out


def save(name, phase, kind, sport=546):
    payload = next(p for t, s, p in messages(phase) if t == kind and s == sport)
    text = payload.hex()
    (here / f"{name}.hex").write_text(
        "\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + "\n"
    )
    print(f"{name}.hex: {len(payload)} bytes")


save("dhclient_solicit_bare", "bare", 1)
save("dhclient_solicit", "session", 1)
save("dhclient_request", "session", 3)
save("dhclient_renew", "session", 5)
save("dhclient_rebind", "session", 6)
save("dhclient_confirm", "confirm", 4)
save("dhclient_release", "release", 8)
save("dhclient_decline", "decline", 9)
save("dhclient_information_request", "inform", 11)
save("dhclient_solicit_rapid_commit", "rapid", 1)
save("dnsmasq_advertise", "session", 2, sport=547)
save("dnsmasq_reply_request", "session", 7, sport=547)
PY
