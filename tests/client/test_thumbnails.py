"""Thumbnails: small JPEGs within the limits, or none at all; never an error."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from mailslot.client.thumbnails import MAX_PIXELS, MAX_SIDE, make_thumbnail
from mailslot.protocol.attachment import MAX_THUMBNAIL


def preview(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and len(data) <= MAX_THUMBNAIL
    return image


def test_a_transparent_png_is_flattened_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGBA", (600, 300), (0, 0, 0, 0)).save(path)
    with preview(make_thumbnail(path)) as image:
        assert image.size == (MAX_SIDE, 80) and image.getpixel((10, 10)) == (255, 255, 255)


def test_a_small_image_is_not_enlarged(tmp_path: Path) -> None:
    path = tmp_path / "small.gif"
    Image.new("P", (20, 10)).save(path)
    with preview(make_thumbnail(path)) as image:
        assert image.size == (20, 10)


def test_a_large_jpeg_decodes_at_a_fraction_of_its_size(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (6000, 4000), (10, 200, 30)).save(path, quality=50)  # 24 MP > MAX_PIXELS
    assert MAX_PIXELS < 6000 * 4000
    with preview(make_thumbnail(path)) as image:
        assert image.size in ((MAX_SIDE, 106), (MAX_SIDE, 107))


def test_too_many_pixels_or_not_an_image_means_no_thumbnail(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    Image.new("1", (4000, 3001)).save(huge)  # cheap to write, 12 MP to decode
    assert make_thumbnail(huge) == b""
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff" + bytes(1000))
    assert make_thumbnail(junk) == b""
    assert make_thumbnail(tmp_path / "missing.png") == b""
