"""Safety codes: 60 digits, the same on both sides, different for any other key or handle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import InputError
from mailslot.protocol import crypto
from mailslot.protocol.safety import (
    CODE_DIGITS,
    code_half,
    codes_match,
    fingerprint,
    format_code,
    parse_code,
    safety_code,
)

SLOW = settings(max_examples=15, deadline=None)
keys = st.binary(min_size=32, max_size=32)
handles = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,31}", fullmatch=True)


@SLOW
@given(handles, keys, handles, keys)
def test_code_is_symmetric_and_60_digits(ha: str, ka: bytes, hb: str, kb: bytes) -> None:
    code = safety_code(ha, ka, hb, kb)
    assert code == safety_code(hb, kb, ha, ka)
    assert len(code) == CODE_DIGITS and code.isdigit()


@SLOW
@given(keys, keys, keys)
def test_code_changes_when_either_key_changes(ka: bytes, kb: bytes, other: bytes) -> None:
    code = safety_code("alice", ka, "bob", kb)
    if other != ka:
        assert safety_code("alice", other, "bob", kb) != code
    if other != kb:
        assert safety_code("alice", ka, "bob", other) != code


def test_code_binds_the_handle() -> None:
    key = b"k" * 32
    assert code_half("alice", key) != code_half("alicf", key)


def test_known_answer_pins_the_format() -> None:
    """Label, salt, iteration count and digit extraction are part of the format."""
    data = b"\x00\x00\x00\x1cmailslot/v1/safety-code-half\x00\x00\x00\x05alice" + bytes(32)
    digest = crypto.slow_hash(data, salt=b"mailslot/v1/safety-code", iterations=50_000)
    expected = "".join(f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))
    assert code_half("alice", bytes(32)) == expected


def test_format_and_parse() -> None:
    code = safety_code("alice", b"a" * 32, "bob", b"b" * 32)
    shown = format_code(code)
    assert len(shown.split(" ")) == 12 and all(len(g) == 5 for g in shown.split(" "))
    assert parse_code(shown) == code
    assert parse_code(f"  {shown[:20]}\n{shown[20:]} ") == code
    assert codes_match(code, shown)
    assert not codes_match(code, "0" * 60)
    for bad in ("", "1" * 59, "1" * 61, "x" * 60, "١" * 60):
        with pytest.raises(InputError):
            parse_code(bad)


def test_fingerprint_is_short_and_key_specific() -> None:
    fp = fingerprint(b"a" * 32)
    assert len(fp) == 19 and fp.count(" ") == 3
    assert fp != fingerprint(b"b" * 32)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InputError):
        code_half("alice", b"short")
    with pytest.raises(InputError):
        code_half("Not A Handle", b"k" * 32)
    with pytest.raises(InputError):
        crypto.slow_hash(b"x", salt=b"s", iterations=0)
