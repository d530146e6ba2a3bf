"""Chunked authenticated encryption for blobs of any size, in constant memory.

A blob is encrypted under a fresh random 32-byte key that is used for that blob only, so the
nonces can be a plain counter. The format follows the STREAM construction (as in age)::

    header  = var("mailslot/v1/blob") u32(chunk_size)
    nonce_i = 0x00*7 ‖ u32(i) ‖ u8(last)          (12 bytes; ``last`` is 1 on the final chunk)
    chunk_i = AES-256-GCM(key, nonce_i, plaintext_i, aad = header)
    blob    = header ‖ chunk_0 ‖ … ‖ chunk_n

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last holds 0 to
``chunk_size`` (an empty file is one empty final chunk). Reordering fails (the counter is in
the nonce), truncation fails (the last flag is missing where the reference says the blob ends),
appending fails (nothing may follow the last chunk), and any flipped bit fails its chunk's tag.
Openers release plaintext chunk by chunk; callers must not treat it as complete until
``finish()`` returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from mailslot.errors import InputError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.encoding import Writer

CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
TAG = crypto.AEAD_TAG_SIZE


def header_bytes(chunk_size: int) -> bytes:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InputError(f"chunk size must be {MIN_CHUNK_SIZE}-{MAX_CHUNK_SIZE} bytes")
    return Writer().var(labels.BLOB).u32(chunk_size).to_bytes()


def chunk_count(size: int, chunk_size: int) -> int:
    """Chunks for ``size`` plaintext bytes: at least one, the last possibly short or empty."""
    return max(1, -(-size // chunk_size))


def ciphertext_size(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Exact blob size for ``size`` plaintext bytes."""
    return len(header_bytes(chunk_size)) + size + chunk_count(size, chunk_size) * TAG


def _nonce(index: int, last: bool) -> bytes:
    if index >= 2**32:
        raise InputError("blob has too many chunks")
    return bytes(7) + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class ChunkSealer:
    """Encrypts one blob chunk by chunk; feed it plaintext pieces of any size."""

    def __init__(self, key: bytes, chunk_size: int = CHUNK_SIZE) -> None:
        if len(key) != crypto.AEAD_KEY_SIZE:
            raise InputError("a blob key is 32 bytes")
        self._key = key
        self.chunk_size = chunk_size
        self.header = header_bytes(chunk_size)
        self._index = 0
        self._pending = bytearray()
        self._finished = False

    def _seal(self, plain: bytes, last: bool) -> bytes:
        sealed = crypto.aead_seal(self._key, _nonce(self._index, last), plain, self.header)
        self._index += 1
        return sealed

    def start(self) -> bytes:
        """The header, to write before the first chunk."""
        return self.header

    def update(self, data: bytes) -> Iterator[bytes]:
        """Sealed chunks completed by ``data``; a full chunk is held back until more data or
        ``finish`` shows whether it is the last."""
        if self._finished:
            raise InputError("the blob is already finished")
        self._pending += data
        while len(self._pending) > self.chunk_size:
            chunk = bytes(self._pending[: self.chunk_size])
            del self._pending[: self.chunk_size]
            yield self._seal(chunk, last=False)

    def finish(self) -> bytes:
        """The final chunk (possibly empty)."""
        if self._finished:
            raise InputError("the blob is already finished")
        self._finished = True
        return self._seal(bytes(self._pending), last=True)


def seal_blob(key: bytes, pieces: Iterable[bytes], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The whole blob (header, then chunks) for plaintext given in pieces of any size."""
    sealer = ChunkSealer(key, chunk_size)
    yield sealer.start()
    for piece in pieces:
        yield from sealer.update(piece)
    yield sealer.finish()


class ChunkOpener:
    """Decrypts one blob of known total size, fed in pieces of any size.

    The total size comes from the (signed, encrypted) message that referenced the blob, so the
    opener knows which chunk must carry the last flag: a truncated or extended blob fails.
    """

    def __init__(self, key: bytes, blob_size: int) -> None:
        if len(key) != crypto.AEAD_KEY_SIZE:
            raise VerificationError("a blob key is 32 bytes")
        self._key = key
        self._remaining = blob_size
        self._buffer = bytearray()
        self._header: bytes | None = None
        self._chunk_size = 0
        self._index = 0
        self._done = False

    def _read_header(self) -> bool:
        prefix = Writer().var(labels.BLOB).to_bytes()
        needed = len(prefix) + 4
        if len(self._buffer) < needed:
            return False
        if bytes(self._buffer[: len(prefix)]) != prefix:
            raise VerificationError("not a mailslot blob")
        self._chunk_size = int.from_bytes(self._buffer[len(prefix) : needed], "big")
        if not MIN_CHUNK_SIZE <= self._chunk_size <= MAX_CHUNK_SIZE:
            raise VerificationError("invalid blob chunk size")
        self._header = bytes(self._buffer[:needed])
        del self._buffer[:needed]
        return True

    def _open(self, sealed: bytes, last: bool) -> bytes:
        assert self._header is not None
        plain = crypto.aead_open(self._key, _nonce(self._index, last), sealed, self._header)
        self._index += 1
        return plain

    def update(self, data: bytes) -> Iterator[bytes]:
        """Plaintext chunks that verified; not complete until ``finish`` returns."""
        if self._done or len(data) > self._remaining:
            raise VerificationError("blob is longer than its reference says")
        self._remaining -= len(data)
        self._buffer += data
        if self._header is None and not self._read_header():
            return
        sealed_size = self._chunk_size + TAG
        while len(self._buffer) > sealed_size or (len(self._buffer) == sealed_size and self._remaining):
            sealed = bytes(self._buffer[:sealed_size])
            del self._buffer[:sealed_size]
            yield self._open(sealed, last=False)

    def finish(self) -> bytes:
        """The last chunk's plaintext; raises ``VerificationError`` if the blob is incomplete."""
        if self._done or self._remaining or self._header is None or len(self._buffer) < TAG:
            raise VerificationError("blob is truncated")
        self._done = True
        return self._open(bytes(self._buffer), last=True)
