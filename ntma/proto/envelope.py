"""RELAY_ENVELOPE (v2, type 0x06): a handshake datagram carried node -> RS -> node.

    header (version 2, type 0x06, reserved 0) | dc_id [8] | tunnel_id u64 | handshake datagram

The RS forwards it between the two bound ends of (dc_id, tunnel_id) without reading the
handshake (docs/protocol.md 7.2, 9); only HANDSHAKE_INIT, HANDSHAKE_RESP and
COOKIE_REPLY ride in one. DATA and SIGNAL go to the RS as they are.
"""

from __future__ import annotations

import struct

from .buffer import CodecError
from .handshake import (
    HEADER_LEN,
    MAX_DATAGRAM,
    T_COOKIE,
    T_INIT,
    T_RELAY_ENVELOPE,
    T_RESP,
    check_header,
    header,
)

_REF = struct.Struct("!8sQ")
ENVELOPE_OVERHEAD = HEADER_LEN + _REF.size  # 20
CARRIED = frozenset((T_INIT, T_RESP, T_COOKIE))


def wrap(dc_id: bytes, tunnel_id: int, datagram: bytes) -> bytes:
    if len(dc_id) != 8 or not 0 < tunnel_id < 1 << 64:
        raise CodecError("bad tunnel reference for an envelope")
    return header(T_RELAY_ENVELOPE) + _REF.pack(dc_id, tunnel_id) + datagram


def unwrap(datagram: bytes) -> tuple[bytes, int, bytes]:
    """(dc_id, tunnel_id, the handshake datagram inside); CodecError if malformed."""
    check_header(datagram, T_RELAY_ENVELOPE)
    if len(datagram) < ENVELOPE_OVERHEAD + HEADER_LEN:
        raise CodecError("relay envelope too short")
    if len(datagram) > ENVELOPE_OVERHEAD + MAX_DATAGRAM:
        raise CodecError("relay envelope too long")
    dc_id, tunnel_id = _REF.unpack_from(datagram, HEADER_LEN)
    inner = datagram[ENVELOPE_OVERHEAD:]
    if tunnel_id == 0 or inner[0] != datagram[0] or inner[1] not in CARRIED:
        raise CodecError("relay envelope carries no handshake")
    return dc_id, tunnel_id, inner
