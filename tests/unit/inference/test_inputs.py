"""Input decoding: image bytes and URIs, pixel limits from the header, resize policies, tabular rows."""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import zlib
from typing import Any

import numpy as np
import pybase64
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from app.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMedia
from app.inference.catalog import ImageSpec
from app.inference.inputs import (
    decode_image,
    decode_image_bytes,
    decode_pixels,
    image_bytes,
    model_input,
    model_pixels,
    model_view,
    open_image,
    tabular_rows,
)

BIG = 10**9


def encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def smooth_image(width: int, height: int) -> Image.Image:
    """Low-frequency RGB content, so a resize is well defined up to rounding."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    arr = np.stack([
        xx / width * 255,
        yy / height * 255,
        127 + 100 * np.sin(xx / 20) * np.cos(yy / 15),
    ], axis=-1)
    return Image.fromarray(arr.round().astype(np.uint8))


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit greyscale PNG; 20000 x 20000 compresses to about 50 KB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    rows_per_block = 1000
    block = row * rows_per_block
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(block) for _ in range(height // rows_per_block)]
    parts.append(compressor.compress(row * (height % rows_per_block)))
    parts.append(compressor.flush())
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    return huge_bilevel_png(20000, 20000)


# ---------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_lossless_formats_decode_exactly(fmt: str) -> None:
    img = noise_image(23, 17)
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    out = open_image(encode(img, fmt, **kwargs), max_pixels=BIG)
    assert out.mode == "RGB"
    assert out.size == (23, 17)
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_jpeg_decodes_close_to_the_original() -> None:
    img = smooth_image(40, 30)
    out = open_image(encode(img, "JPEG", quality=95), max_pixels=BIG)
    assert out.mode == "RGB"
    assert out.size == (40, 30)
    diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(img, dtype=np.int16))
    assert diff.mean() < 3


@pytest.mark.parametrize(("mode", "read_as"), [("L", "RGB"), ("LA", "RGBA"), ("P", "RGB"), ("RGBA", "RGBA"),
                                                ("1", "RGB")])
def test_other_png_modes_become_rgb_or_rgba_with_transparency(mode: str, read_as: str) -> None:
    img = Image.new(mode, (7, 5))
    out = open_image(encode(img, "PNG"), max_pixels=BIG)
    assert (out.mode, out.size) == (read_as, (7, 5))


def test_transparent_pixels_are_composited_onto_the_background() -> None:
    """The colour hidden under transparent pixels never reaches the model."""
    views = []
    for hidden in ((0, 0, 0), (255, 0, 255)):
        img = Image.new("RGBA", (8, 8), (*hidden, 0))
        img.paste((30, 60, 90, 255), (2, 2, 6, 6))
        img.putpixel((0, 7), (30, 60, 90, 128))  # half transparent: half its colour, half the background
        decoded = decode_image_bytes(encode(img, "PNG"), 0, ImageSpec(size=(8, 8), resize="stretch",
                                                                      background=(255, 255, 255)), BIG)
        assert decoded.image.mode == "RGBA"  # the overlay keeps the transparency
        views.append(decoded.pixels)
    np.testing.assert_array_equal(views[0], views[1])
    assert views[0][:, 0, 0].tolist() == [1.0, 1.0, 1.0]  # white where transparent
    np.testing.assert_allclose(views[0][:, 7, 0], [(30 + 255) / 2 / 255, (60 + 255) / 2 / 255, (90 + 255) / 2 / 255],
                               atol=1.5 / 255)
    np.testing.assert_allclose(views[0][:, 3, 3], [30 / 255, 60 / 255, 90 / 255])
    grey = decode_image_bytes(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), 0,
                              ImageSpec(size=(8, 8), background=(0, 128, 255)), BIG)
    np.testing.assert_allclose(grey.pixels[:, 4, 4], [0.0, 128 / 255, 1.0])


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped() -> None:
    values = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    out = open_image(encode(Image.fromarray(values), "PNG"), max_pixels=BIG)
    expected = np.rint(values / 257.0)
    got = np.asarray(out)
    for channel in range(3):
        assert np.array_equal(got[..., channel], expected)


def test_exif_orientation_is_applied() -> None:
    img = noise_image(30, 10)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = open_image(encode(img, "JPEG", exif=exif.tobytes()), max_pixels=BIG)
    assert out.size == (10, 30)


def test_gif_is_unsupported() -> None:
    data = encode(Image.new("RGB", (8, 8), "red"), "GIF")
    with pytest.raises(UnsupportedMedia, match="GIF"):
        open_image(data, max_pixels=BIG)


def test_bmp_is_unsupported() -> None:
    with pytest.raises(UnsupportedMedia):
        open_image(encode(Image.new("RGB", (8, 8)), "BMP"), max_pixels=BIG)


@pytest.mark.parametrize("data", [b"hello, world", b"", b"{\"b64\": \"x\"}", b"\x00" * 64])
def test_non_image_bytes_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMedia):
        open_image(data, max_pixels=BIG)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_image_is_a_bad_request(fmt: str, keep: float) -> None:
    data = encode(noise_image(64, 48), fmt)
    with pytest.raises(BadRequest, match="instance 3"):
        open_image(data[: int(len(data) * keep)], max_pixels=BIG, where="instance 3")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_truncated_inside_the_header_is_a_bad_request(fmt: str) -> None:
    data = encode(noise_image(16, 16), fmt)
    with pytest.raises(BadRequest):
        open_image(data[:20], max_pixels=BIG)


def test_huge_dimensions_are_refused_from_the_header(huge_png: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(huge_png) < 200_000
    header = Image.open(io.BytesIO(huge_png))
    assert header.size == (20000, 20000)

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(PayloadTooLarge, match="20000x20000"):
        open_image(huge_png, max_pixels=40_000_000)


def test_pixel_limit_is_inclusive_and_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(noise_image(10, 6), "PNG")
    assert open_image(data, max_pixels=60).size == (10, 6)

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(PayloadTooLarge, match="MAX_IMAGE_PIXELS=59"):
        open_image(data, max_pixels=59)


# ---------------------------------------------------------------------------------------------
# Instances: {"b64"} and data URIs


def test_b64_object_and_data_uris() -> None:
    data = encode(noise_image(5, 4), "PNG")
    b64 = base64.b64encode(data).decode()
    assert image_bytes({"b64": b64}, 0) == data
    assert image_bytes(f"data:image/png;base64,{b64}", 0) == data
    assert image_bytes(f"data:image/jpeg;base64,{b64}", 0) == data  # the bytes decide the format
    assert image_bytes(f"data:;base64,{b64}", 0) == data
    assert image_bytes(f"data:image/png;charset=binary;base64,{b64}", 0) == data


def test_url_safe_unpadded_and_wrapped_base64_are_accepted() -> None:
    data = bytes(range(256)) * 3 + b"x"
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert "-" in urlsafe or "_" in urlsafe
    assert image_bytes({"b64": urlsafe}, 0) == data
    wrapped = base64.encodebytes(data).decode()
    assert "\n" in wrapped
    assert image_bytes({"b64": wrapped}, 0) == data


@pytest.mark.parametrize("encoded", ["%%%%", "not base64 at all!!", "a", "ab=c", "é", "aGVsbG8=!"])
def test_invalid_base64_is_a_bad_request(encoded: str) -> None:
    with pytest.raises(BadRequest, match="instance 2: invalid base64"):
        image_bytes({"b64": encoded}, 2)
    with pytest.raises(BadRequest, match="invalid base64"):
        image_bytes("data:image/png;base64," + encoded, 2)


def _standard_library(encoded: str) -> bytes | None:
    """What the decoder took before the SIMD one: the standard library's strict decoder, then the
    lenient forms (URL-safe, no padding, whitespace); None where both refuse."""
    lenient = "".join(encoded.split()).translate(str.maketrans("-_", "+/"))
    for text in (encoded, lenient + "=" * (-len(lenient) % 4)):
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


@pytest.mark.parametrize("encoded", ["YWJj====", "+b0/=", "YWJjZGVm=="])
def test_padding_past_a_whole_group_is_still_accepted(encoded: str) -> None:
    """pybase64 refuses '=' after a complete group; the standard library, and so this service,
    takes it."""
    with pytest.raises(binascii.Error):
        pybase64.b64decode(encoded, validate=True)
    assert image_bytes({"b64": encoded}, 0) == base64.b64decode(encoded, validate=True)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ABCab019+/=-_ \n\r\té%", max_size=24))
def test_base64_accepts_and_refuses_what_the_standard_library_does(encoded: str) -> None:
    expected = _standard_library(encoded)
    if expected is None:
        with pytest.raises(BadRequest, match="invalid base64"):
            image_bytes({"b64": encoded}, 0)
    else:
        assert image_bytes({"b64": encoded}, 0) == expected


def test_large_base64_round_trips() -> None:
    data = np.random.default_rng(3).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    assert image_bytes({"b64": base64.b64encode(data).decode()}, 0) == data


def test_non_image_data_uri_is_unsupported() -> None:
    with pytest.raises(UnsupportedMedia, match="text/plain"):
        image_bytes("data:text/plain;base64,aGVsbG8=", 0)


@pytest.mark.parametrize("instance", [
    "iVBORw0KGgo=",  # bare base64, no data: prefix
    "data:image/png,rawbytes",  # not base64
    "http://example.com/cat.png",
    {"b64": 5},
    {"b64": "aGVsbG8=", "extra": 1},
    {"url": "x"},
    [1, 2, 3],
    None,
    7,
])
def test_malformed_image_instance_is_invalid_input(instance: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        image_bytes(instance, 4)
    assert [item.loc for item in info.value.errors] == [("instances", 4)]


def test_decode_image_end_to_end() -> None:
    img = noise_image(30, 20)
    uri = "data:image/webp;base64," + base64.b64encode(encode(img, "WEBP", lossless=True)).decode()
    spec = ImageSpec(size=(20, 30), resize="stretch")
    decoded = decode_image(uri, 0, spec, max_pixels=BIG)
    assert decoded.crop_box == (0.0, 0.0, 30.0, 20.0)
    assert decoded.pixels.dtype == np.float32
    assert decoded.pixels.shape == (3, 20, 30)
    expected = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    assert np.allclose(decoded.pixels, expected, atol=1e-6)
    assert decoded.image.size == (30, 20)


def test_decode_image_bytes_applies_the_pixel_limit(huge_png: bytes) -> None:
    with pytest.raises(PayloadTooLarge, match="instance 1"):
        decode_image_bytes(huge_png, 1, ImageSpec(), max_pixels=40_000_000)


# ---------------------------------------------------------------------------------------------
# Resize policies


def _pil_reference(img: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Independent reference: crop, then a plain bilinear resize to (height, width)."""
    height, width = size
    out = img.crop(box).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32).transpose(2, 0, 1) / 255.0


