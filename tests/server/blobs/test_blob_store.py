"""The blob store contract (blobs/base.py), checked against every implementation by the same
tests, plus what only the filesystem store promises (names, modes), what only the PostgreSQL
store promises (chunk layout, several nodes, deletion grace) and choosing one by URL."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import psycopg
import pytest

from mailslot.errors import ConfigError, ConflictError, InputError, NotFoundError
from mailslot.server.blobs import FilesystemBlobStore, MemoryBlobStore, open_blob_store
from mailslot.server.blobs.base import READ_CHUNK, BlobStore
from mailslot.server.blobs.filesystem import WRITE_BUFFER
from mailslot.server.blobs.postgres import CHUNK_BYTES, PostgresBlobStore
from tests.server.services import empty_database, fresh_database

# Every implementation the suite must pass; a new store adds its URL here.
STORES = ["memory", "file", "postgres"]
ID = bytes(range(32))
OTHER = bytes(range(1, 33))


def store_url(kind: str, tmp_path: Path) -> str:
    return "memory://" if kind == "memory" else (tmp_path / "blobs").as_uri()


@pytest.fixture(scope="session")
def blob_database() -> Iterator[str]:
    """One PostgreSQL database for the session's blob stores (emptied between tests)."""
    with fresh_database() as url:
        yield url


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """An opened, empty store of each implementation in turn."""
    postgres = request.param == "postgres"
    url = request.getfixturevalue("blob_database") if postgres else store_url(request.param, tmp_path)
    blobs = open_blob_store(url)
    await blobs.open()
    if postgres:
        empty_database(url)
    yield blobs
    await blobs.close()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def failing_after(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise RuntimeError("the sender went away")


async def read_all(store: BlobStore, blob_id: bytes, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in store.read(blob_id, start, end)])


def pattern(size: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) % 251 for i in range(size))


# --- the contract -------------------------------------------------------------------------------
async def test_create_is_empty(store: BlobStore) -> None:
    await store.create(ID)
    assert await store.size(ID) == 0
    assert await read_all(store, ID, 0, 0) == b""
    assert await store.size(OTHER) is None


async def test_create_twice(store: BlobStore) -> None:
    await store.create(ID)
    await store.append(ID, 0, chunks(b"keep"))
    with pytest.raises(ConflictError):
        await store.create(ID)
    assert await read_all(store, ID, 0, 4) == b"keep"


async def test_append_in_pieces_and_read_back(store: BlobStore) -> None:
    await store.create(ID)
    data = pattern(3 * READ_CHUNK + 17)
    assert await store.append(ID, 0, chunks(data[:100], data[100:READ_CHUNK])) == READ_CHUNK
    assert await store.append(ID, READ_CHUNK, chunks(data[READ_CHUNK:])) == len(data)
    assert await store.size(ID) == len(data)
    assert await read_all(store, ID, 0, len(data)) == data
    pieces = [chunk async for chunk in store.read(ID, 0, len(data))]
    assert all(0 < len(p) <= READ_CHUNK for p in pieces)


async def test_append_of_more_than_the_write_buffer(store: BlobStore) -> None:
    await store.create(ID)
    data = pattern(2 * WRITE_BUFFER + 5, seed=3)
    step = 100_000
    assert await store.append(ID, 0, chunks(*(data[i : i + step] for i in range(0, len(data), step)))) == len(
        data
    )
    assert await read_all(store, ID, 0, len(data)) == data


@pytest.mark.parametrize(("start", "end"), [(0, 1), (5, 10), (9, 10), (3, 3), (0, 10)])
async def test_read_a_range(store: BlobStore, start: int, end: int) -> None:
    await store.create(ID)
    await store.append(ID, 0, chunks(b"0123456789"))
    assert await read_all(store, ID, start, end) == b"0123456789"[start:end]


@pytest.mark.parametrize(("start", "end"), [(-1, 2), (3, 2), (0, 11), (11, 11)])
async def test_read_outside_the_blob(store: BlobStore, start: int, end: int) -> None:
    await store.create(ID)
    await store.append(ID, 0, chunks(b"0123456789"))
    with pytest.raises(InputError):
        await read_all(store, ID, start, end)


async def test_unknown_blob(store: BlobStore) -> None:
    with pytest.raises(NotFoundError):
        await store.append(ID, 0, chunks(b"x"))
    with pytest.raises(NotFoundError):
        await store.truncate(ID, 0)
    with pytest.raises(NotFoundError):
        await read_all(store, ID, 0, 0)
    assert not await store.delete(ID)


