"""Encrypted blobs on the server: streamed, resumable upload and download, in constant memory.

Upload (``upload_blob``): a fresh random 32-byte key, ``POST /v1/blobs`` with the exact
ciphertext size, then ``PATCH /v1/blobs/{id}`` pieces of at most ``PIECE_SIZE`` bytes, each at
the offset the server has committed. The ciphertext is produced while the source is read
(``chunked.ChunkSealer``), and its SHA-256 is computed over exactly the bytes the server
committed, so at most one piece is ever held. After a dropped connection the client asks the
server for the committed offset (``GET /v1/blobs/{id}/upload``; a ``409`` names it directly)
and continues from there: the ciphertext is a pure function of key and plaintext, so the bytes
before the offset are known without asking the server for them, and a rewind simply seals the
source again from its start. Retries are bounded: ``MAX_FAILURES`` failures in a row without
progress end the upload.

Download (``download_blob``): ``GET /v1/blobs/{id}`` (no authentication: the random id is the
capability, the key protects the content), streamed through ``chunked.ChunkOpener`` and
SHA-256, resumed with ``Range: bytes=N-`` after a dropped connection. Plaintext goes to the
caller's ``sink`` chunk by chunk as each chunk authenticates, but it is complete only when this
function returns: the ciphertext hash must equal the reference's and the opener's ``finish()``
must succeed (the last-chunk flag at exactly the referenced size). Anything else raises
``VerificationError``; the caller must then discard what the sink received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from mailslot.client.transport import Transport
from mailslot.errors import ConflictError, InputError, NetworkError, ServerError, VerificationError
from mailslot.protocol import chunked, crypto
from mailslot.protocol.attachment import BLOB_ID_SIZE, AttachmentRef
from mailslot.protocol.wire import BlobCreate, BlobInfo

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) of the encrypted blob as a transfer advances."""

PIECE_SIZE = 4 * 1024 * 1024  # per PATCH request; the server accepts up to 8 MiB
READ_SIZE = 1024 * 1024  # per read from the source file
MAX_FAILURES = 6  # failures in a row, without progress, before a transfer gives up
RETRY_DELAYS_S = (0.1, 0.3, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class UploadedBlob:
    """What a finished upload yields for the attachment reference."""

    blob_id: bytes
    key: bytes
    sha256: bytes
    blob_size: int


def _no_progress(done: int, total: int) -> None:
    """The default progress callback."""


async def _pause(failures: int) -> None:
    await asyncio.sleep(RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S)) - 1])


# --- upload ------------------------------------------------------------------------------------


def seal_source(source: BinaryIO, size: int, key: bytes) -> Iterator[bytes]:
    """The blob for ``source`` (read again from its start), sealed as it is read.

    ``size`` was declared to the server and goes into the reference; a source that yields
    more or fewer bytes (a file changed while being sent) is an ``InputError``.
    """
    source.seek(0)
    sealer = chunked.ChunkSealer(key)
    yield sealer.start()
    read = 0
    while data := source.read(READ_SIZE):
        read += len(data)
        if read > size:
            break
        yield from sealer.update(data)
    if read != size:
        raise InputError(f"the file changed while it was being sent ({size} bytes expected)")
    yield sealer.finish()


def pieces(blocks: Iterator[bytes], size: int = PIECE_SIZE) -> Iterator[bytes]:
    """``blocks`` regrouped into pieces of exactly ``size`` bytes (the last one shorter).

    Blocks are held in a list and joined once per piece: growing one buffer whose front was
    cut off copies all of it each time it grows, which made this the slowest step of an upload.
    """
    parts: list[bytes] = []
    held = 0
    for block in blocks:
        parts.append(block)
        held += len(block)
        if held < size:
            continue
        joined = b"".join(parts)
        whole = held - held % size
        for start in range(0, whole, size):
            yield joined[start : start + size]
        parts = [joined[whole:]] if whole < held else []
        held -= whole
    if held:
        yield b"".join(parts)


class _Upload:
    """One blob upload: what the server committed, and the ciphertext from there on.

    ``offset`` is the server's committed offset, ``hasher`` covers exactly the ciphertext
    before it, and ``pending`` holds the ciphertext bytes starting at ``offset`` that are read
    but not yet committed (at most one piece).
    """

    def __init__(
        self,
        transport: Transport,
        info: BlobInfo,
        source: BinaryIO,
        size: int,
        key: bytes,
        piece_size: int = PIECE_SIZE,
    ) -> None:
        self._transport = transport
        self._path = f"/v1/blobs/{info.blob_id}"
        self.total = info.size
        self._source, self._size, self._key, self._piece_size = source, size, key, piece_size
        self._restart()

    def _restart(self) -> None:
        self.offset = 0
        self.hasher = hashlib.sha256()
        self._stream = pieces(seal_source(self._source, self._size, self._key), self._piece_size)
        self._pending = b""

    def seek(self, committed: int) -> None:
        """Move to the server's committed offset: forward by hashing our own bytes (the
        server holds exactly these if it is honest, and the recipient checks the hash), back
        by sealing the source again from its start."""
        if not 0 <= committed <= self.total:
            raise ServerError(f"the server reports an impossible upload offset {committed}")
        if committed < self.offset:
            self._restart()
        while self.offset < committed:
            if not self._pending:
                self._pending = next(self._stream)
            step = min(committed - self.offset, len(self._pending))
            self.hasher.update(self._pending[:step])
            self._pending = self._pending[step:]
            self.offset += step

    def next_piece(self) -> bytes:
        """The bytes to send at ``offset`` (read from the source if none are pending)."""
        if not self._pending:
            self._pending = next(self._stream)
        return self._pending

    async def send(self, piece: bytes) -> int:
        """PATCH ``piece`` at ``offset``; the committed offset after it."""
        headers = {"Upload-Offset": str(self.offset), "Content-Type": "application/offset+octet-stream"}
        info = await self._transport.call("PATCH", self._path, BlobInfo, content=piece, headers=headers)
        return info.offset

    async def committed(self, failure: Exception) -> int:
        """The committed offset after a failed PATCH: named by a 409, else asked for."""
        if isinstance(failure, ConflictError) and isinstance(failure.details.get("offset"), int):
            return int(failure.details["offset"])
        info = await self._transport.call("GET", self._path + "/upload", BlobInfo)
        return info.offset


