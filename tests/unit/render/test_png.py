"""PNG encoding and data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from app.render import data_uri, encode_png


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


def test_compress_level() -> None:
    img = Image.new("RGB", (200, 200), (10, 200, 30))
    assert len(encode_png(img, compress_level=9)) <= len(encode_png(img, compress_level=0))
    with pytest.raises(ValueError):
        encode_png(img, compress_level=10)


def test_data_uri_round_trips() -> None:
    png = encode_png(Image.new("RGBA", (3, 2), (1, 2, 3, 4)))
    uri = data_uri(png)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix):], validate=True) == png
    assert data_uri(b"abc", mime="image/webp") == "data:image/webp;base64,YWJj"
