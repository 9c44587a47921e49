"""Protocol v2 handshake datagrams: HANDSHAKE_INIT, HANDSHAKE_RESP, COOKIE_REPLY (sans-IO).

Layouts are in docs/protocol.md section 4; this module builds and parses them around
proto/noise.py. The checks on an incoming init are split so a responder can do them
cheapest first (section 4.3): `parse_init` (sizes, header) and `mac1_ok` cost a hash,
`mac2_ok` a hash, and only `open_init` spends X25519.

Payload framing inside the Noise payload: `length u16`, then `length` bytes (for an init:
the 12-byte timestamp, then the body), then zero padding up to the sender's chosen size.
Non-zero padding is malformed, so what parses re-encodes to the same bytes.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from .buffer import CodecError
from .crypto import StaticKey
from .noise import (
    COOKIE_NONCE_LEN,
    KEY_LEN,
    MAC_LEN,
    MSG1_OVERHEAD,
    MSG2_OVERHEAD,
    TIMESTAMP_LEN,
    Initiator,
    InitReceived,
    Responder,
    mac,
    mac1_key,
    open_cookie,
    seal_cookie,
)

VERSION = 2
T_INIT, T_RESP, T_COOKIE, T_DATA, T_SIGNAL, T_RELAY_ENVELOPE = 1, 2, 3, 4, 5, 6
HEADER_LEN = 4
_HEADER = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_LEN = struct.Struct("!H")
INIT_MIN = HEADER_LEN + 4 + MSG1_OVERHEAD + 2 + TIMESTAMP_LEN + 2 * MAC_LEN  # 150
RESP_MIN = HEADER_LEN + 4 + 4 + MSG2_OVERHEAD + 2 + 2 * MAC_LEN  # 94
COOKIE_REPLY_LEN = HEADER_LEN + 4 + COOKIE_NONCE_LEN + 16 + 16  # 64
MAX_DATAGRAM = 1400  # a handshake never needs more; larger is malformed (bounds the work)
NO_MAC2 = bytes(MAC_LEN)


def header(msg_type: int) -> bytes:
    return _HEADER.pack(VERSION, msg_type, 0)


def check_header(datagram: bytes, msg_type: int) -> None:
    if len(datagram) < HEADER_LEN:
        raise CodecError("datagram shorter than the v2 header")
    version, got, reserved = _HEADER.unpack_from(datagram)
    if version != VERSION or got != msg_type or reserved != 0:
        raise CodecError(f"bad v2 header {datagram[:4].hex()}")


def frame_payload(content: bytes, size: int) -> bytes:
    """`length u16` ‖ content ‖ zero padding, `size` bytes in all (at least the minimum)."""
    framed = _LEN.pack(len(content)) + content
    return framed + bytes(max(0, size - len(framed)))


def unframe_payload(payload: bytes) -> bytes:
    if len(payload) < 2:
        raise CodecError("payload without its length")
    (length,) = _LEN.unpack_from(payload)
    content, padding = payload[2 : 2 + length], payload[2 + length :]
    if len(content) != length:
        raise CodecError("payload length beyond the payload")
    if padding.count(0) != len(padding):
        raise CodecError("non-zero padding")
    return content


# --- HANDSHAKE_INIT --------------------------------------------------------------------


@dataclass(frozen=True)
class InitFrame:
    """A HANDSHAKE_INIT that passed the size and header checks, not yet authenticated."""

    datagram: bytes
    sender_index: int

    @property
    def noise_message(self) -> bytes:
        return self.datagram[HEADER_LEN + 4 : -2 * MAC_LEN]

    @property
    def mac1(self) -> bytes:
        return self.datagram[-2 * MAC_LEN : -MAC_LEN]

    @property
    def mac2(self) -> bytes:
        return self.datagram[-MAC_LEN:]


def build_init(
    initiator: Initiator,
    *,
    responder_public: bytes,
    sender_index: int,
    timestamp: bytes,
    body: bytes,
    min_size: int,
    cookie: bytes | None = None,
) -> bytes:
    """The whole datagram, padded to at least `min_size` (the reply it asks for, so no
    reply is larger than its request)."""
    content = timestamp + body
    fixed = INIT_MIN - 2 - TIMESTAMP_LEN  # everything but the framed payload
    payload_size = max(2 + len(content), min_size - fixed)
    prefix = header(T_INIT) + _U32.pack(sender_index)
    msg = prefix + initiator.write_init(frame_payload(content, payload_size))
    msg += mac(mac1_key(responder_public), msg)
    return msg + (mac(cookie, msg) if cookie is not None else NO_MAC2)


def parse_init(datagram: bytes) -> InitFrame:
    check_header(datagram, T_INIT)
    if not INIT_MIN <= len(datagram) <= MAX_DATAGRAM:
        raise CodecError(f"handshake init of {len(datagram)} bytes")
    return InitFrame(datagram, _U32.unpack_from(datagram, HEADER_LEN)[0])


def mac1_ok(frame: InitFrame | RespFrame, key: bytes) -> bool:
    """Checked before any X25519. For an init the key is mac1_key(our static public key),
    computed once; for a response, mac1_key(the ephemeral of our init)."""
    expected = mac(key, frame.datagram[: -2 * MAC_LEN])
    return hmac.compare_digest(expected, frame.mac1)


def mac2_ok(frame: InitFrame, cookie: bytes) -> bool:
    return hmac.compare_digest(mac(cookie, frame.datagram[:-MAC_LEN]), frame.mac2)


@dataclass(frozen=True)
class OpenedInit:
    initiator_public: bytes
    ephemeral: bytes  # the init's, which keys the response's mac1
    timestamp: bytes
    body: bytes
    responder: Responder  # to write the response with


def open_init(frame: InitFrame, static: StaticKey) -> OpenedInit:
    """Two X25519; raises CodecError (NoiseError for authentication failures)."""
    responder = Responder(static)
    received: InitReceived = responder.read_init(frame.noise_message)
    content = unframe_payload(received.payload)
    if len(content) < TIMESTAMP_LEN:
        raise CodecError("init payload without a timestamp")
    return OpenedInit(
        received.initiator_public,
        frame.noise_message[:KEY_LEN],
        content[:TIMESTAMP_LEN],
        content[TIMESTAMP_LEN:],
        responder,
    )


# --- HANDSHAKE_RESP --------------------------------------------------------------------


@dataclass(frozen=True)
class RespFrame:
    datagram: bytes
    sender_index: int
    receiver_index: int

    @property
    def noise_message(self) -> bytes:
        return self.datagram[HEADER_LEN + 8 : -2 * MAC_LEN]

    @property
    def mac1(self) -> bytes:
        return self.datagram[-2 * MAC_LEN : -MAC_LEN]


def build_resp(
    opened: OpenedInit,
    ephemeral,
    *,
    sender_index: int,
    receiver_index: int,
    body: bytes,
):
    """The response datagram and this end's SessionKeys."""
    prefix = header(T_RESP) + _U32.pack(sender_index) + _U32.pack(receiver_index)
    noise_msg, keys = opened.responder.write_response(frame_payload(body, 0), ephemeral)
    msg = prefix + noise_msg
    msg += mac(mac1_key(opened.ephemeral), msg)  # keyed by the init's ephemeral (4.2)
    return msg + NO_MAC2, keys


