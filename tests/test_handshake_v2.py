"""Protocol v2 handshake datagrams (proto/handshake.py): layouts, checks, sizes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ntma.proto.buffer import CodecError
from ntma.proto.crypto import StaticKey
from ntma.proto.handshake import (
    COOKIE_REPLY_LEN,
    INIT_MIN,
    RESP_MIN,
    build_cookie_reply,
    build_init,
    build_resp,
    frame_payload,
    mac1_ok,
    mac2_ok,
    open_init,
    open_resp,
    parse_cookie_reply,
    parse_init,
    parse_resp,
    resp_mac1_key,
    unframe_payload,
)
from ntma.proto.noise import Initiator, mac1_key, tai64n

NODE, DC = StaticKey.generate(), StaticKey.generate()
STAMP = tai64n(1_700_000_000.5)


def _init(body: bytes = b"register", min_size: int = 0, cookie: bytes | None = None):
    initiator = Initiator(NODE, DC.public, X25519PrivateKey.generate())
    datagram = build_init(
        initiator,
        responder_public=DC.public,
        sender_index=0x01020304,
        timestamp=STAMP,
        body=body,
        min_size=min_size,
        cookie=cookie,
    )
    return initiator, datagram


def test_init_layout_and_round_trip():
    initiator, datagram = _init()
    assert datagram[:4] == bytes([2, 1, 0, 0]) and datagram[4:8] == bytes([1, 2, 3, 4])
    assert len(datagram) == INIT_MIN + len(b"register") == 158
    frame = parse_init(datagram)
    assert frame.sender_index == 0x01020304
    assert mac1_ok(frame, mac1_key(DC.public))
    assert not mac1_ok(frame, mac1_key(NODE.public))
    assert frame.mac2 == bytes(16)
    opened = open_init(frame, DC)
    assert (opened.initiator_public, opened.timestamp, opened.body) == (
        NODE.public,
        STAMP,
        b"register",
    )

    resp, dc_keys = build_resp(
        opened, X25519PrivateKey.generate(), sender_index=7, receiver_index=0x01020304, body=b"ok"
    )
    assert len(resp) == RESP_MIN + 2
    rframe = parse_resp(resp)
    assert (rframe.sender_index, rframe.receiver_index) == (7, 0x01020304)
    assert mac1_ok(rframe, resp_mac1_key(initiator))
    assert not mac1_ok(rframe, mac1_key(NODE.public))  # not keyed by the initiator's key
    body, node_keys = open_resp(rframe, initiator)
    assert body == b"ok" and node_keys.send == dc_keys.receive


def test_init_is_padded_to_the_reply_it_asks_for():
    _, datagram = _init(b"x", min_size=300)
    assert len(datagram) == 300
    assert open_init(parse_init(datagram), DC).body == b"x"
    _, datagram = _init(b"y" * 200, min_size=100)
    assert len(datagram) == INIT_MIN + 200


def test_mac2_with_a_cookie():
    cookie = b"c" * 16
    _, datagram = _init(cookie=cookie)
    frame = parse_init(datagram)
    assert mac1_ok(frame, mac1_key(DC.public)) and mac2_ok(frame, cookie)
    assert not mac2_ok(frame, b"d" * 16)


def test_cookie_reply_is_64_bytes_and_opens_only_for_that_init():
    _, datagram = _init()
    frame = parse_init(datagram)
    reply = build_cookie_reply(frame, responder_public=DC.public, nonce=b"n" * 24, cookie=b"k" * 16)
    assert len(reply) == COOKIE_REPLY_LEN == 64 < len(datagram)
    index, cookie = parse_cookie_reply(reply, responder_public=DC.public, init_mac1=frame.mac1)
    assert (index, cookie) == (0x01020304, b"k" * 16)
    with pytest.raises(CodecError):
        parse_cookie_reply(reply, responder_public=DC.public, init_mac1=b"z" * 16)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:10],
        lambda d: bytes([1]) + d[1:],  # version 1
        lambda d: d[:2] + b"\x00\x01" + d[4:],  # reserved bits
        lambda d: d[:1] + b"\x02" + d[2:],  # a response's type
        lambda d: d + bytes(2000),  # over the size bound
    ],
)
def test_malformed_inits_are_codec_errors(mutate):
    _, datagram = _init()
    with pytest.raises(CodecError):
        parse_init(mutate(datagram))


def test_payload_framing_rejects_what_it_could_not_write_again():
    assert unframe_payload(frame_payload(b"abc", 10)) == b"abc"
    for bad in (b"", b"\x00", b"\x00\x05abc", b"\x00\x01a\x00\x01"):
        with pytest.raises(CodecError):
            unframe_payload(bad)


def test_a_tampered_init_fails_authentication_not_something_else():
    _, datagram = _init()
    bad = bytearray(datagram)
    bad[60] ^= 0x80
    frame = parse_init(bytes(bad))
    assert not mac1_ok(frame, mac1_key(DC.public))
    with pytest.raises(CodecError):
        open_init(frame, DC)
