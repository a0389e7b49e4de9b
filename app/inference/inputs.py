"""Client instances to validated model inputs: image decoding with pixel limits, resize
policies, and tabular rows by feature name. Pure numpy/PIL, so it runs in any thread."""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybase64
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import (
    BadRequest,
    ErrorItem,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMedia,
    did_you_mean,
    listing,
    quoted,
)
from app.inference.catalog import ImageSpec
from app.inference.png_inflate import rewrapped
from app.png_chunks import SIGNATURE as PNG_SIGNATURE

Image.MAX_IMAGE_PIXELS = None  # our own limit is checked from the header, before decoding

ACCEPTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_SIGNATURES = (PNG_SIGNATURE, b"\xff\xd8\xff")
_URLSAFE = str.maketrans("-_", "+/")
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.ASCII)


@dataclass(frozen=True)
class DecodedImage:
    """A submitted image and what the model sees of it."""

    image: Image.Image
    """The submitted image, EXIF orientation applied: RGBA where it has transparency, else RGB."""
    pixels: NDArray[np.float32]
    """3 x H x W in [0, 1] at the model's input size."""
    crop_box: tuple[float, float, float, float]
    """(left, top, right, bottom) of the submitted image that the model saw."""


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def image_bytes(instance: Any, index: int) -> bytes:
    """The file bytes of an image instance: `{"b64": ...}` or a `data:image/...;base64,` URI."""
    if isinstance(instance, dict) and set(instance) == {"b64"} and isinstance(instance["b64"], str):
        encoded = instance["b64"]
    elif isinstance(instance, str):
        match = _DATA_URI.match(instance)
        if match is None:
            raise InvalidInput(
                f"instance {index}: expected a data:image/...;base64, URI",
                [ErrorItem(("instances", index), "not a base64 data URI")],
            )
        mime = match.group(1) or ""
        if mime and not mime.startswith("image/"):
            raise UnsupportedMedia(f"instance {index}: unsupported media type {mime}")
        encoded = instance[match.end():]
    else:
        raise InvalidInput(
            f'instance {index}: an image instance is {{"b64": "..."}} or a data URI',
            [ErrorItem(("instances", index), "not an image instance")],
        )
    return decode_base64(encoded, index)


def decode_base64(encoded: str, index: int) -> bytes:
    """Base64 text to bytes: strict (SIMD, pybase64) first; then what the standard library's strict
    decoder also takes (`=` past a whole group, which pybase64 refuses), then the lenient forms."""
    try:
        return pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        # URL-safe alphabet, missing padding and line breaks are common from browsers and tools;
        # anything else outside the alphabet is an error (not silently dropped as b64decode does).
        lenient = "".join(encoded.split()).translate(_URLSAFE)
        try:
            return base64.b64decode(lenient + "=" * (-len(lenient) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"instance {index}: invalid base64") from None


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def image_size(data: bytes, max_pixels: int, where: str = "image") -> tuple[int, int]:
    """(width, height) from the header of PNG, JPEG or WebP bytes, no pixel decoded: 415 for other
    formats, 413 past `max_pixels`."""
    with _opened(data, max_pixels, where) as img:
        width, height = img.size
        return width, height


def _opened(data: bytes, max_pixels: int, where: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if _looks_like_image(data):
            raise BadRequest(f"{where}: corrupt or truncated image") from None
        raise UnsupportedMedia(f"{where}: not a PNG, JPEG or WebP image") from None
    except (OSError, ValueError) as exc:
        raise BadRequest(f"{where}: cannot read image: {exc}") from None
    if img.format not in ACCEPTED_FORMATS:
        raise UnsupportedMedia(f"{where}: {img.format} images are not accepted (PNG, JPEG, WebP)")
    width, height = img.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{where}: {width}x{height} = {width * height} pixels exceeds MAX_IMAGE_PIXELS={max_pixels}"
        )
    return img


def open_image(data: bytes, max_pixels: int, where: str = "image") -> Image.Image:
    """Decode PNG, JPEG or WebP bytes to RGB, or RGBA where the image has transparency;
    oversize images are refused from their header, before any pixel is decoded. A PNG's image
    data is inflated by ISA-L first where it can be (app/inference/png_inflate.py)."""
    img = _opened(rewrapped(data, max_pixels) or data, max_pixels, where)
    try:
        img.load()
        upright = ImageOps.exif_transpose(img) or img
        if upright.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale PNG: convert("RGB") would clip at 255 instead of scaling.
            wide = np.asarray(upright, dtype=np.float64) / 257.0
            upright = Image.fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8))
        mode = "RGBA" if has_alpha(upright) else "RGB"
        return upright if upright.mode == mode else upright.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"{where}: corrupt or truncated image ({exc})") from None


