"""A stranger on the Internet segment talking to the lab's Relay Server (run inside ntma-web
by tests/test_e2e_relay_abuse.py: `python3 -m tests.rs_stranger < spec.json`).

The spec (JSON): `key` (the stranger's private key, base64), `rs_public` (hex), `before`
(datagrams sent first, hex), `binds` (grants, hex, each sent as a RELAY_BIND in the
stranger's own RS session), `replays` (captured datagrams, hex, resent from a second port)
and `after` (datagrams sent last from the session's endpoint). It prints JSON: the status
of every RELAY_BOUND, in order, and the endpoints it used."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from ntma.proto.bodies_v2 import RelayBind, RsHello
from ntma.proto.crypto import StaticKey
from ntma.proto.handshake import T_SIGNAL
from ntma.proto.initiate import Indexes, Initiations
from ntma.proto.messages_v2 import REPLY_MAX, BodyKind, MsgType, decode, encode
from ntma.proto.session import Keypair, parse_transport

RS = ("198.51.100.60", 7500)
HOST = "198.51.100.20"
PORT, OTHER_PORT = 47000, 47001


def _socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, port))
    sock.settimeout(3.0)
    return sock


def main() -> None:
    spec = json.loads(sys.stdin.read())
    main_sock, other_sock = _socket(PORT), _socket(OTHER_PORT)
    for datagram in spec["before"]:
        main_sock.sendto(bytes.fromhex(datagram), RS)
    inits = Initiations(StaticKey.from_base64(spec["key"]), Indexes(os.urandom))
    rs_public = bytes.fromhex(spec["rs_public"])
    body = encode(RsHello(1))
    pending = inits.start(rs_public, body, REPLY_MAX[MsgType.RS_HELLO], 0.0, time.time())
    main_sock.sendto(pending.datagram, RS)
    response, _ = main_sock.recvfrom(2048)
    done = inits.on_response(response)
    assert done is not None, "the RS did not answer RS_HELLO"
    _, remote, _, keys = done
    keypair = Keypair(keys.send, keys.receive, pending.sender_index, remote, 0.0, True)
    statuses, sent = [], []
    for txid, grant in enumerate(spec["binds"], start=1):
        datagram = keypair.seal(T_SIGNAL, encode(RelayBind(txid, bytes.fromhex(grant))))
        sent.append(datagram)
        main_sock.sendto(datagram, RS)
        reply, _ = main_sock.recvfrom(2048)
        _, _, counter = parse_transport(reply)
        statuses.append(int(decode(keypair.open(reply, counter), where=BodyKind.SESSION).status))
    # Replays: our own init and binds, and captured ones, from another port; our binds
    # again from the session's own endpoint (old counters).
    for datagram in [pending.datagram, *sent, *map(bytes.fromhex, spec["replays"])]:
        other_sock.sendto(datagram, RS)
    for datagram in sent:
        main_sock.sendto(datagram, RS)
    for datagram in spec["after"]:
        main_sock.sendto(bytes.fromhex(datagram), RS)
    print(json.dumps({"statuses": statuses, "endpoint": f"{HOST}:{PORT}"}))


if __name__ == "__main__":
    main()
