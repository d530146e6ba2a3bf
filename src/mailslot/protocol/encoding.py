"""Canonical byte encoding for everything mailslot signs or encrypts.

Every value has exactly one encoding, so a signature covers bytes, never a re-serialisation:

* integers are big-endian and fixed width (``u8``, ``u16``, ``u32``, ``u64``);
* byte strings of known size are written as they are (``fixed``);
* variable byte strings carry a ``u32`` length prefix (``var``);
* text is UTF-8 in a ``var`` and must round-trip exactly;
* a list is a ``u32`` count followed by its items.

A ``Reader`` refuses short input, lengths past the end and trailing bytes, each with a
``DecodeError``; it never returns a partial value.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import TypeVar

from mailslot.errors import DecodeError

T = TypeVar("T")

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Builds a canonical encoding field by field."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(bytes((value,)))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(_U16.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    def fixed(self, value: bytes, size: int) -> Writer:
        if len(value) != size:
            raise ValueError(f"expected {size} bytes, got {len(value)}")
        self._parts.append(bytes(value))
        return self

    def var(self, value: bytes) -> Writer:
        self._parts.append(_U32.pack(len(value)))
        self._parts.append(bytes(value))
        return self

    def text(self, value: str) -> Writer:
        return self.var(value.encode("utf-8"))

    def items(self, values: Iterable[T], write: Callable[[Writer, T], object]) -> Writer:
        materialised = list(values)
        self.u32(len(materialised))
        for value in materialised:
            write(self, value)
        return self

    def to_bytes(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads a canonical encoding back; every misuse of the input is a ``DecodeError``."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if size < 0 or end > len(self._data):
            raise DecodeError("input ends early")
        chunk = self._data[self._pos : end].tobytes()
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def fixed(self, size: int) -> bytes:
        return self._take(size)

    def var(self, max_size: int | None = None) -> bytes:
        size = self.u32()
        if max_size is not None and size > max_size:
            raise DecodeError(f"field of {size} bytes exceeds {max_size}")
        return self._take(size)

    def text(self, max_size: int | None = None) -> str:
        raw = self.var(max_size)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("text is not valid UTF-8") from exc

    def items(self, read: Callable[[Reader], T], max_count: int) -> list[T]:
        count = self.u32()
        if count > max_count:
            raise DecodeError(f"list of {count} items exceeds {max_count}")
        return [read(self) for _ in range(count)]

    def expect_label(self, label: bytes) -> None:
        """Check the domain-separation label that opens every signed structure."""
        if self.var(max_size=64) != label:
            raise DecodeError("wrong domain-separation label")

    def done(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError("trailing bytes after the value")


def decode(data: bytes, read: Callable[[Reader], T]) -> T:
    """Decode a whole value: ``read`` must consume ``data`` exactly."""
    reader = Reader(data)
    value = read(reader)
    reader.done()
    return value