@pytest.mark.parametrize(("image_size", "model_size", "box"), [
    ((160, 90), (40, 40), (35, 0, 125, 90)),  # landscape: centre square
    ((160, 90), (60, 60), (35, 0, 125, 90)),
    ((90, 160), (45, 45), (0, 35, 90, 125)),  # portrait
    ((120, 60), (40, 60), (15, 0, 105, 60)),  # wide model input: keeps its 3:2 aspect
    ((100, 100), (30, 60), (0, 25, 100, 75)),  # square image, wide model input
])
def test_shorter_side_crop(image_size: tuple[int, int], model_size: tuple[int, int],
                           box: tuple[int, int, int, int]) -> None:
    img = smooth_image(*image_size)
    pixels, crop_box = model_view(img, ImageSpec(size=model_size, resize="shorter_side_crop"))
    assert crop_box == pytest.approx(box)
    assert pixels.shape == (3, *model_size)
    assert pixels.dtype == np.float32
    assert pixels.flags["C_CONTIGUOUS"]
    reference = _pil_reference(img, box, model_size)
    # Equal up to 8-bit rounding inside; at the crop's border PIL's box resize may read just outside.
    level = 1.0 / 255
    assert np.abs(pixels - reference)[:, 2:-2, 2:-2].max() <= level + 1e-6
    assert np.abs(pixels - reference).max() <= 2 * level + 1e-6
    # ... and that tolerance does tell crops apart: a box 6 pixels off is far from it.
    left, top, right, bottom = box
    dx, dy = (6, 0) if right - left < image_size[0] else (0, 6)
    shifted = _pil_reference(img, (left - dx, top - dy, right - dx, bottom - dy), model_size)
    assert np.abs(pixels - shifted).max() > 4 * level


