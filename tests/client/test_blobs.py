"""The upload bookkeeping on its own: pieces, sealing from a file, and seeking to any offset.

The resumable upload trusts one fact: the ciphertext is a pure function of key and plaintext,
so the bytes before any committed offset (and their hash) can be recomputed locally. These
tests pin that down without a network; the end-to-end resume runs in ``test_attachments``.
"""

from __future__ import annotations

import hashlib
import io
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.client.blobs import _Upload, pieces, seal_source
from mailslot.errors import InputError, ServerError
from mailslot.protocol import chunked, wire

KEY = bytes(range(32))


@settings(max_examples=100, deadline=None)
@given(blocks=st.lists(st.binary(max_size=50), max_size=20), size=st.integers(1, 64))
def test_pieces_regroup_into_fixed_sizes(blocks: list[bytes], size: int) -> None:
    out = list(pieces(iter(blocks), size))
    assert b"".join(out) == b"".join(blocks)
    assert all(len(p) == size for p in out[:-1]) and all(0 < len(p) <= size for p in out)


def test_seal_source_matches_seal_blob_and_notices_a_changed_file() -> None:
    data = random.Random(1).randbytes(3 * chunked.CHUNK_SIZE + 5)
    sealed = b"".join(seal_source(io.BytesIO(data), len(data), KEY))
    assert sealed == b"".join(chunked.seal_blob(KEY, [data]))
    with pytest.raises(InputError, match="changed"):
        b"".join(seal_source(io.BytesIO(data), len(data) - 1, KEY))
    with pytest.raises(InputError, match="changed"):
        b"".join(seal_source(io.BytesIO(data), len(data) + 1, KEY))


def _upload(data: bytes, piece: int) -> tuple[_Upload, bytes]:
    blob = b"".join(chunked.seal_blob(KEY, [data]))
    info = wire.BlobInfo(blob_id="ab" * 32, size=len(blob), offset=0, expires_at=0)
    transport: Any = None  # seek and next_piece never touch the network
    return _Upload(transport, info, io.BytesIO(data), len(data), KEY, piece_size=piece), blob


@settings(max_examples=60, deadline=None)
@given(offsets=st.lists(st.floats(0, 1), min_size=1, max_size=6), piece=st.integers(1000, 300_000))
def test_seeking_anywhere_forward_or_back_keeps_bytes_and_hash_exact(
    offsets: list[float], piece: int
) -> None:
    data = random.Random(len(offsets)).randbytes(2 * chunked.CHUNK_SIZE + 999)
    upload, blob = _upload(data, piece)
    for fraction in offsets:
        target = int(fraction * len(blob))
        upload.seek(target)
        assert upload.offset == target
        assert upload.hasher.digest() == hashlib.sha256(blob[:target]).digest()
        if target < len(blob):
            nxt = upload.next_piece()
            assert blob[target : target + len(nxt)] == nxt
    with pytest.raises(ServerError):
        upload.seek(len(blob) + 1)