def parse_resp(datagram: bytes) -> RespFrame:
    check_header(datagram, T_RESP)
    if not RESP_MIN <= len(datagram) <= MAX_DATAGRAM:
        raise CodecError(f"handshake response of {len(datagram)} bytes")
    if datagram[-MAC_LEN:] != NO_MAC2:
        raise CodecError("handshake response with a mac2")
    sender, receiver = struct.unpack_from("!II", datagram, HEADER_LEN)
    return RespFrame(datagram, sender, receiver)


def resp_mac1_key(initiator: Initiator) -> bytes:
    return mac1_key(initiator.ephemeral_public)


def open_resp(frame: RespFrame, initiator: Initiator):
    """The response body and the initiator's SessionKeys; raises CodecError."""
    payload, keys = initiator.read_response(frame.noise_message)
    return unframe_payload(payload), keys


# --- COOKIE_REPLY ----------------------------------------------------------------------


def build_cookie_reply(
    frame: InitFrame, *, responder_public: bytes, nonce: bytes, cookie: bytes
) -> bytes:
    sealed = seal_cookie(responder_public, nonce, cookie, frame.mac1)
    return header(T_COOKIE) + _U32.pack(frame.sender_index) + nonce + sealed


def parse_cookie_reply(
    datagram: bytes, *, responder_public: bytes, init_mac1: bytes
) -> tuple[int, bytes]:
    """(receiver_index, cookie) from a COOKIE_REPLY to our init with that mac1."""
    check_header(datagram, T_COOKIE)
    if len(datagram) != COOKIE_REPLY_LEN:
        raise CodecError(f"cookie reply of {len(datagram)} bytes")
    (receiver,) = _U32.unpack_from(datagram, HEADER_LEN)
    nonce = datagram[8 : 8 + COOKIE_NONCE_LEN]
    cookie = open_cookie(responder_public, nonce, datagram[8 + COOKIE_NONCE_LEN :], init_mac1)
    return receiver, cookie