def test_shorter_side_crop_at_scale_one_is_an_exact_centre_crop() -> None:
    img = noise_image(64, 32)
    pixels, box = model_view(img, ImageSpec(size=(32, 32), resize="shorter_side_crop"))
    assert box == (16.0, 0.0, 48.0, 32.0)
    assert np.array_equal(pixels, _pil_reference(img, (16, 0, 48, 32), (32, 32)))


@pytest.mark.parametrize(("image_size", "model_size"), [
    ((160, 90), (32, 64)),
    ((160, 90), (48, 48)),
    ((50, 120), (60, 20)),
])
def test_stretch_uses_the_whole_image(image_size: tuple[int, int], model_size: tuple[int, int]) -> None:
    img = smooth_image(*image_size)
    pixels, box = model_view(img, ImageSpec(size=model_size, resize="stretch"))
    w, h = image_size
    assert box == (0.0, 0.0, float(w), float(h))
    assert pixels.shape == (3, *model_size)
    assert np.array_equal(pixels, _pil_reference(img, (0, 0, w, h), model_size))


@pytest.mark.parametrize("resize", ["stretch", "shorter_side_crop"])
def test_an_image_at_the_input_size_is_taken_as_it_is(resize: str) -> None:
    img = noise_image(40, 24)
    pixels, box = model_view(img, ImageSpec(size=(24, 40), resize=resize))  # type: ignore[arg-type]
    assert box == (0.0, 0.0, 40.0, 24.0)
    assert np.array_equal(pixels, _pil_reference(img, (0, 0, 40, 24), (24, 40)))  # what a resize gives
    raw, _ = model_pixels(img, ImageSpec(size=(24, 40), resize=resize))  # type: ignore[arg-type]
    assert raw.dtype == np.uint8 and np.array_equal(raw, np.asarray(img))
    assert np.array_equal(model_input(raw), pixels)


