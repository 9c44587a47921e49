"""Outer packet framing: version, type, and the sealed or data payload (sans-IO).

Signalling (node<->DC and node<->node), 48-byte header, authenticated as AAD:
    version u8 | type u8 | reserved u16 | sender static public key [32] | nonce [12]
    then AES-GCM(body) with its 16-byte tag.
Data, 16-byte header, authenticated as AAD:
    version u8 | type u8 (0x30) | reserved u16 | tunnel id u32 | counter u64
    then AES-GCM(inner IP packet) with its 16-byte tag.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .buffer import CodecError
from .crypto import SignalBox
from .messages import Message, MsgType, decode_body, encode_body, message_type

VERSION = 1
SIG_HEADER = struct.Struct("!BBH32s12s")
DATA_HEADER = struct.Struct("!BBHIQ")
TAG_LEN = 16
DATA_OVERHEAD = DATA_HEADER.size + TAG_LEN
_DATA = int(MsgType.DATA)


class UnknownPeer(CodecError):
    """A well-formed signalling packet from a static key we have no box for."""


def is_data(datagram: bytes) -> bool:
    """Cheap demultiplexing for the receive path; full checks happen later."""
    return len(datagram) >= 2 and datagram[1] == _DATA


def check_version(datagram: bytes) -> None:
    if len(datagram) < 2:
        raise CodecError("datagram shorter than the common header")
    if datagram[0] != VERSION:
        raise CodecError(f"unsupported protocol version {datagram[0]}")


def seal_message(msg: Message, box: SignalBox, sender_public: bytes, nonce: bytes) -> bytes:
    header = SIG_HEADER.pack(VERSION, message_type(msg), 0, sender_public, nonce)
    return header + box.seal(nonce, encode_body(msg), header)


def peek_sender(datagram: bytes) -> bytes:
    """The static key a signalling packet claims to come from (not yet verified)."""
    check_version(datagram)
    if len(datagram) < SIG_HEADER.size + TAG_LEN:
        raise CodecError("signalling packet too short")
    return datagram[4:36]


def open_message(
    datagram: bytes, box_for: Callable[[bytes], SignalBox | None]
) -> tuple[bytes, Message]:
    """Verify and decode a signalling packet; returns (sender public key, message)."""
    sender = peek_sender(datagram)
    _, msg_type, _, _, nonce = SIG_HEADER.unpack_from(datagram)
    if msg_type == _DATA:
        raise CodecError("data packet where signalling was expected")
    box = box_for(sender)
    if box is None:
        raise UnknownPeer("signalling from an unknown static key")
    header = datagram[: SIG_HEADER.size]
    body = box.open(nonce, datagram[SIG_HEADER.size :], header)
    return sender, decode_body(msg_type, body)


ENVELOPE_HEADER = struct.Struct("!BBHI")
_ENVELOPE = int(MsgType.RELAY_ENVELOPE)


def wrap_envelope(tunnel_id: int, inner: bytes) -> bytes:
    """A sealed signalling packet addressed through the relay for tunnel_id."""
    return ENVELOPE_HEADER.pack(VERSION, _ENVELOPE, 0, tunnel_id) + inner


def is_envelope(datagram: bytes) -> bool:
    return len(datagram) >= 2 and datagram[1] == _ENVELOPE


def unwrap_envelope(datagram: bytes) -> tuple[int, bytes]:
    """(tunnel id, inner packet) of a relay envelope."""
    check_version(datagram)
    if len(datagram) < ENVELOPE_HEADER.size + 2 or datagram[1] != _ENVELOPE:
        raise CodecError("not a relay envelope")
    return ENVELOPE_HEADER.unpack_from(datagram)[3], datagram[ENVELOPE_HEADER.size :]


def relayed_tunnel_id(datagram: bytes) -> int:
    """The tunnel id a relay forwards by: data and envelopes both carry it at offset 4."""
    check_version(datagram)
    if len(datagram) < 8 or datagram[1] not in (_DATA, _ENVELOPE):
        raise CodecError("not a relayable packet")
    return int.from_bytes(datagram[4:8], "big")


def pack_data_header(tunnel_id: int, counter: int) -> bytes:
    return DATA_HEADER.pack(VERSION, _DATA, 0, tunnel_id, counter)


def unpack_data_header(datagram: bytes) -> tuple[int, int]:
    """(tunnel id, counter) of a data packet."""
    check_version(datagram)
    if len(datagram) < DATA_OVERHEAD:
        raise CodecError("data packet too short")
    _, msg_type, _, tunnel_id, counter = DATA_HEADER.unpack_from(datagram)
    if msg_type != _DATA:
        raise CodecError("not a data packet")
    return tunnel_id, counter
