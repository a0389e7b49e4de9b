"""A submitted PNG's image data inflated by ISA-L before Pillow reads it.

Pillow decodes a PNG's image data with the system's zlib, whose inflate is most of the time a
PNG takes to decode (a 128 x 128 RGB PNG of 25 kB: 150 of 290 µs). `rewrapped(data)` inflates the
data with ISA-L (`isal`, 2x faster) and gives back the same PNG with its image data stored, not
deflated (one IDAT chunk of zlib's "stored" blocks): Pillow then only copies it before undoing
the row filters and everything else as before (the same pixels, mode and info: every other chunk
is kept byte for byte). Anything this does not expect (an interlaced or animated PNG, data that
does not inflate to exactly the rows the header announces, a malformed chunk) gives None, and the
PNG goes to Pillow as it was, so its errors and its tolerances are unchanged.
"""

from __future__ import annotations

import struct
import zlib

from isal import isal_zlib

from app.png_chunks import SIGNATURE, chunk

REWRAP_MAX_BYTES = 16 << 20
"""Larger image data goes to Pillow as it is: the stored copy would be held beside the inflated one."""
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel by PNG colour type (grey, RGB, palette, grey + alpha, RGBA)."""
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ANIMATION = (b"acTL", b"fcTL", b"fdAT")


def filtered_size(ihdr: bytes, max_pixels: int) -> int | None:
    """The bytes a non-interlaced PNG's image data inflates to (each row its filter byte, then
    its packed samples), from the IHDR chunk's data; None for what this module leaves to Pillow
    (among them images of more than `max_pixels`, which Pillow's header check refuses)."""
    if len(ihdr) != 13:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr)
    if colour not in _SAMPLES or depth not in _DEPTHS[colour] or (compression, filtering, interlace) != (0, 0, 0):
        return None
    if width == 0 or height == 0 or width * height > max_pixels:
        return None
    return int(height) * (1 + (int(width) * _SAMPLES[colour] * int(depth) + 7) // 8)


def _chunks(data: bytes) -> list[tuple[bytes, int, int]] | None:
    """(type, start, end) of each chunk after the signature, up to IEND; None if one is cut off."""
    out = []
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return None
        out.append((kind, pos, end))
        if kind == b"IEND":
            return out
        pos = end
    return None


def rewrapped(data: bytes, max_pixels: int) -> bytes | None:
    """`data` (a PNG) with its image data inflated here and stored uncompressed, or None where
    Pillow should read it as it is."""
    if not data.startswith(SIGNATURE):
        return None
    chunks = _chunks(data)
    if not chunks or chunks[0][0] != b"IHDR":
        return None
    _, start, end = chunks[0]
    expected = filtered_size(data[start + 8:end - 4], max_pixels)
    if expected is None or expected > REWRAP_MAX_BYTES:
        return None
    idats = [i for i, (kind, _, _) in enumerate(chunks) if kind == b"IDAT"]
    if not idats or idats[-1] - idats[0] + 1 != len(idats) or any(kind in _ANIMATION for kind, _, _ in chunks):
        return None
    first, last = chunks[idats[0]], chunks[idats[-1]]
    compressed = b"".join(data[s + 8:e - 4] for _, s, e in (chunks[i] for i in idats))
    inflater = isal_zlib.decompressobj()
    try:
        rows = inflater.decompress(compressed, expected)
    except Exception:  # isal's IsalError (its type stub declares an instance, not a class)
        return None
    if len(rows) != expected or not inflater.eof or inflater.unused_data:
        return None
    return b"".join((data[:first[1]], chunk(b"IDAT", zlib.compress(rows, 0)), data[last[2]:]))
