"""The blob rules (services/blobs.py) on the memory stores, without HTTP: what is hard to make
happen through a socket on cue (a stalled sender, a failing byte store, racing pieces)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailslot.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    InputError,
    NotFoundError,
    QuotaExceeded,
    TooLarge,
)
from mailslot.server.blobs import MemoryBlobStore
from mailslot.server.config import ServerConfig, load_config, write_config
from mailslot.server.services.blobs import Blobs, Piece, parse_blob_id
from mailslot.server.storage import MemoryStorage
from mailslot.server.storage.base import DeviceRow

ALICE = DeviceRow(b"a" * 16, "alice", b"key")
BOB = DeviceRow(b"b" * 16, "bob", b"key")
NOW = 1_000_000


class Harness:
    def __init__(self, tmp_path: Path, **settings: int) -> None:
        self.store = MemoryStorage()
        self.bytes = MemoryBlobStore()
        config = ServerConfig(data_dir=tmp_path, **settings)  # type: ignore[arg-type]
        self.blobs = Blobs(self.store, self.bytes, config, idle_timeout_s=0.2)
        self.digests: list[bytes] = []

    def accept(self, digest: bytes) -> None:
        self.digests.append(digest)

    async def put(self, blob_id: bytes, offset: int, *parts: bytes) -> int:
        piece = Piece(blob_id, offset, sum(map(len, parts)))
        blob = await self.blobs.upload(ALICE, piece, stream(*parts), self.accept, NOW)
        return blob.offset

    async def content(self, blob_id: bytes) -> bytes:
        blob = await self.blobs.readable(blob_id, NOW)
        return b"".join([c async for c in self.blobs.read(blob, 0, blob.size)])


async def stream(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(pause)
        yield part


def reject(digest: bytes) -> None:
    raise AuthenticationError("bad request signature")


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path, blob_piece_bytes=8, max_blob_bytes=100, account_blob_quota_bytes=150)


async def test_upload_hashes_each_piece_for_the_signature(h: Harness) -> None:
    blob = await h.blobs.create(ALICE, 12, NOW)
    assert await h.put(blob.blob_id, 0, b"abc", b"defgh") == 8
    assert await h.put(blob.blob_id, 8, b"ijkl") == 12
    assert h.digests == [hashlib.sha256(b"abcdefgh").digest(), hashlib.sha256(b"ijkl").digest()]
    assert await h.content(blob.blob_id) == b"abcdefghijkl"


async def test_create_checks_size_and_quota(h: Harness) -> None:
    with pytest.raises(TooLarge):
        await h.blobs.create(ALICE, 101, NOW)
    with pytest.raises(InputError):
        await h.blobs.create(ALICE, -1, NOW)
    await h.blobs.create(ALICE, 100, NOW)
    with pytest.raises(QuotaExceeded):
        await h.blobs.create(ALICE, 51, NOW)
    assert await h.store.blob_usage("alice", NOW) == 100


async def test_create_rolls_back_when_the_bytes_cannot_be_stored(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(blob_id: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(h.bytes, "create", broken)
    with pytest.raises(OSError):
        await h.blobs.create(ALICE, 100, NOW)
    assert await h.store.blob_usage("alice", NOW) == 0


async def test_a_rejected_signature_discards_the_piece(h: Harness) -> None:
    blob = await h.blobs.create(ALICE, 12, NOW)
    await h.put(blob.blob_id, 0, b"abcd")
    with pytest.raises(AuthenticationError):
        await h.blobs.upload(ALICE, Piece(blob.blob_id, 4, 4), stream(b"EVIL"), reject, NOW)
    assert await h.bytes.size(blob.blob_id) == 4
    assert (await h.blobs.status(ALICE, blob.blob_id, NOW)).offset == 4


async def test_a_stalled_piece_is_dropped(h: Harness) -> None:
    blob = await h.blobs.create(ALICE, 8, NOW)
    slow = stream(b"ab", b"cd", pause=1.0)
    with pytest.raises(InputError, match="stalled"):
        await h.blobs.upload(ALICE, Piece(blob.blob_id, 0), slow, h.accept, NOW)
    assert await h.bytes.size(blob.blob_id) == 0
    assert await h.put(blob.blob_id, 0, b"abcdefgh") == 8  # the lock was released


async def test_excess_bytes_never_reach_the_store(h: Harness) -> None:
    blob = await h.blobs.create(ALICE, 6, NOW)
    seen: list[bytes] = []

    async def spy(blob_id: bytes, offset: int, chunks: AsyncIterator[bytes]) -> int:
        async for chunk in chunks:
            seen.append(chunk)
        return offset

    h.bytes.append = spy  # type: ignore[method-assign]
    with pytest.raises(TooLarge):
        await h.blobs.upload(ALICE, Piece(blob.blob_id, 0), stream(b"abcd", b"efg"), h.accept, NOW)
    assert seen == [b"abcd"]


async def test_pieces_of_one_blob_wait_for_each_other(h: Harness) -> None:
    blob = await h.blobs.create(ALICE, 8, NOW)
    first = h.blobs.upload(ALICE, Piece(blob.blob_id, 0), stream(b"aaaa", b"aaaa", pause=0.05), h.accept, NOW)
    second = h.blobs.upload(ALICE, Piece(blob.blob_id, 0), stream(b"bbbbbbbb"), h.accept, NOW)
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert results[0].offset == 8  # type: ignore[union-attr]
    assert isinstance(results[1], ConflictError) and results[1].details == {"offset": 8}
    assert await h.content(blob.blob_id) == b"a" * 8
    assert not h.blobs._locks._locks  # no lock is kept once nobody needs it


async def test_owner_only(h: Harness) -> None:
    blob = await h.blobs.create(ALICE, 8, NOW)
    with pytest.raises(ForbiddenError):
        await h.blobs.status(BOB, blob.blob_id, NOW)
    with pytest.raises(ForbiddenError):
        await h.blobs.upload(BOB, Piece(blob.blob_id, 0), stream(b"x"), h.accept, NOW)
    assert h.digests == []


async def test_expire_deletes_metadata_then_bytes(h: Harness, tmp_path: Path) -> None:
    blob = await h.blobs.create(ALICE, 4, NOW)
    await h.put(blob.blob_id, 0, b"abcd")
    assert await h.blobs.expire(blob.expires_at_ms - 1) == 0
    assert await h.blobs.expire(blob.expires_at_ms) == 1
    assert await h.bytes.size(blob.blob_id) is None
    with pytest.raises(NotFoundError):
        await h.blobs.readable(blob.blob_id, NOW)


def test_parse_blob_id() -> None:
    assert parse_blob_id("ab" * 32) == b"\xab" * 32
    for bad in ["AB" * 32, "ab" * 31, "ab" * 33, " " + "ab" * 32, "zz" * 32, "ab " * 21 + "a"]:
        with pytest.raises(InputError):
            parse_blob_id(bad)


# --- configuration ----------------------------------------------------------------------------
def test_blob_settings_default_and_round_trip(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path)
    assert (config.max_blob_bytes, config.blob_piece_bytes) == (100 * 1024 * 1024, 8 * 1024 * 1024)
    assert (config.account_blob_quota_bytes, config.blob_ttl_s) == (1024**3, 30 * 24 * 3600)
    assert config.blob_store_url == (tmp_path / "blobs").as_uri()
    write_config(config.with_overrides(blob_url="memory://", blob_piece_bytes=1024))
    loaded = load_config(tmp_path)
    assert (loaded.blob_store_url, loaded.blob_piece_bytes) == ("memory://", 1024)


@pytest.mark.parametrize(
    "settings",
    [
        {"blob_url": "s3://bucket"},
        {"blob_url": "file:relative"},
        {"max_blob_bytes": 0},
        {"blob_piece_bytes": 0},
    ],
)
def test_bad_blob_settings(tmp_path: Path, settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(data_dir=tmp_path, **settings)  # type: ignore[arg-type]