def composited(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB, transparent pixels composited onto `background` (the colour under them is not seen)."""
    if img.mode != "RGBA":
        return img if img.mode == "RGB" else img.convert("RGB")
    base = Image.new("RGBA", img.size, (*background, 255))
    return Image.alpha_composite(base, img).convert("RGB")


def model_pixels(img: Image.Image, spec: ImageSpec) -> tuple[NDArray[np.uint8], tuple[float, float, float, float]]:
    """Resize per the catalog's policy; return H x W x 3 RGB bytes at the model's input size and
    the region seen. Transparent pixels are composited onto the catalog's `background` first; an
    RGB image already at the input size is taken as it is (a resize to the same size is the identity)."""
    img = composited(img, spec.background)
    height, width = spec.size
    w, h = img.size
    if spec.resize == "stretch" or (w, h) == (width, height):
        box = (0.0, 0.0, float(w), float(h))
    else:
        scale = max(width / w, height / h)
        crop_w, crop_h = width / scale, height / scale
        left, top = (w - crop_w) / 2, (h - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
    if (w, h) != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8), box


ModelArray = NDArray[np.float32] | NDArray[np.uint8]
"""What a kind decodes a request into: N rows of the model's input (float32), or for images the RGB
bytes the model sees, N x H x W x 3 (uint8), made floats in [0, 1] by the model's worker
(`app.inference.engine`): a quarter of the bytes to move, and no per-image arithmetic on the event
loop. Both give the same floats (`model_input`'s division, correctly rounded either way)."""


def instance_shape(array: ModelArray) -> tuple[int, ...]:
    """One instance's shape as the model takes it: RGB bytes H x W x 3 are 3 x H x W."""
    if array.dtype == np.uint8:
        height, width, channels = array.shape[1:]
        return (channels, height, width)
    return tuple(array.shape[1:])


def model_input(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    """H x W x 3 RGB bytes as the model takes them: 3 x H x W in [0, 1]."""
    chw = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    np.divide(pixels.transpose(2, 0, 1), np.float32(255.0), out=chw)
    return chw


def model_view(img: Image.Image, spec: ImageSpec) -> tuple[NDArray[np.float32], tuple[float, float, float, float]]:
    """Resize per the catalog's policy; return CHW pixels in [0, 1] and the region seen
    (`model_pixels`, as the model takes them)."""
    pixels, box = model_pixels(img, spec)
    return model_input(pixels), box


def decode_image(instance: Any, index: int, spec: ImageSpec, max_pixels: int) -> DecodedImage:
    data = image_bytes(instance, index)
    return decode_image_bytes(data, index, spec, max_pixels)


def decode_image_bytes(data: bytes, index: int, spec: ImageSpec, max_pixels: int) -> DecodedImage:
    img = open_image(data, max_pixels, where=f"instance {index}")
    pixels, box = model_view(img, spec)
    return DecodedImage(img, pixels, box)


def pixels_image(pixels: NDArray[np.uint8], index: int, max_pixels: int) -> Image.Image:
    """An image given as decoded RGB pixels (H x W x 3 uint8, as the Open Inference Protocol's
    UINT8 tensors carry it), checked like a file's header."""
    height, width, channels = pixels.shape
    if channels != 3:
        raise InvalidInput(f"instance {index}: pixels must have 3 channels (RGB), got {channels}",
                           [ErrorItem(("instances", index), "not RGB")])
    if height * width > max_pixels:
        raise PayloadTooLarge(
            f"instance {index}: {width}x{height} = {width * height} pixels exceeds MAX_IMAGE_PIXELS={max_pixels}")
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))


def decode_pixels(pixels: NDArray[np.uint8], index: int, spec: ImageSpec, max_pixels: int) -> DecodedImage:
    """Decoded RGB pixels (`pixels_image`), resized like a decoded file."""
    img = pixels_image(pixels, index, max_pixels)
    array, box = model_view(img, spec)
    return DecodedImage(img, array, box)


def tabular_rows(instances: Sequence[Any], features: Sequence[str]) -> NDArray[np.float64]:
    """Rows by feature name (each named once, exactly as declared) or in declared order; every
    problem located, the first named in the detail (with the declared name probably meant)."""
    rows = np.zeros((len(instances), len(features)), dtype=np.float64)
    problems: list[tuple[str, ErrorItem]] = []
    index_of = {name: i for i, name in enumerate(features)}
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            for name in instance:
                if name not in index_of:
                    hint = did_you_mean(name, features)
                    problems.append((f"instance {i}: unknown feature {quoted(name)}{hint}",
                                     ErrorItem(("instances", i, name), f"unknown feature{hint}")))
            for name, j in index_of.items():
                if name not in instance:
                    problems.append((f"instance {i}: missing feature {quoted(name)}",
                                     ErrorItem(("instances", i, name), "missing")))
                else:
                    _put(rows, i, j, instance[name], ("instances", i, name), f"feature {quoted(name)}", problems)
        elif isinstance(instance, list):
            if len(instance) != len(features):
                msg = f"expected {len(features)} values, got {len(instance)}"
                problems.append((f"instance {i}: {msg}", ErrorItem(("instances", i), msg)))
                continue
            for j, value in enumerate(instance):
                _put(rows, i, j, value, ("instances", i, j), f"value {j} ({quoted(features[j])})", problems)
        else:
            msg = "a tabular instance is an object or an array"
            problems.append((f"instance {i}: {msg}", ErrorItem(("instances", i), msg)))
    if problems:
        raise listing(InvalidInput, problems)
    return rows


def _put(rows: NDArray[np.float64], i: int, j: int, value: Any, loc: tuple[str | int, ...], what: str,
         problems: list[tuple[str, ErrorItem]]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = "not a number"
    elif isinstance(value, float) and not math.isfinite(value):  # math.isfinite overflows on huge ints
        msg = "not a finite number"
    elif abs(value) > 3.0e38:
        msg = "out of range for float32"
    else:
        rows[i, j] = value
        return
    problems.append((f"instance {i}: {what} is {msg}", ErrorItem(loc, msg)))
