"""PNG encoding and data URIs for embedding rendered images."""

from __future__ import annotations

import base64

import imagecodecs
import numpy as np
from imagecodecs import PNG
from PIL import Image


def encode_png(img: Image.Image, compress_level: int = 1) -> bytes:
    """Encode ``img`` as PNG with fast settings: zlib level 1, run-length (``Z_RLE``) strategy and
    the "average" row filter for every row.

    libpng through imagecodecs, not Pillow: Pillow tries all five row filters on every row (its
    encoder has no filter option), which is about 70% of its encode time on an overlay; one fixed
    filter is 3x faster and, on overlays, as small (bench/results/history.md).
    """
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be within 0..9, got {compress_level}")
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA" if img.has_transparency_data else "RGB")
    png = imagecodecs.png_encode(np.asarray(img), compress_level, strategy=PNG.STRATEGY.RLE,
                                 filter=PNG.FILTER.AVG)
    return png if isinstance(png, bytes) else bytes(png)


def data_uri(png: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,<payload>`` for embedding ``png`` directly in HTML or JSON."""
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"
