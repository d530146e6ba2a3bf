"""Message bodies with attachments, and long texts that travel as blobs.

A ``Content`` of kind ``KIND_RICH`` carries a ``RichBody``: the text plus a reference to each
attachment. A reference holds everything needed to fetch, check and open the blob (its random
address, its key, the SHA-256 and size of its ciphertext) and what the file is (name, media
type, plaintext size, an optional small thumbnail). All of it travels inside the end-to-end
encrypted message; the server sees only an opaque blob under a random address.

A text longer than the inline limit goes as an attachment flagged ``FLAG_LONG_TEXT`` (UTF-8,
media type ``text/plain``) and is shown as ordinary text once downloaded and checked.

Encoding::

    RichBody      = var("mailslot/v1/rich-body") text(text) u32(n) AttachmentRef*
    AttachmentRef = blob_id[32] key[32] sha256[32] u64(blob_size) u64(size)
                    text(name) text(media_type) var(thumbnail) u8(flags)
"""

from __future__ import annotations

from dataclasses import dataclass

from mailslot.errors import DecodeError, InputError
from mailslot.protocol import chunked, crypto, labels
from mailslot.protocol.encoding import Reader, Writer, decode

BLOB_ID_SIZE = 32
MAX_ATTACHMENTS = 32
MAX_NAME = 255
MAX_MEDIA_TYPE = 127
MAX_THUMBNAIL = 48 * 1024
MAX_TEXT = 64 * 1024 * 1024
INLINE_TEXT_LIMIT = 4 * 1024
FLAG_LONG_TEXT = 0x01
_KNOWN_FLAGS = FLAG_LONG_TEXT


@dataclass(frozen=True)
class AttachmentRef:
    """How to fetch, check and open one encrypted blob, and what the file is."""

    blob_id: bytes
    key: bytes
    sha256: bytes
    blob_size: int
    size: int
    name: str
    media_type: str
    thumbnail: bytes = b""
    flags: int = 0

    def __post_init__(self) -> None:
        if len(self.blob_id) != BLOB_ID_SIZE or len(self.key) != crypto.AEAD_KEY_SIZE:
            raise InputError("malformed blob id or key")
        if len(self.sha256) != crypto.HASH_SIZE:
            raise InputError("malformed blob hash")
        if self.flags & ~_KNOWN_FLAGS:
            raise InputError("unknown attachment flags")
        if len(self.name.encode()) > MAX_NAME or len(self.media_type) > MAX_MEDIA_TYPE:
            raise InputError("attachment name or media type too long")
        if len(self.thumbnail) > MAX_THUMBNAIL:
            raise InputError("thumbnail too large")
        smallest = self.size + len(chunked.header_bytes(chunked.MAX_CHUNK_SIZE)) + chunked.TAG
        largest = chunked.ciphertext_size(self.size, chunked.MIN_CHUNK_SIZE)
        if not smallest <= self.blob_size <= largest:
            raise InputError("blob size does not fit the file size")

    @property
    def is_long_text(self) -> bool:
        return bool(self.flags & FLAG_LONG_TEXT)

    def write(self, w: Writer) -> None:
        w.fixed(self.blob_id, BLOB_ID_SIZE).fixed(self.key, 32).fixed(self.sha256, 32)
        w.u64(self.blob_size).u64(self.size).text(self.name).text(self.media_type)
        w.var(self.thumbnail).u8(self.flags)

    @classmethod
    def read(cls, r: Reader) -> AttachmentRef:
        blob_id, key, digest = r.fixed(BLOB_ID_SIZE), r.fixed(32), r.fixed(32)
        blob_size, size = r.u64(), r.u64()
        name, media_type = r.text(MAX_NAME), r.text(MAX_MEDIA_TYPE)
        thumbnail, flags = r.var(MAX_THUMBNAIL), r.u8()
        try:
            return cls(blob_id, key, digest, blob_size, size, name, media_type, thumbnail, flags)
        except InputError as exc:
            raise DecodeError(f"invalid attachment reference: {exc.message}") from exc


@dataclass(frozen=True)
class RichBody:
    """A message's text and attachments (``KIND_RICH``)."""

    text: str
    attachments: tuple[AttachmentRef, ...]

    def __post_init__(self) -> None:
        if len(self.attachments) > MAX_ATTACHMENTS:
            raise InputError(f"at most {MAX_ATTACHMENTS} attachments per message")
        if sum(a.is_long_text for a in self.attachments) > 1:
            raise InputError("at most one long-text attachment per message")

    def to_bytes(self) -> bytes:
        w = Writer().var(labels.RICH_BODY).text(self.text)
        return w.items(self.attachments, lambda w_, a: a.write(w_)).to_bytes()

    @classmethod
    def read(cls, r: Reader) -> RichBody:
        r.expect_label(labels.RICH_BODY)
        text = r.text(MAX_TEXT)
        refs = r.items(AttachmentRef.read, MAX_ATTACHMENTS)
        try:
            return cls(text, tuple(refs))
        except InputError as exc:
            raise DecodeError(f"invalid message body: {exc.message}") from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> RichBody:
        return decode(data, cls.read)
