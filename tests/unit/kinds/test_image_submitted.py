"""app/kinds/image.py: a large submitted image travels as its encoded bytes, small ones as pixels;
either way the pictures drawn on it are the same."""

from __future__ import annotations

import base64
import io
import pickle

import numpy as np
from PIL import Image

from app.inference.catalog import ImageSpec
from app.kinds.image import LARGE_IMAGE_BYTES, Submitted, _decode_file, _render

BIG = 10**9
SPEC = ImageSpec(size=(32, 32), resize="stretch")
RENDER = {"colormap": "jet", "alpha": 0.5, "sign": "absolute", "max_size": 4096, "outlier_perc": 2.0}


def _png(width: int, height: int) -> bytes:
    rng = np.random.default_rng(width)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = 40  # half flat: compresses far below its decoded size
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_large_image_is_held_as_its_encoded_bytes() -> None:
    side = 1400  # 1400 x 1400 x 3 bytes decoded: over the threshold
    assert side * side * 3 > LARGE_IMAGE_BYTES
    raw = _png(side, side)
    seen = _decode_file(raw, 0, SPEC, BIG)
    assert seen.submitted.image is None and seen.submitted.encoded == raw
    assert seen.submitted.size == (side, side)
    assert len(pickle.dumps(seen)) < len(raw) + 64 * 1024  # the model's 32 x 32 view and the bytes
    kept = Submitted(np.asarray(seen.submitted.picture()), seen.submitted.crop_box, seen.submitted.size)
    assert kept.picture().size == (side, side)
    attribution = np.random.default_rng(1).normal(size=(3, 32, 32)).astype(np.float32)
    from_bytes, png_a = _render(seen.submitted, attribution, RENDER, frozenset({"overlay", "heatmap"}), want_png=True)
    from_pixels, png_b = _render(kept, attribution, RENDER, frozenset({"overlay", "heatmap"}), want_png=True)
    assert from_bytes == from_pixels and png_a == png_b and png_a is not None


def test_the_png_comes_back_apart_from_its_data_uri_only_when_asked() -> None:
    seen = _decode_file(_png(40, 40), 0, SPEC, BIG)
    attribution = np.random.default_rng(2).normal(size=(3, 32, 32)).astype(np.float32)
    fields, png = _render(seen.submitted, attribution, RENDER, frozenset({"overlay"}))
    assert png is None
    fields_png, png = _render(seen.submitted, attribution, RENDER, frozenset({"overlay"}), want_png=True)
    assert png is not None and fields == fields_png
    assert fields["overlay"] == "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def test_a_small_image_travels_as_its_pixels() -> None:
    raw = _png(200, 100)
    seen = _decode_file(raw, 0, SPEC, BIG)
    assert seen.submitted.image is not None and seen.submitted.encoded is None
    assert seen.submitted.size == (200, 100)
    resized = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR,
                                                                         reducing_gap=3.0))
    assert seen.model_bytes().dtype == np.uint8 and np.array_equal(seen.model_bytes(), resized)


def test_an_image_the_size_the_model_takes_is_sent_once() -> None:
    raw = _png(32, 32)
    seen = _decode_file(raw, 0, SPEC, BIG)
    assert seen.pixels is None  # the submitted image is what the model sees
    assert seen.submitted.crop_box == (0.0, 0.0, 32.0, 32.0) and seen.submitted.size == (32, 32)
    assert np.array_equal(seen.model_bytes(), np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
