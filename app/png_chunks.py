"""PNG's container, shared by the encoder (app/render/png.py) and the decoder's rewrap of
submitted PNGs (app/inference/png_inflate.py): the signature, and chunks framed as their length,
type, data and the CRC-32 of type and data (ISA-L's, as fast as zlib's or faster)."""

from __future__ import annotations

import struct

from isal import isal_zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    """One chunk: `kind` (four letters) holding `data`."""
    return b"".join((struct.pack("!I", len(data)), kind, data,
                     struct.pack("!I", isal_zlib.crc32(data, isal_zlib.crc32(kind)))))
