"""proto/buffer.py: the Reader and Writer primitives every codec builds on (the DHCP codec,
proto/fields_v2.py). The v2 message codecs are tested in tests/test_messages_v2.py, the v2
datagrams in tests/test_handshake_v2.py and tests/test_session_v2.py; the v1 message and
packet codecs this file used to test are gone with protocol v1."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntma.proto.buffer import CodecError, Reader, Writer


def test_writer_reader_primitives_by_hand():
    w = Writer().u8(0xAB).u16(0x0102).u32(0x03040506).u64(0x0708090A0B0C0D0E)
    w.blob(b"").blob(b"xy").raw(b"\xff")
    expected = bytes.fromhex("ab 0102 03040506 0708090a0b0c0d0e 0000 0002 7879 ff")
    assert w.getvalue() == expected
    r = Reader(memoryview(expected))
    assert r.u8() == 0xAB
    assert r.u16() == 0x0102
    assert r.u32() == 0x03040506
    assert r.u64() == 0x0708090A0B0C0D0E
    assert r.blob() == b""
    assert r.blob() == b"xy"
    assert r.raw(1) == b"\xff"
    r.expect_end()
    assert r.rest() == b""
    with pytest.raises(CodecError, match="truncated"):
        r.u8()


def test_reader_rest_and_raw():
    r = Reader(b"\x01\x02\x03\x04")
    assert r.raw(0) == b""
    assert r.raw(1) == b"\x01"
    with pytest.raises(CodecError):
        r.raw(4)
    assert r.rest() == b"\x02\x03\x04"  # the failed read consumed nothing; rest() takes it
    r.expect_end()


def test_blob_limits():
    assert Reader(bytes.fromhex("0003 616263")).blob(3) == b"abc"
    with pytest.raises(CodecError):
        Reader(bytes.fromhex("0004 61626364")).blob(3)
    with pytest.raises(CodecError):
        Writer().blob(b"abcd", 3)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("u8"), st.integers(0, 0xFF)),
            st.tuples(st.just("u16"), st.integers(0, 0xFFFF)),
            st.tuples(st.just("u32"), st.integers(0, 0xFFFFFFFF)),
            st.tuples(st.just("u64"), st.integers(0, (1 << 64) - 1)),
            st.tuples(st.just("blob"), st.binary(max_size=300)),
        ),
        max_size=12,
    )
)
def test_round_trip_and_every_truncation(items):
    w = Writer()
    for op, value in items:
        getattr(w, op)(value)
    data = w.getvalue()
    r = Reader(data)
    assert [getattr(r, op)() for op, _ in items] == [value for _, value in items]
    r.expect_end()
    if data:
        r = Reader(data[:-1])
        with pytest.raises(CodecError):
            for op, _ in items:
                getattr(r, op)()
            r.expect_end()
