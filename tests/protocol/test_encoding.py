"""Property tests of the canonical encoding: every field round-trips, every misuse is refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import DecodeError
from mailslot.protocol.encoding import Reader, Writer, decode

# A schema is a list of (kind, value) fields; the same kinds read the encoding back.
_FIELD = st.one_of(
    st.tuples(st.just("u8"), st.integers(0, 2**8 - 1)),
    st.tuples(st.just("u16"), st.integers(0, 2**16 - 1)),
    st.tuples(st.just("u32"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("u64"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("fixed"), st.binary(max_size=40)),
    st.tuples(st.just("var"), st.binary(max_size=80)),
    st.tuples(st.just("text"), st.text(max_size=40)),
    st.tuples(st.just("items"), st.lists(st.text(max_size=8), max_size=5)),
)
FIELDS = st.lists(_FIELD, max_size=8)


def _write(fields: list[tuple[str, Any]]) -> bytes:
    w = Writer()
    for kind, value in fields:
        if kind == "fixed":
            w.fixed(value, len(value))
        elif kind == "items":
            w.items(value, Writer.text)
        else:
            getattr(w, kind)(value)
    return w.to_bytes()


def _reader_for(fields: list[tuple[str, Any]]) -> Any:
    """A ``read`` function for ``decode`` that reads the fields' kinds back."""

    def read(r: Reader) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for kind, value in fields:
            if kind == "fixed":
                out.append((kind, r.fixed(len(value))))
            elif kind == "items":
                out.append((kind, r.items(Reader.text, max_count=5)))
            else:
                out.append((kind, getattr(r, kind)()))
        return out

    return read


@given(FIELDS)
def test_fields_round_trip(fields: list[tuple[str, Any]]) -> None:
    assert decode(_write(fields), _reader_for(fields)) == fields


@given(FIELDS.filter(lambda f: len(_write(f)) > 0), st.data())
def test_truncation_is_decode_error(fields: list[tuple[str, Any]], data: st.DataObject) -> None:
    encoded = _write(fields)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(DecodeError):
        decode(encoded[:cut], _reader_for(fields))


@given(FIELDS, st.binary(min_size=1, max_size=16))
def test_trailing_bytes_are_decode_error(fields: list[tuple[str, Any]], extra: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(_write(fields) + extra, _reader_for(fields))


@settings(max_examples=300)
@given(FIELDS, st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_decode_error(fields: list[tuple[str, Any]], data: bytes) -> None:
    try:
        value = decode(data, _reader_for(fields))
    except DecodeError:
        return
    # Whatever decodes is canonical: it encodes back to exactly the input.
    assert _write(value) == data


@given(st.text(max_size=40))
def test_text_is_utf8_in_a_var(value: str) -> None:
    assert Writer().text(value).to_bytes() == Writer().var(value.encode()).to_bytes()


@given(st.binary(max_size=64))
def test_var_has_a_u32_big_endian_length(value: bytes) -> None:
    assert Writer().var(value).to_bytes() == len(value).to_bytes(4, "big") + value


def test_integers_are_big_endian_fixed_width() -> None:
    encoded = Writer().u8(1).u16(0x0203).u32(0x04050607).u64(0x08090A0B0C0D0E0F).to_bytes()
    assert encoded == bytes(range(1, 16))


@given(st.binary(max_size=8), st.integers(0, 16))
def test_fixed_refuses_wrong_size_when_writing(value: bytes, size: int) -> None:
    if len(value) == size:
        assert Writer().fixed(value, size).to_bytes() == value
    else:
        with pytest.raises(ValueError, match="expected"):
            Writer().fixed(value, size)


@given(st.binary(max_size=64), st.integers(0, 63))
def test_var_over_max_size_is_decode_error(value: bytes, max_size: int) -> None:
    encoded = Writer().var(value).to_bytes()
    if len(value) <= max_size:
        assert decode(encoded, lambda r: r.var(max_size)) == value
    else:
        with pytest.raises(DecodeError):
            decode(encoded, lambda r: r.var(max_size))


@given(st.lists(st.integers(0, 255), max_size=10), st.integers(0, 9))
def test_items_over_max_count_is_decode_error(values: list[int], max_count: int) -> None:
    encoded = Writer().items(values, Writer.u8).to_bytes()
    if len(values) <= max_count:
        assert decode(encoded, lambda r: r.items(Reader.u8, max_count)) == values
    else:
        with pytest.raises(DecodeError):
            decode(encoded, lambda r: r.items(Reader.u8, max_count))


def test_huge_length_prefix_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"\xff\xff\xff\xff" + b"x" * 10, lambda r: r.var())
    with pytest.raises(DecodeError):
        decode(b"\xff\xff\xff\xff", lambda r: r.items(Reader.u8, max_count=2**32))


@pytest.mark.parametrize("raw", [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"a\x80"])
def test_invalid_utf8_text_is_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(Writer().var(raw).to_bytes(), Reader.text)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_expect_label(label: bytes, found: bytes) -> None:
    encoded = Writer().var(found).to_bytes()
    if found == label:
        decode(encoded, lambda r: r.expect_label(label))
    else:
        with pytest.raises(DecodeError):
            decode(encoded, lambda r: r.expect_label(label))
