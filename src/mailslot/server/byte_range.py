"""HTTP range requests (RFC 9110, section 14) for blob downloads: one byte range, or none.

Pure functions over the ``Range`` header and the blob's size. As the RFC allows, a header this
server does not serve (another unit, several ranges, bad syntax, a range whose last position
comes before its first) is ignored and the whole blob is sent; a well-formed range that starts
at or past the end is unsatisfiable (416).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ByteRange", "Unsatisfiable", "parse_range"]

_MAX_DIGITS = 19  # positions beyond 2**63 are nonsense; refuse them without building huge ints
_SPEC = re.compile(
    rf"^bytes=(?:(\d{{1,{_MAX_DIGITS}}})-(\d{{0,{_MAX_DIGITS}}})|-(\d{{1,{_MAX_DIGITS}}}))$", re.I
)


class Unsatisfiable(Exception):  # the RFC's word for it
    """The range is well formed but selects no byte of the blob: answer 416."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` (inclusive) to ``end`` (exclusive) of a blob of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self) -> str:
        """The ``Content-Range`` value of a 206 answer."""
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range ``header`` asks for, clipped to ``size``; None to send the whole blob.

    ``bytes=a-b`` is a to b inclusive (b past the end means the end), ``bytes=a-`` a to the
    end, ``bytes=-n`` the last n bytes (all of them if n passes the size). Raises
    ``Unsatisfiable`` when a is at or past the end, or for ``-0``, or for any range of an
    empty blob.
    """
    if header is None:
        return None
    match = _SPEC.fullmatch(header.strip())
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        count = int(suffix)
        if count == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - count), size, size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid, so ignored (RFC 9110, 14.1.1)
    if start >= size:
        raise Unsatisfiable
    end = min(int(last) + 1, size) if last else size
    return ByteRange(start, end, size)
