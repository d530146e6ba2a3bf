"""Chunked blob encryption: the seal/open pair round-trips, and every tampering is detected.

"Detected" means ``ChunkOpener`` raises ``VerificationError`` from ``update`` or ``finish``:
a caller never sees ``finish()`` return for a blob that is not exactly the one sealed. Chunk
sizes near the minimum keep multi-chunk blobs small, so hypothesis can try many of them.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import InputError, VerificationError
from mailslot.protocol import chunked

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PROPS = settings(max_examples=120, deadline=None)
HEADER = len(chunked.header_bytes(chunked.CHUNK_SIZE))
SEALED_CHUNK = chunked.CHUNK_SIZE + chunked.TAG


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length), in order."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def seal(
    plain: bytes, chunk_size: int = chunked.CHUNK_SIZE, cuts: list[int] | None = None, key: bytes = KEY
) -> bytes:
    return b"".join(chunked.seal_blob(key, split(plain, cuts or []), chunk_size))


def open_blob(
    blob: bytes, blob_size: int | None = None, cuts: list[int] | None = None, key: bytes = KEY
) -> bytes:
    """Everything the opener releases, ``finish()`` included; raises if any check fails."""
    opener = chunked.ChunkOpener(key, len(blob) if blob_size is None else blob_size)
    out = bytearray()
    for piece in split(blob, cuts or []):
        for plain in opener.update(piece):
            out += plain
    out += opener.finish()
    return bytes(out)


def assert_refused(blob: bytes, blob_size: int | None = None, key: bytes = KEY) -> None:
    with pytest.raises(VerificationError):
        open_blob(blob, blob_size, key=key)


chunk_sizes = st.integers(chunked.MIN_CHUNK_SIZE, 3 * chunked.MIN_CHUNK_SIZE)


@st.composite
def sealed_blobs(draw: st.DrawFn, min_chunks: int = 1) -> tuple[bytes, int, bytes]:
    """(plaintext, chunk size, blob) with at least ``min_chunks`` chunks."""
    chunk_size = draw(chunk_sizes)
    low = (min_chunks - 1) * chunk_size + (1 if min_chunks > 1 else 0)
    size = draw(st.integers(low, low + 3 * chunk_size))
    plain = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    return plain, chunk_size, seal(plain, chunk_size)


# --- the round trip ------------------------------------------------------------------------------


@PROPS
@given(
    small=st.binary(max_size=64),
    size=st.integers(0, 8 * chunked.MIN_CHUNK_SIZE),
    seed=st.integers(0, 2**32),
    chunk_size=chunk_sizes,
    seal_cuts=st.lists(st.integers(0, 2**20), max_size=8),
    open_cuts=st.lists(st.integers(0, 2**20), max_size=8),
)
def test_any_plaintext_in_any_pieces_round_trips(
    small: bytes, size: int, seed: int, chunk_size: int, seal_cuts: list[int], open_cuts: list[int]
) -> None:
    plain = small + random.Random(seed).randbytes(size)  # hypothesis shrinks ``small``; size spans chunks
    blob = seal(plain, chunk_size, seal_cuts)
    assert len(blob) == chunked.ciphertext_size(len(plain), chunk_size)
    assert blob == seal(plain, chunk_size)  # deterministic: how the piece boundaries fell is irrelevant
    assert open_blob(blob, cuts=open_cuts) == plain


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        chunked.CHUNK_SIZE - 1,
        chunked.CHUNK_SIZE,
        chunked.CHUNK_SIZE + 1,
        3 * chunked.CHUNK_SIZE,
        3 * chunked.CHUNK_SIZE - 1,
        3 * chunked.CHUNK_SIZE + 1,
        5 * chunked.CHUNK_SIZE + 12345,
    ],
)
def test_boundary_sizes_with_the_default_chunk_size(size: int) -> None:
    plain = bytes(i % 251 for i in range(size))
    blob = seal(plain)
    chunks = chunked.chunk_count(size, chunked.CHUNK_SIZE)
    assert chunks == max(1, -(-size // chunked.CHUNK_SIZE))
    assert len(blob) == HEADER + size + chunks * chunked.TAG == chunked.ciphertext_size(size)
    assert open_blob(blob) == plain
    assert open_blob(blob, cuts=[1, HEADER, HEADER + 1, HEADER + SEALED_CHUNK, len(blob) - 1]) == plain


def test_an_empty_file_is_one_empty_final_chunk() -> None:
    blob = seal(b"")
    assert len(blob) == HEADER + chunked.TAG
    assert open_blob(blob) == b""


def test_the_key_is_a_fresh_value_per_blob_so_same_input_same_output() -> None:
    assert seal(b"same") == seal(b"same")
    assert seal(b"same") != seal(b"same", key=OTHER_KEY)


def test_plaintext_is_released_only_as_chunks_verify() -> None:
    plain = bytes(3 * chunked.MIN_CHUNK_SIZE)
    blob = seal(plain, chunked.MIN_CHUNK_SIZE)
    opener = chunked.ChunkOpener(KEY, len(blob))
    released = b"".join(opener.update(blob[: HEADER + chunked.MIN_CHUNK_SIZE + chunked.TAG]))
    assert len(released) == chunked.MIN_CHUNK_SIZE  # the first chunk, now known not to be last
    released += b"".join(opener.update(blob[HEADER + chunked.MIN_CHUNK_SIZE + chunked.TAG :]))
    assert released + opener.finish() == plain


# --- misuse --------------------------------------------------------------------------------------


def test_sealer_and_opener_refuse_use_after_finish() -> None:
    sealer = chunked.ChunkSealer(KEY)
    sealer.finish()
    with pytest.raises(InputError):
        list(sealer.update(b"x"))
    with pytest.raises(InputError):
        sealer.finish()
    blob = seal(b"abc")
    opener = chunked.ChunkOpener(KEY, len(blob))
    list(opener.update(blob))
    opener.finish()
    with pytest.raises(VerificationError):
        opener.finish()
    with pytest.raises(VerificationError):
        list(opener.update(b""))


@pytest.mark.parametrize("chunk_size", [0, chunked.MIN_CHUNK_SIZE - 1, chunked.MAX_CHUNK_SIZE + 1])
def test_chunk_size_limits(chunk_size: int) -> None:
    with pytest.raises(InputError):
        chunked.ChunkSealer(KEY, chunk_size)


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(InputError):
        chunked.ChunkSealer(b"short")
    with pytest.raises(VerificationError):
        chunked.ChunkOpener(b"short", 100)


# --- tampering -----------------------------------------------------------------------------------


@PROPS
@given(blob=sealed_blobs(), data=st.data())
def test_truncation_at_any_byte_is_detected(blob: tuple[bytes, int, bytes], data: st.DataObject) -> None:
    _, _, sealed = blob
    cut = data.draw(st.integers(0, len(sealed) - 1))
    assert_refused(sealed[:cut], blob_size=len(sealed))  # the reference says how long it is
    assert_refused(sealed[:cut], blob_size=cut)  # even if it lied about the size too


@PROPS
@given(blob=sealed_blobs(min_chunks=2))
def test_truncation_at_a_chunk_boundary_is_detected(blob: tuple[bytes, int, bytes]) -> None:
    _, chunk_size, sealed = blob
    full_chunks = (len(sealed) - HEADER) // (chunk_size + chunked.TAG)
    for kept in range(full_chunks):
        cut = HEADER + kept * (chunk_size + chunked.TAG)
        assert_refused(sealed[:cut], blob_size=cut)  # no chunk carries the last flag


@PROPS
@given(blob=sealed_blobs(min_chunks=2), data=st.data())
def test_reordered_chunk_pair_is_detected(blob: tuple[bytes, int, bytes], data: st.DataObject) -> None:
    _, chunk_size, sealed = blob
    step = chunk_size + chunked.TAG
    body = sealed[HEADER:]
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    i, j = data.draw(st.lists(st.integers(0, len(chunks) - 1), min_size=2, max_size=2, unique=True))
    chunks[i], chunks[j] = chunks[j], chunks[i]
    assert_refused(sealed[:HEADER] + b"".join(chunks))


@PROPS
@given(blob=sealed_blobs(min_chunks=3), data=st.data())
def test_a_dropped_middle_chunk_is_detected(blob: tuple[bytes, int, bytes], data: st.DataObject) -> None:
    _, chunk_size, sealed = blob
    step = chunk_size + chunked.TAG
    index = data.draw(st.integers(0, (len(sealed) - HEADER) // step - 2))
    start = HEADER + index * step
    assert_refused(sealed[:start] + sealed[start + step :])


@PROPS
@given(blob=sealed_blobs(), data=st.data())
def test_a_flipped_bit_anywhere_is_detected(blob: tuple[bytes, int, bytes], data: st.DataObject) -> None:
    _, _, sealed = blob
    at = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(sealed)
    tampered[at] ^= 1 << bit
    assert_refused(bytes(tampered))


@PROPS
@given(blob=sealed_blobs())
def test_a_wrong_key_is_detected(blob: tuple[bytes, int, bytes]) -> None:
    assert_refused(blob[2], key=OTHER_KEY)


@PROPS
@given(blob=sealed_blobs(), extra=st.binary(min_size=1, max_size=64))
def test_extra_bytes_appended_are_detected(blob: tuple[bytes, int, bytes], extra: bytes) -> None:
    _, _, sealed = blob
    assert_refused(sealed + extra, blob_size=len(sealed))  # more than the reference says: at once
    assert_refused(sealed + extra)  # a reference that counts them: nothing may follow the last chunk


@PROPS
@given(blob=sealed_blobs(), delta=st.integers(-64, 64).filter(bool))
def test_a_wrong_declared_size_is_detected(blob: tuple[bytes, int, bytes], delta: int) -> None:
    _, _, sealed = blob
    assert_refused(sealed, blob_size=max(0, len(sealed) + delta))
