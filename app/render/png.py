"""PNG encoding and data URIs for embedding rendered images."""

from __future__ import annotations

import base64
import io
import zlib

from PIL import Image


def encode_png(img: Image.Image, compress_level: int = 1) -> bytes:
    """Encode ``img`` as PNG with fast settings: low zlib level, run-length (``Z_RLE``) strategy.

    ``Z_RLE`` is ~20% faster than the default strategy on noisy maps, about as small on smooth ones.
    """
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be within 0..9, got {compress_level}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level, compress_type=zlib.Z_RLE)
    return buf.getvalue()


def data_uri(png: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,<payload>`` for embedding ``png`` directly in HTML or JSON."""
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"
