"""Byte buffer with small push_*/pull_* helpers (aioquic style), sans-IO.

Every decoding failure raises CodecError and nothing else, so callers can drop
and count malformed input with one except clause.
"""

from __future__ import annotations

import ipaddress
import struct

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = tuple[str, int]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class CodecError(ValueError):
    """Malformed, truncated or unsupported wire data."""


class Reader:
    """Reads big-endian fields from bytes; raises CodecError past the end."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = bytes(data)
        self._pos = 0

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise CodecError(f"truncated: need {n} bytes at offset {self._pos}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return _U16.unpack(self._take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self._take(8))[0]

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def blob(self, max_len: int = 0xFFFF) -> bytes:
        """A u16-length-prefixed byte string of at most max_len bytes."""
        size = self.u16()
        if size > max_len:
            raise CodecError(f"field of {size} bytes is over its limit of {max_len}")
        return self._take(size)

    def text(self, max_len: int = 0xFFFF) -> str:
        """UTF-8 text of at most max_len bytes (the limit is on the encoded length)."""
        try:
            return self.blob(max_len).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError("text field is not UTF-8") from exc

    def endpoint(self) -> Endpoint:
        family = self.u8()
        if family == 4:
            ip = ipaddress.IPv4Address(self._take(4))
        elif family == 6:
            ip = ipaddress.IPv6Address(self._take(16))
        else:
            raise CodecError(f"unknown address family {family}")
        return (str(ip), self.u16())

    def ipv4(self) -> str:
        return str(ipaddress.IPv4Address(self._take(4)))

    def endpoints(self, max_count: int = 0xFF) -> list[Endpoint]:
        count = self.u8()
        if count > max_count:
            raise CodecError(f"{count} endpoints, more than the limit of {max_count}")
        return [self.endpoint() for _ in range(count)]

    def rest(self) -> bytes:
        return self._take(len(self._data) - self._pos)

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def expect_end(self) -> None:
        if self._pos != len(self._data):
            raise CodecError(f"{len(self._data) - self._pos} trailing bytes")


class Writer:
    """Appends big-endian fields; the counterpart of Reader."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(bytes((value,)))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(_U16.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    def raw(self, value: bytes) -> Writer:
        self._parts.append(value)
        return self

    def blob(self, value: bytes, max_len: int = 0xFFFF) -> Writer:
        if len(value) > min(max_len, 0xFFFF):
            raise CodecError(f"field of {len(value)} bytes is over its limit of {max_len}")
        return self.u16(len(value)).raw(value)

    def text(self, value: str, max_len: int = 0xFFFF) -> Writer:
        return self.blob(value.encode("utf-8"), max_len)

    def endpoint(self, endpoint: Endpoint) -> Writer:
        ip = ipaddress.ip_address(endpoint[0])
        self.u8(ip.version).raw(ip.packed)
        return self.u16(endpoint[1])

    def ipv4(self, address: str) -> Writer:
        return self.raw(ipaddress.IPv4Address(address).packed)

    def endpoints(self, endpoints: list[Endpoint], max_count: int = 0xFF) -> Writer:
        if len(endpoints) > min(max_count, 0xFF):
            raise CodecError(f"more than {min(max_count, 0xFF)} endpoints")
        self.u8(len(endpoints))
        for endpoint in endpoints:
            self.endpoint(endpoint)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)
