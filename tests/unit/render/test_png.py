"""PNG encoding and data URIs."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.render import data_uri, encode_png
from app.render.png import average_filtered


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_encode_png_round_trips(mode: str) -> None:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    pixels = rng.integers(0, 256, (517, 333, channels), dtype=np.uint8).squeeze()
    img = Image.fromarray(pixels, mode) if mode == "LA" else Image.fromarray(pixels)
    png = encode_png(img)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.format == "PNG"
        assert decoded.size == (333, 517) and decoded.mode == mode
        np.testing.assert_array_equal(np.asarray(decoded), pixels)  # lossless


@pytest.mark.parametrize(("mode", "stored"), [("P", "RGB"), ("PA", "RGBA"), ("1", "RGB"), ("CMYK", "RGB")])
def test_other_modes_are_stored_as_rgb_or_rgba(mode: str, stored: str) -> None:
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA")
    img = (source if stored == "RGBA" else source.convert("RGB")).convert(mode)
    with Image.open(io.BytesIO(encode_png(img))) as decoded:
        assert decoded.mode == stored
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(img.convert(stored)))


def test_compress_levels() -> None:
    rng = np.random.default_rng(2)
    img = Image.fromarray(np.repeat(rng.integers(0, 8, (200, 50, 3), dtype=np.uint8), 4, axis=1))
    sizes = [len(encode_png(img, compress_level=level)) for level in range(4)]
    assert sizes[3] < sizes[0] < 200 * 200 * 3  # 0: fastest, 3: smallest, all compressed
    for level, png in enumerate(encode_png(img, compress_level=level) for level in range(4)):
        with Image.open(io.BytesIO(png)) as decoded:
            np.testing.assert_array_equal(np.asarray(decoded), np.asarray(img), err_msg=f"level {level}")
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="compress_level"):
            encode_png(img, compress_level=bad)


def _average_rows(pixels: np.ndarray) -> np.ndarray:
    """PNG's "Average" filter written from the specification, byte by byte."""
    height = pixels.shape[0]
    bpp = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(height, -1).astype(int)
    out = np.zeros((height, rows.shape[1] + 1), np.uint8)
    out[:, 0] = 3
    for y in range(height):
        for x in range(rows.shape[1]):
            left = rows[y, x - bpp] if x >= bpp else 0
            up = rows[y - 1, x] if y else 0
            out[y, x + 1] = (rows[y, x] - (left + up) // 2) % 256
    return out


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (1, 5), (1, 4, 3), (2, 1, 3), (5, 1), (3, 5, 4), (7, 2, 2),
                                   (9, 13), (6, 5, 3), (2, 40, 4)])
def test_average_filter_follows_the_specification(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    pixels.flat[:3] = 255  # carries: 255 + 255 overflows a byte
    np.testing.assert_array_equal(average_filtered(pixels), _average_rows(pixels))


def test_chunks_and_their_checksums() -> None:
    png = encode_png(Image.new("RGB", (3, 2), (9, 8, 7)))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(png):
        (length,) = struct.unpack("!I", png[at:at + 4])
        kind, data = png[at + 4:at + 8], png[at + 8:at + 8 + length]
        (crc,) = struct.unpack("!I", png[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks.append((kind, data))
        at += 12 + length
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert chunks[0][1] == struct.pack("!IIBBBBB", 3, 2, 8, 2, 0, 0, 0)
    # each row: its filter (3), then each byte less the mean of its left and upper neighbours (0 outside)
    assert zlib.decompress(chunks[1][1]) == bytes([3, 9, 8, 7, 5, 4, 4, 5, 4, 4, 3, 5, 4, 4, 0, 0, 0, 0, 0, 0])


def test_data_uri_round_trips() -> None:
    png = encode_png(Image.new("RGBA", (3, 2), (1, 2, 3, 4)))
    uri = data_uri(png)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix):], validate=True) == png
    assert data_uri(b"abc", mime="image/webp") == "data:image/webp;base64,YWJj"
