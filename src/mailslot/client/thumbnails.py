"""Small JPEG previews of images, made by the sender and carried inside the encrypted message.

A thumbnail is at most ``MAX_SIDE`` pixels on its long side and at most
``attachment.MAX_THUMBNAIL`` bytes (the JPEG quality is lowered until it fits). It is a
convenience, never a requirement: a file Pillow cannot read, an image too large to decode in
bounded memory (more than ``MAX_PIXELS`` pixels as it would be decoded, a decompression bomb),
or any other failure simply means no thumbnail. Pillow's ``draft`` mode lets a JPEG decode at
a fraction of its size (1/2 to 1/8), which keeps even large photos cheap; the size is checked
after choosing the draft and before decoding anything.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from mailslot.protocol.attachment import MAX_THUMBNAIL

log = logging.getLogger("mailslot.client")

MAX_SIDE = 160
MAX_PIXELS = 12_000_000  # ~48 MB decoded as RGBA: the most a preview may cost; checked before decoding
QUALITIES = (80, 65, 50, 35, 20)


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for JPEG: transparency is composed onto white, palettes and greys converted."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode(image: Image.Image) -> bytes:
    for quality in QUALITIES:
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality, optimize=True)
        if out.tell() <= MAX_THUMBNAIL:
            return out.getvalue()
    return b""


def _render(path: Path) -> bytes:
    with Image.open(path) as opened:
        opened.draft("RGB", (MAX_SIDE * 2, MAX_SIDE * 2))
        width, height = opened.size
        if width * height > MAX_PIXELS:
            return b""
        image = ImageOps.exif_transpose(opened)
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        return _encode(_flatten(image))


def make_thumbnail(path: Path) -> bytes:
    """A JPEG preview of the image at ``path``, or ``b""`` if none can be made."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _render(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning) as exc:
        log.info("no thumbnail for %s: %s", path.name, exc)
        return b""