def test_pixels_are_in_unit_range() -> None:
    img = Image.fromarray(np.array([[[0, 255, 128]] * 9] * 9, dtype=np.uint8))
    pixels, _ = model_view(img, ImageSpec(size=(8, 8)))
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert np.allclose(pixels[:, 4, 4], [0.0, 1.0, 128 / 255])


# ---------------------------------------------------------------------------------------------
# Tabular rows

FEATURES = ["age", "income", "visits"]


def test_rows_by_name_in_any_order_and_by_array() -> None:
    rows = tabular_rows(
        [{"visits": 3, "age": 41.5, "income": -2}, [1, 2.5, 0], {"age": 0, "income": 1e30, "visits": 10**20}],
        FEATURES,
    )
    assert rows.dtype == np.float64
    assert rows.tolist() == [[41.5, -2.0, 3.0], [1.0, 2.5, 0.0], [0.0, 1e30, 1e20]]


def test_empty_instances_give_an_empty_matrix() -> None:
    assert tabular_rows([], FEATURES).shape == (0, 3)


def _locs(exc: InvalidInput) -> list[tuple[str | int, ...]]:
    return [item.loc for item in exc.errors]


def test_unknown_and_missing_features_are_all_reported() -> None:
    with pytest.raises(InvalidInput) as info:
        tabular_rows([{"age": 1, "income": 2, "visits": 3}, {"age": 1, "colour": "red"}], FEATURES)
    errors = {(item.loc, item.msg) for item in info.value.errors}
    assert errors == {
        (("instances", 1, "colour"), "unknown feature"),
        (("instances", 1, "income"), "missing"),
        (("instances", 1, "visits"), "missing"),
    }
    assert "instance 1" in info.value.detail
    assert "(and 2 more)" in info.value.detail


def test_missing_feature_detail_names_it() -> None:
    with pytest.raises(InvalidInput) as info:
        tabular_rows([{"age": 1, "income": 2}], FEATURES)
    assert info.value.detail == "instance 0: missing feature 'visits'"
    assert _locs(info.value) == [("instances", 0, "visits")]


@pytest.mark.parametrize(("value", "msg"), [
    (math.nan, "not a finite number"),
    (math.inf, "not a finite number"),
    (-math.inf, "not a finite number"),
    (True, "not a number"),
    (False, "not a number"),
    ("3.5", "not a number"),
    (None, "not a number"),
    ([1], "not a number"),
    ({"v": 1}, "not a number"),
    (1e39, "out of range for float32"),
    (10**400, "out of range for float32"),
    (-(10**400), "out of range for float32"),
])
def test_bad_values_are_located(value: Any, msg: str) -> None:
    with pytest.raises(InvalidInput) as by_name:
        tabular_rows([{"age": 1, "income": value, "visits": 3}], FEATURES)
    assert [(item.loc, item.msg) for item in by_name.value.errors] == [(("instances", 0, "income"), msg)]
    with pytest.raises(InvalidInput) as by_array:
        tabular_rows([[1, 2, 3], [1, value, 3]], FEATURES)
    assert [(item.loc, item.msg) for item in by_array.value.errors] == [(("instances", 1, 1), msg)]