async def _run_upload(upload: _Upload, progress: Progress) -> None:
    """Send pieces until the server has committed the whole blob, resuming after failures."""
    failures = 0
    while upload.offset < upload.total:
        before = upload.offset
        failure: Exception | None = None
        try:
            upload.seek(await upload.send(upload.next_piece()))
        except (NetworkError, ConflictError) as exc:
            failure = exc
            await _pause(failures + 1)
            with contextlib.suppress(NetworkError):  # still unreachable: the next PATCH asks again
                upload.seek(await upload.committed(exc))
        failures = 0 if upload.offset > before else failures + 1
        if failures >= MAX_FAILURES:
            raise failure or ServerError("the server does not commit the upload")
        progress(upload.offset, upload.total)


async def upload_blob(
    transport: Transport, source: BinaryIO, size: int, progress: Progress = _no_progress
) -> UploadedBlob:
    """Encrypt ``size`` bytes of ``source`` under a fresh key and upload them as a new blob.

    ``source`` must be seekable (a rewind reads it again from the start). Nothing but one
    piece of ciphertext is held in memory, whatever the size.
    """
    key = crypto.random_bytes(crypto.AEAD_KEY_SIZE)
    blob_size = chunked.ciphertext_size(size)
    info = await transport.call("POST", "/v1/blobs", BlobInfo, body=BlobCreate(size=blob_size))
    blob_id = _parse_blob_id(info.blob_id)
    if info.size != blob_size:
        raise ServerError("the server reserved a blob of another size")
    upload = _Upload(transport, info, source, size, key)
    upload.seek(info.offset)
    progress(upload.offset, blob_size)
    await _run_upload(upload, progress)
    return UploadedBlob(blob_id, key, upload.hasher.digest(), blob_size)


def _parse_blob_id(text: str) -> bytes:
    try:
        blob_id = bytes.fromhex(text)
    except ValueError:
        blob_id = b""
    if len(blob_id) != BLOB_ID_SIZE or text != blob_id.hex():
        raise ServerError("the server sent a malformed blob id")
    return blob_id


# --- download ----------------------------------------------------------------------------------


class _Download:
    """Ciphertext as it arrives: counted, hashed, opened chunk by chunk into the sink."""

    def __init__(self, ref: AttachmentRef, sink: Callable[[bytes], None], progress: Progress) -> None:
        self.ref = ref
        self.received = 0
        self._hasher = hashlib.sha256()
        self._opener = chunked.ChunkOpener(ref.key, ref.blob_size)
        self._sink = sink
        self._progress = progress

    def feed(self, data: bytes) -> None:
        """Check and pass on ``data``; more bytes than the reference says fail at once."""
        for plain in self._opener.update(data):
            self._sink(plain)
        self._hasher.update(data)
        self.received += len(data)
        self._progress(self.received, self.ref.blob_size)

    def finish(self) -> None:
        """The whole-blob checks: the exact hash, then the final chunk (size and last flag)."""
        if self._hasher.digest() != self.ref.sha256:
            raise VerificationError("the attachment does not match its reference")
        self._sink(self._opener.finish())


async def download_blob(
    transport: Transport,
    ref: AttachmentRef,
    sink: Callable[[bytes], None],
    progress: Progress = _no_progress,
) -> None:
    """Fetch, check and decrypt the blob of ``ref`` into ``sink``; see the module docstring.

    Returns only when every check passed. ``VerificationError`` (tampering, a wrong key or
    reference), ``NotFoundError`` (unknown, incomplete or expired blob) and, after
    ``MAX_FAILURES`` dropped connections in a row, ``NetworkError`` leave the sink's bytes
    incomplete: the caller discards them.
    """
    download = _Download(ref, sink, progress)
    path = f"/v1/blobs/{ref.blob_id.hex()}"
    failures = 0
    while download.received < ref.blob_size:
        before = download.received
        failure: NetworkError | None = None
        try:
            await transport.download(path, start=before, sink=download.feed)
        except NetworkError as exc:
            failure = exc
        if download.received == ref.blob_size:
            break
        failures = 1 if download.received > before else failures + 1
        if failures >= MAX_FAILURES:
            raise failure or NetworkError("the server keeps ending the download early")
        await _pause(failures)
    download.finish()
