"""Where received attachments land: one folder, safe names, never outside it, never an overwrite.

The name of an attachment is chosen by whoever sent it, so it is hostile until proven
otherwise. ``safe_name`` keeps only a plain file name: directories and path separators are
stripped (``../../etc/passwd`` becomes ``passwd``), control, format (bidirectional overrides
that disguise an extension), surrogate and private-use characters are dropped, characters
Windows forbids become ``_``, leading dots (hidden files, ``..``) and trailing dots and spaces
go, a reserved device name (``CON``, ``NUL``, ``COM1`` …) gets a ``_`` in front, and the result
is cut to ``MAX_NAME_BYTES`` keeping its extension. It is never empty: ``attachment`` plus an
extension for the media type stands in.

``PartialFile`` receives the plaintext under a temporary hidden name in the folder (created
with ``O_EXCL``, mode 0600). ``commit`` makes it durable and moves it to a name nobody holds:
the first of ``name``, ``name (1)``, ``name (2)`` … that can be created with ``O_EXCL`` (so
two downloads racing for a name cannot both win, and an existing file or symbolic link is
never replaced), after checking that the resolved path is inside the folder. ``discard``
removes it. A file under its final name is therefore always complete and verified.
"""

from __future__ import annotations

import mimetypes
import os
import unicodedata
from pathlib import Path
from types import TracebackType

from mailslot.errors import ConfigError, InputError
from mailslot.protocol import crypto

DEFAULT_STEM = "attachment"
MAX_NAME_BYTES = 200  # below NAME_MAX (255) with room for " (12345)"
MAX_EXTENSION = 16
MAX_COPIES = 10_000
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
)


def split_extension(name: str) -> tuple[str, str]:
    """``("photo", ".jpg")``; an extension is 1-16 letters or digits after the last dot."""
    stem, dot, ext = name.rpartition(".")
    if dot and stem and 1 <= len(ext) <= MAX_EXTENSION and ext.isalnum():
        return stem, "." + ext
    return name, ""


def cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    return text.encode("utf-8")[: max(limit, 0)].decode("utf-8", errors="ignore")


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rpartition("/")[2]
    kept = (ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    name = "".join("_" if ch in _WINDOWS_FORBIDDEN else ch for ch in kept)
    # Repeat until stable: stripping the dots of ". x" uncovers a space that must go too.
    trimmed = ""
    while trimmed != name:
        trimmed, name = name, name.strip().lstrip(".").rstrip(". ")
    return name


def _extension_for(media_type: str) -> str:
    guessed = mimetypes.guess_extension(media_type.partition(";")[0].strip().lower()) or ""
    return split_extension("x" + guessed)[1]


def safe_name(name: str, media_type: str = "") -> str:
    """A harmless, non-empty file name for an attachment called ``name`` by its sender."""
    stem, ext = split_extension(_clean(name))
    if stem.partition(".")[0].rstrip(" ").upper() in _RESERVED:
        stem = "_" + stem
    stem = cut_utf8(stem, MAX_NAME_BYTES - len(ext.encode("utf-8"))).rstrip(". ")
    if not stem:
        stem, ext = DEFAULT_STEM, ext or _extension_for(media_type)
    return stem + ext


def prepare_folder(folder: Path) -> Path:
    """Create the downloads folder if needed (0700); its resolved path."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder.resolve(strict=True)
    except OSError as exc:
        raise ConfigError(f"cannot use the downloads folder {folder}: {exc.strerror or exc}") from exc


def _claim(folder: Path, name: str) -> Path:
    """Create an empty file under the first free variant of ``name`` in ``folder``."""
    stem, ext = split_extension(name)
    for copy in range(MAX_COPIES):
        candidate = folder / (f"{stem} ({copy})" + ext if copy else name)
        inside = candidate.parent.resolve() == folder and candidate.name not in ("", ".", "..")
        if os.sep in candidate.name or not inside:
            raise InputError(f"refusing to write outside the downloads folder: {name!r}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        return candidate
    raise ConfigError(f"too many files called {name!r} in {folder}")


class PartialFile:
    """A file being downloaded; it gets its real name only once complete (``commit``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = prepare_folder(folder)
        self._path = self.folder / f".mailslot-{crypto.random_bytes(8).hex()}.part"
        try:
            fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write to {self.folder}: {exc.strerror or exc}") from exc
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise ConfigError(f"cannot write to {self.folder}: {exc.strerror or exc}") from exc

    def commit(self, name: str, media_type: str = "") -> Path:
        """Make the file durable and give it a free variant of ``safe_name(name)``."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final = _claim(self.folder, safe_name(name, media_type))
            os.replace(self._path, final)
        except OSError as exc:
            self.discard()
            raise ConfigError(f"cannot save into {self.folder}: {exc.strerror or exc}") from exc
        return final

    def discard(self) -> None:
        """Remove the partial file (after a failed check: nothing incomplete is kept)."""
        self._file.close()
        self._path.unlink(missing_ok=True)

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.discard()