def test_wrong_array_length_and_wrong_instance_type() -> None:
    with pytest.raises(InvalidInput) as info:
        tabular_rows([[1, 2], [1, 2, 3, 4], "age=1", 5, None, [1, 2, 3]], FEATURES)
    assert _locs(info.value) == [("instances", i) for i in range(5)]
    assert info.value.errors[0].msg == "expected 3 values, got 2"


def test_several_bad_values_in_one_row_are_all_reported() -> None:
    with pytest.raises(InvalidInput) as info:
        tabular_rows([[math.nan, "x", True]], FEATURES)
    assert _locs(info.value) == [("instances", 0, 0), ("instances", 0, 1), ("instances", 0, 2)]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=2**1100) | st.integers(max_value=-(2**1100)) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_feature_names = st.lists(st.text(max_size=6), min_size=0, max_size=4, unique=True)


@st.composite
def _instances(draw: st.DrawFn) -> tuple[list[Any], list[str]]:
    features = draw(_feature_names)
    plausible = st.one_of(
        _json,
        st.lists(_json, min_size=len(features), max_size=len(features)),
        st.fixed_dictionaries({name: _json for name in features}),
        st.dictionaries(st.sampled_from(features) if features else st.text(max_size=6), _json, max_size=5),
    )
    return draw(st.lists(plausible, max_size=4)), features


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_instances())
def test_tabular_rows_raises_nothing_but_invalid_input(case: tuple[list[Any], list[str]]) -> None:
    instances, features = case
    try:
        rows = tabular_rows(instances, features)
    except InvalidInput as exc:
        assert exc.errors
        assert exc.detail
        for item in exc.errors:
            assert item.loc[0] == "instances"
            assert isinstance(item.loc[1], int) and 0 <= item.loc[1] < len(instances)
        exc.problem()  # renders
    else:
        assert rows.shape == (len(instances), len(features))
        assert np.isfinite(rows).all()
        assert (np.abs(rows) <= 3.0e38).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-1e38, 1e38).map(lambda v: float(np.float32(v)))
                         | st.integers(-(2**31), 2**31), min_size=3, max_size=3), max_size=5))
def test_valid_rows_round_trip(values: list[list[float]]) -> None:
    by_array = tabular_rows(values, FEATURES)
    by_name = tabular_rows([dict(zip(FEATURES, row, strict=True)) for row in values], FEATURES)
    expected = np.array(values, dtype=np.float64).reshape(len(values), 3)
    assert np.array_equal(by_array, expected)
    assert np.array_equal(by_name, expected)


@pytest.mark.parametrize("resize", ["stretch", "shorter_side_crop"])
def test_pixels_decode_like_the_same_image_as_a_file(resize: str) -> None:
    """The Open Inference Protocol's UINT8 pixels take the path of a decoded file from the resize on."""
    image = smooth_image(77, 50)
    spec = ImageSpec(size=(32, 40), resize=resize)  # type: ignore[arg-type]
    from_file = decode_image_bytes(encode(image, "PNG"), 0, spec, BIG)
    from_pixels = decode_pixels(np.asarray(image, dtype=np.uint8), 0, spec, BIG)
    assert np.array_equal(from_file.pixels, from_pixels.pixels)
    assert from_file.crop_box == from_pixels.crop_box
    assert np.array_equal(np.asarray(from_pixels.image), np.asarray(image))


def test_pixels_must_be_rgb_and_within_the_pixel_limit() -> None:
    with pytest.raises(InvalidInput, match="instance 2: pixels must have 3 channels"):
        decode_pixels(np.zeros((4, 4, 4), dtype=np.uint8), 2, ImageSpec(size=(8, 8)), BIG)
    decode_pixels(np.zeros((4, 5, 3), dtype=np.uint8), 0, ImageSpec(size=(8, 8)), 20)
    with pytest.raises(PayloadTooLarge, match="instance 1: 5x4 = 20 pixels exceeds MAX_IMAGE_PIXELS=19"):
        decode_pixels(np.zeros((4, 5, 3), dtype=np.uint8), 1, ImageSpec(size=(8, 8)), 19)
