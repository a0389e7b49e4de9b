"""PNG encoding and data URIs for embedding rendered images."""

from __future__ import annotations

import struct

import numpy as np
import pybase64
from isal import isal_zlib
from numpy.typing import NDArray
from PIL import Image

from app.png_chunks import SIGNATURE, chunk

COLOUR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}
"""PNG colour types of the modes written as they are (8 bits a sample); other modes are converted."""
AVERAGE = 3
"""The PNG row filter every row gets: each byte less the mean of its left and upper neighbours."""
MAX_LEVEL = isal_zlib.ISAL_BEST_COMPRESSION


def average_filtered(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The rows of an H x W (x C) image as PNG's "Average" filter writes them: H x (1 + W * C)
    bytes, each row its filter type then ``Raw(x) - floor((Raw(x - C) + Prior(x)) / 2)`` modulo
    256 (left of the first pixel and above the first row count as 0). The filter reads unfiltered
    bytes only, so the whole image is done at once, on its bytes as one run (left of a row's first
    pixel is then the end of the row above, put right after): 1.6x faster than on 2-D slices."""
    height = pixels.shape[0]
    bpp = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    width = rows.shape[1]
    flat = rows.ravel()
    mean = np.empty_like(flat)  # floor((left + up) / 2) = (left >> 1) + (up >> 1) + (left & up & 1)
    mean[:width] = 0
    np.right_shift(flat[:-width], 1, out=mean[width:])
    scratch = flat[:-bpp] >> 1
    mean[bpp:] += scratch
    both = scratch[: max(flat.size - width - bpp, 0)]
    np.bitwise_and(flat[width:-bpp], flat[bpp:-width], out=both)
    both &= 1
    mean[width + bpp:] += both
    by_row = mean.reshape(height, width)
    by_row[0, :bpp] = 0  # the first pixel of each row has nothing on its left
    np.right_shift(rows[:-1, :bpp], 1, out=by_row[1:, :bpp])
    out = np.empty((height, width + 1), np.uint8)
    out[:, 0] = AVERAGE
    np.subtract(rows, by_row, out=out[:, 1:])
    return out


def encode_png(img: Image.Image, compress_level: int = 1) -> bytes:
    """Encode ``img`` as an 8-bit PNG: L, LA, RGB or RGBA as it is, other modes as RGB (RGBA where
    they have transparency). Every row gets the "Average" filter; the rows are compressed by ISA-L
    (``compress_level`` 0-3, fastest to smallest).

    A PNG is three chunks around a zlib stream, so it is written here: libpng (imagecodecs) and
    Pillow both deflate with the system's zlib, which on the shapes overlays (128 x 128) took 0.45
    ms a picture with one fixed filter (libpng; Pillow, trying all five filters on every row, 3x
    that) against 0.21 ms for this, 6% larger (bench/results/history.md).
    """
    if not 0 <= compress_level <= MAX_LEVEL:
        raise ValueError(f"compress_level must be within 0..{MAX_LEVEL}, got {compress_level}")
    if img.mode not in COLOUR_TYPES:
        img = img.convert("RGBA" if img.has_transparency_data else "RGB")
    width, height = img.size
    header = struct.pack("!IIBBBBB", width, height, 8, COLOUR_TYPES[img.mode], 0, 0, 0)
    rows = average_filtered(np.asarray(img, dtype=np.uint8))
    return b"".join((SIGNATURE, chunk(b"IHDR", header), chunk(b"IDAT", isal_zlib.compress(rows, compress_level)),
                     chunk(b"IEND", b"")))


def data_uri(png: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,<payload>`` for embedding ``png`` directly in HTML or JSON."""
    return f"data:{mime};base64,{pybase64.b64encode_as_string(png)}"
