"""Puts a DC under load so it answers with COOKIE_REPLY (docs/protocol.md 4.5), for the
Wireshark lab test: run in a lab namespace that holds the source addresses.

    python3 -m tests.wireshark_blast --dc 198.51.100.10:7400 --dc-key B64 \
        --sources 198.51.100.200,198.51.100.201,... --copies 30

Each source sends `copies` of one HANDSHAKE_INIT with a valid mac1 (it knows the DC's
public key) from a key the DC never admitted, round-robin. A DC admits 20 inits a second
per source and max(500, keys / 60) in all: 30 sources of 30 copies drain the global budget,
and the rest are answered with cookies. The first source then sends one init with mac2 made
from its cookie. Prints JSON: the cookies received per sender_index."""

from __future__ import annotations

import argparse
import json
import select
import socket
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntma.proto.bodies_v2 import Register
from ntma.proto.crypto import StaticKey, decode_key
from ntma.proto.handshake import build_init, parse_cookie_reply
from ntma.proto.messages_v2 import REPLY_MAX, MsgType, encode
from ntma.proto.noise import Initiator, tai64n

READ_FOR_S = 2.0  # how long replies are collected after the last send


def _init(dc_public: bytes, index: int, cookie: bytes | None = None) -> bytes:
    me = StaticKey.generate()
    body = encode(Register(txid=index, boot_id=index, fqdn="blast.ntm.example"))
    return build_init(
        Initiator(me, dc_public, X25519PrivateKey.generate()),
        responder_public=dc_public,
        sender_index=index,
        timestamp=tai64n(time.time()),
        body=body,
        min_size=REPLY_MAX[MsgType.REGISTER],
        cookie=cookie,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dc", required=True)
    parser.add_argument("--dc-key", required=True)
    parser.add_argument("--sources", required=True)
    parser.add_argument("--copies", type=int, default=30)
    args = parser.parse_args()
    host, port = args.dc.rsplit(":", 1)
    dc = (host, int(port))
    dc_public = decode_key(args.dc_key)
    socks, inits = [], []
    for i, source in enumerate(args.sources.split(",")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.setblocking(False)
        socks.append(sock)
        inits.append(_init(dc_public, 0x5EED0000 + i))
    for _ in range(args.copies):
        for sock, init in zip(socks, inits, strict=True):
            sock.sendto(init, dc)
    cookies: dict[str, int] = {}
    sent_mac2 = False
    deadline = time.monotonic() + READ_FOR_S
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(socks, [], [], left)
        for sock in ready:
            reply = sock.recv(2048)
            i = socks.index(sock)
            index, cookie = parse_cookie_reply(
                reply, responder_public=dc_public, init_mac1=inits[i][-32:-16]
            )
            cookies[hex(index)] = cookies.get(hex(index), 0) + 1
            if not sent_mac2:  # as a node would: the next init carries mac2
                sock.sendto(_init(dc_public, 0x5EEDFFFF, cookie), dc)
                sent_mac2 = True
    print(json.dumps({"cookies": cookies, "sent_mac2": sent_mac2}))


if __name__ == "__main__":
    main()