async def test_append_discards_what_lies_past_the_offset(store: BlobStore) -> None:
    await store.create(ID)
    await store.append(ID, 0, chunks(b"committed", b"-left-over-from-a-cut-piece"))
    assert await store.append(ID, 9, chunks(b"+next")) == 14
    assert await read_all(store, ID, 0, 14) == b"committed+next"


async def test_append_past_the_end_is_a_conflict(store: BlobStore) -> None:
    await store.create(ID)
    await store.append(ID, 0, chunks(b"abc"))
    with pytest.raises(ConflictError) as caught:
        await store.append(ID, 4, chunks(b"d"))
    assert caught.value.details == {"offset": 3}
    assert await store.size(ID) == 3


async def test_failed_stream_then_truncate_restores_the_blob(store: BlobStore) -> None:
    await store.create(ID)
    await store.append(ID, 0, chunks(b"base"))
    with pytest.raises(RuntimeError):
        await store.append(ID, 4, failing_after([b"partial", b"piece"]))
    size = await store.size(ID)
    assert size is not None and 4 <= size <= 16
    await store.truncate(ID, 4)
    assert await store.size(ID) == 4
    assert await read_all(store, ID, 0, 4) == b"base"


async def test_truncate_never_grows(store: BlobStore) -> None:
    await store.create(ID)
    await store.append(ID, 0, chunks(b"abcdef"))
    await store.truncate(ID, 10)
    assert await store.size(ID) == 6
    await store.truncate(ID, 2)
    assert await read_all(store, ID, 0, 2) == b"ab"


async def test_delete(store: BlobStore) -> None:
    await store.create(ID)
    await store.create(OTHER)
    await store.append(ID, 0, chunks(b"gone"))
    assert await store.delete(ID)
    assert await store.size(ID) is None
    assert await store.size(OTHER) == 0
    assert not await store.delete(ID)
    await store.create(ID)  # the id can be used again
    assert await store.size(ID) == 0


async def test_a_read_under_way_survives_deletion(store: BlobStore) -> None:
    await store.create(ID)
    data = pattern(3 * READ_CHUNK)
    await store.append(ID, 0, chunks(data))
    reader = store.read(ID, 0, len(data))
    first = await anext(reader)
    assert await store.delete(ID)
    rest = b"".join([chunk async for chunk in reader])
    assert first + rest == data


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33, b"../../etc/passwd".ljust(32, b"\0")[:31]])
async def test_ids_must_be_32_bytes(store: BlobStore, bad: bytes) -> None:
    with pytest.raises(InputError):
        await store.create(bad)
    with pytest.raises(InputError):
        await store.size(bad)


