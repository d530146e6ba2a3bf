"""Attachment references and rich bodies: canonical round trips and every validity rule."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import DecodeError, InputError
from mailslot.protocol import chunked, labels
from mailslot.protocol.attachment import (
    FLAG_LONG_TEXT,
    MAX_ATTACHMENTS,
    MAX_THUMBNAIL,
    AttachmentRef,
    RichBody,
)
from mailslot.protocol.encoding import Writer, decode
from mailslot.protocol.message import KIND_RICH, Content

PROPS = settings(max_examples=100, deadline=None)


def ref(size: int = 10, **changes: object) -> AttachmentRef:
    base = AttachmentRef(
        blob_id=b"\x01" * 32,
        key=b"\x02" * 32,
        sha256=b"\x03" * 32,
        blob_size=chunked.ciphertext_size(size),
        size=size,
        name="photo.jpg",
        media_type="image/jpeg",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def encode_ref(value: AttachmentRef) -> bytes:
    w = Writer()
    value.write(w)
    return w.to_bytes()


@st.composite
def refs(draw: st.DrawFn) -> AttachmentRef:
    size = draw(st.integers(0, 2**40))
    chunk_size = draw(st.sampled_from([chunked.MIN_CHUNK_SIZE, chunked.CHUNK_SIZE, chunked.MAX_CHUNK_SIZE]))
    return AttachmentRef(
        blob_id=draw(st.binary(min_size=32, max_size=32)),
        key=draw(st.binary(min_size=32, max_size=32)),
        sha256=draw(st.binary(min_size=32, max_size=32)),
        blob_size=chunked.ciphertext_size(size, chunk_size),
        size=size,
        name=draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=40)),
        media_type=draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=30)),
        thumbnail=draw(st.binary(max_size=64)),
        flags=draw(st.sampled_from([0, FLAG_LONG_TEXT])),
    )


@PROPS
@given(value=refs())
def test_reference_round_trips(value: AttachmentRef) -> None:
    data = encode_ref(value)
    assert decode(data, AttachmentRef.read) == value
    assert encode_ref(decode(data, AttachmentRef.read)) == data


@PROPS
@given(
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=100),
    attachments=st.lists(refs(), max_size=4).filter(lambda r: sum(a.is_long_text for a in r) <= 1),
)
def test_rich_body_round_trips(text: str, attachments: list[AttachmentRef]) -> None:
    body = RichBody(text, tuple(attachments))
    data = body.to_bytes()
    assert RichBody.from_bytes(data) == body
    assert RichBody.from_bytes(data).to_bytes() == data


@PROPS
@given(value=refs(), cut=st.integers(1, 40))
def test_truncated_or_extended_encodings_are_refused(value: AttachmentRef, cut: int) -> None:
    data = RichBody("x", (value,)).to_bytes()
    with pytest.raises(DecodeError):
        RichBody.from_bytes(data[:-cut])
    with pytest.raises(DecodeError):
        RichBody.from_bytes(data + b"\x00")


@pytest.mark.parametrize(
    "changes",
    [
        {"blob_id": b"\x01" * 31},
        {"key": b"\x02" * 33},
        {"sha256": b""},
        {"flags": 0x02},
        {"name": "x" * 256},
        {"name": "é" * 128},  # 256 bytes of UTF-8
        {"media_type": "m" * 128},
        {"thumbnail": b"t" * (MAX_THUMBNAIL + 1)},
        {"blob_size": chunked.ciphertext_size(10) + 10**6},  # no chunk size gives this size
        {"blob_size": 10},  # smaller than the plaintext
    ],
)
def test_invalid_references_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InputError):
        ref(**changes)


def test_an_invalid_reference_in_bytes_is_a_decode_error() -> None:
    good = ref()
    data = bytearray(encode_ref(good))
    data[-1] = 0x80  # unknown flag
    with pytest.raises(DecodeError, match="invalid attachment reference"):
        decode(bytes(data), AttachmentRef.read)


def test_limits_of_a_rich_body() -> None:
    RichBody("", tuple(ref() for _ in range(MAX_ATTACHMENTS)))
    with pytest.raises(InputError, match="at most"):
        RichBody("", tuple(ref() for _ in range(MAX_ATTACHMENTS + 1)))
    with pytest.raises(InputError, match="long-text"):
        RichBody("", (ref(flags=FLAG_LONG_TEXT), ref(flags=FLAG_LONG_TEXT)))
    assert ref(flags=FLAG_LONG_TEXT).is_long_text and not ref().is_long_text


def test_rich_body_starts_with_its_label() -> None:
    data = RichBody("hi", (ref(),)).to_bytes()
    assert data.startswith(Writer().var(labels.RICH_BODY).to_bytes())
    wrong = Writer().var(labels.CONTENT).to_bytes() + data[len(Writer().var(labels.RICH_BODY).to_bytes()) :]
    with pytest.raises(DecodeError):
        RichBody.from_bytes(wrong)


def test_rich_content_carries_text_and_references() -> None:
    body = RichBody("see attached", (ref(), ref(size=5000, flags=FLAG_LONG_TEXT, name="m.txt")))
    content = Content("alice", b"\x04" * 16, ("alice", "bob"), b"\x05" * 16, 1, KIND_RICH, body.to_bytes())
    assert content.text == "see attached"
    assert content.rich == body
    again = decode(content.to_bytes(), Content.read)
    assert again == content
    with pytest.raises(InputError):
        Content("alice", b"\x04" * 16, ("alice", "bob"), b"\x05" * 16, 1, KIND_RICH, b"not a rich body")