# --- the filesystem store ---------------------------------------------------------------------
async def test_files_are_named_only_by_the_hex_id(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    await store.open()
    await store.create(ID)
    await store.append(ID, 0, chunks(b"secret"))
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert files == [tmp_path / "blobs" / ID.hex()[:2] / ID.hex()]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    assert files[0].read_bytes() == b"secret"


async def test_a_symlink_in_place_of_a_blob_is_not_followed(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs", fsync=False)
    await store.open()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"do not touch")
    link = store.path_of(ID)
    link.parent.mkdir()
    os.symlink(target, link)
    with pytest.raises(OSError):
        await store.append(ID, 0, chunks(b"x"))
    assert target.read_bytes() == b"do not touch"


# --- the PostgreSQL store ----------------------------------------------------------------------
@pytest.fixture
async def node_stores(blob_database: str) -> AsyncIterator[list[PostgresBlobStore]]:
    """Two opened stores on one empty database, as two nodes hold them, with 10-byte chunks."""
    stores = [PostgresBlobStore(blob_database, chunk_bytes=10) for _ in range(2)]
    for node in stores:
        await node.open()
    empty_database(blob_database)
    yield stores
    for node in stores:
        await node.close()


def chunk_rows(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT chunk_no, length(data) FROM blob_chunks ORDER BY file_id, chunk_no")
        return [(int(no), int(size)) for no, size in rows]


async def test_bytes_are_stored_in_fixed_chunks(
    node_stores: list[PostgresBlobStore], blob_database: str
) -> None:
    store = node_stores[0]
    await store.create(ID)
    data = pattern(47, seed=5)
    await store.append(ID, 0, chunks(data[:3], data[3:25]))  # ends inside the third chunk
    await store.append(ID, 25, chunks(data[25:31], data[31:]))  # fills it, then two more
    assert chunk_rows(blob_database) == [(0, 10), (1, 10), (2, 10), (3, 10), (4, 7)]
    for start, end in [(0, 47), (9, 11), (10, 20), (13, 42), (46, 47), (20, 20)]:
        assert await read_all(store, ID, start, end) == data[start:end]
    await store.truncate(ID, 23)
    assert chunk_rows(blob_database) == [(0, 10), (1, 10), (2, 3)]
    await store.append(ID, 20, chunks(b"abcdefghijklmn"))  # cuts the partial chunk, refills it
    assert chunk_rows(blob_database) == [(0, 10), (1, 10), (2, 10), (3, 4)]
    assert await read_all(store, ID, 0, 34) == data[:20] + b"abcdefghijklmn"
    assert CHUNK_BYTES == 1024 * 1024


async def test_another_node_cannot_cut_bytes_under_a_live_upload(
    node_stores: list[PostgresBlobStore],
) -> None:
    first, second = node_stores
    await first.create(ID)
    await first.append(ID, 0, chunks(b"0123456789ab"))  # a piece, not yet committed
    with pytest.raises(ConflictError) as caught:
        await second.append(ID, 0, chunks(b"other"))  # a retry of the same piece elsewhere
    assert caught.value.details == {}  # the client asks for the committed offset
    with pytest.raises(ConflictError):
        await second.truncate(ID, 0)  # what the losing node's clean-up does
    assert await read_all(first, ID, 0, 12) == b"0123456789ab"
    # The next piece may go through any node: starting at the end cuts nothing.
    assert await second.append(ID, 12, chunks(b"cd")) == 14
    with pytest.raises(ConflictError, match="another node"):
        await first.append(ID, 12, chunks(b"late"))  # a stale retry on the first node
    assert await read_all(first, ID, 0, 14) == b"0123456789abcd"


async def test_a_node_that_lost_the_blob_mid_piece_writes_nothing(
    node_stores: list[PostgresBlobStore],
) -> None:
    first, second = node_stores
    await first.create(ID)
    taken = False

    async def slow_piece() -> AsyncIterator[bytes]:
        nonlocal taken
        yield b"x" * 10
        assert await second.append(ID, 10, chunks(b"B" * 5)) == 15  # second takes over
        taken = True
        yield b"y" * 10

    with pytest.raises(ConflictError):
        await first.append(ID, 0, slow_piece())
    assert taken
    assert await read_all(first, ID, 0, 15) == b"x" * 10 + b"B" * 5


async def test_an_expired_lease_lets_another_node_cut(blob_database: str) -> None:
    first = PostgresBlobStore(blob_database, lease_s=0.001)
    second = PostgresBlobStore(blob_database, lease_s=0.001)
    await first.open()
    await second.open()
    try:
        empty_database(blob_database)
        await first.create(ID)
        await first.append(ID, 0, chunks(b"abandoned by a crashed node"))
        await asyncio.sleep(0.01)  # the lease runs out
        assert await second.append(ID, 0, chunks(b"fresh")) == 5
        assert await read_all(first, ID, 0, 5) == b"fresh"
        await asyncio.sleep(0.01)
        with pytest.raises(ConflictError):  # a late clean-up on the node that lost the blob
            await first.truncate(ID, 0)
        assert await read_all(first, ID, 0, 5) == b"fresh"
    finally:
        await first.close()
        await second.close()


async def test_deleted_bytes_go_after_the_grace_period(blob_database: str) -> None:
    store = PostgresBlobStore(blob_database, chunk_bytes=4, deleted_grace_s=0)
    await store.open()
    try:
        empty_database(blob_database)
        await store.create(ID)
        await store.append(ID, 0, chunks(b"0123456789"))
        assert len(chunk_rows(blob_database)) == 3
        assert await store.delete(ID)
        assert chunk_rows(blob_database) == []
    finally:
        await store.close()


async def test_the_store_refuses_a_newer_schema() -> None:
    with fresh_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (999, 'from the future')")
        with pytest.raises(ConfigError, match="schema version 999"):
            await PostgresBlobStore(url).open()


# --- choosing a store by URL --------------------------------------------------------------------
def test_urls(tmp_path: Path) -> None:
    assert isinstance(open_blob_store("memory://"), MemoryBlobStore)
    store = open_blob_store((tmp_path / "with space").as_uri())
    assert isinstance(store, FilesystemBlobStore)
    assert store.root == tmp_path / "with space"
    local = open_blob_store("file://localhost/srv/blobs")
    assert isinstance(local, FilesystemBlobStore) and local.root == Path("/srv/blobs")
    for url in ("postgresql://mailslot:secret@db.example:5432/mailslot", "postgres://db/mailslot"):
        shared = open_blob_store(url)  # nothing is connected yet
        assert isinstance(shared, PostgresBlobStore) and shared.url == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "file://",
        "file:///",
        "file:relative/path",
        "file://host/srv",
        "s3://bucket",
        "memory://x",
        "postgres://",
    ],
)
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="unsupported blob store URL"):
        open_blob_store(url)
