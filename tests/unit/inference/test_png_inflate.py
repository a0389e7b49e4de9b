"""A PNG rewrapped with its image data stored reads as the same image in Pillow; what the rewrap
does not expect is left to Pillow as it is."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from app.errors import BadRequest
from app.inference import inputs
from app.inference.inputs import open_image
from app.inference.png_inflate import REWRAP_MAX_BYTES, filtered_size, rewrapped
from app.png_chunks import SIGNATURE

MAX_PIXELS = 10**8


def _png(img: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", **params)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _handmade(width: int, height: int, depth: int, colour: int, rows: bytes, interlace: int = 0,
              idat_parts: int = 1, after_stream: bytes = b"") -> bytes:
    """A PNG written chunk by chunk: the image data as given (rows with their filter bytes),
    deflated and cut into `idat_parts` IDAT chunks."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    stream = zlib.compress(rows, 6) + after_stream
    step = -(-len(stream) // idat_parts)
    idats = b"".join(_chunk(b"IDAT", stream[i:i + step]) for i in range(0, len(stream), step))
    return SIGNATURE + _chunk(b"IHDR", ihdr) + idats + _chunk(b"IEND", b"")


def _same_image(original: bytes, rewritten: bytes) -> None:
    with Image.open(io.BytesIO(original)) as a, Image.open(io.BytesIO(rewritten)) as b:
        a.load()
        b.load()
        assert (a.mode, a.size, a.info) == (b.mode, b.size, b.info)
        assert np.array_equal(np.asarray(a), np.asarray(b))
        if a.mode == "P":
            assert a.getpalette() == b.getpalette()


def _stored_idat(png: bytes) -> bytes:
    """The one IDAT chunk's zlib stream of a rewrapped PNG."""
    pos = len(SIGNATURE)
    found = []
    while pos < len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        if png[pos + 4:pos + 8] == b"IDAT":
            found.append(png[pos + 8:pos + 8 + length])
            assert struct.unpack_from(">I", png, pos + 8 + length)[0] == zlib.crc32(b"IDAT" + found[-1])
        pos += 12 + length
    assert len(found) == 1
    return found[0]


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(MODES), width=st.integers(1, 70), height=st.integers(1, 40),
       level=st.integers(0, 9), optimize=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_any_pillow_png_reads_the_same(mode: str, width: int, height: int, level: int, optimize: bool,
                                       seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values (divided down) give palettes and long runs as well as noise.
    noise = rng.integers(0, 256, size=(height, width, 4), dtype=np.uint8)
    values = (noise // int(rng.integers(1, 64))).astype(np.uint8)
    if mode == "I;16":
        img = Image.fromarray(values[..., 0].astype(np.uint16) * 257)
    else:
        img = Image.fromarray(values).convert(mode)
    original = _png(img, compress_level=level, optimize=optimize)
    rewritten = rewrapped(original, MAX_PIXELS)
    assert rewritten is not None
    _same_image(original, rewritten)
    stream = _stored_idat(rewritten)
    assert stream[1] & 0x20 == 0  # no preset dictionary
    assert len(zlib.decompress(stream)) == filtered_size(original[16:29], MAX_PIXELS)


def test_every_other_chunk_is_kept_byte_for_byte() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "before the image data")
    img = Image.new("P", (9, 7))
    img.putpalette([i % 256 for i in range(768)])
    img.info["transparency"] = 3
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: open_image turns it upright
    original = _png(img, pnginfo=info, exif=exif.tobytes(), transparency=3)
    rewritten = rewrapped(original, MAX_PIXELS)
    assert rewritten is not None
    _same_image(original, rewritten)
    kept = original.replace(original[original.index(b"IDAT") - 4:], b"")
    assert rewritten.startswith(kept)
    assert rewritten.endswith(_chunk(b"IEND", b""))
    assert np.array_equal(np.asarray(open_image(original, MAX_PIXELS)), np.asarray(open_image(rewritten, MAX_PIXELS)))
    assert open_image(original, MAX_PIXELS).size == (7, 9)


@pytest.mark.parametrize(("depth", "colour", "width", "row_bytes"), [
    (1, 0, 10, 2), (2, 0, 5, 2), (4, 3, 3, 2), (8, 3, 3, 3), (16, 0, 3, 6), (8, 2, 3, 9), (16, 2, 3, 18),
    (8, 4, 3, 6), (16, 4, 3, 12), (8, 6, 3, 12), (16, 6, 3, 24),
])
def test_handmade_depths_and_colour_types(depth: int, colour: int, width: int, row_bytes: int) -> None:
    height = 4
    assert filtered_size(struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0), MAX_PIXELS) == \
        height * (1 + row_bytes)
    rng = np.random.default_rng(depth * 10 + colour)
    rows = b"".join(bytes([f]) + rng.integers(0, 256, row_bytes, dtype=np.uint8).tobytes() for f in (0, 1, 2, 4))
    png = _handmade(width, height, depth, colour, rows, idat_parts=3)
    if colour == 3:  # a palette image needs its PLTE before the image data
        at = png.index(b"IDAT") - 4
        png = png[:at] + _chunk(b"PLTE", bytes(range(48))) + png[at:]
    rewritten = rewrapped(png, MAX_PIXELS)
    assert rewritten is not None
    assert zlib.decompress(_stored_idat(rewritten)) == rows
    _same_image(png, rewritten)


def _rgb_rows(width: int = 4, height: int = 3) -> bytes:
    return b"".join(b"\x00" + bytes(range(i, i + 3 * width)) for i in range(height))


LEFT_TO_PILLOW = {
    "not a PNG": b"\xff\xd8\xff\xe0" + b"\x00" * 64,
    "interlaced": _handmade(4, 3, 8, 2, _rgb_rows(), interlace=1),
    "fewer rows than the header": _handmade(4, 4, 8, 2, _rgb_rows()),
    "more rows than the header": _handmade(4, 2, 8, 2, _rgb_rows()),
    "bytes after the zlib stream": _handmade(4, 3, 8, 2, _rgb_rows(), after_stream=b"\x00\x01"),
    "a corrupt stream": _handmade(4, 3, 8, 2, _rgb_rows()).replace(zlib.compress(_rgb_rows(), 6)[4:8], b"\xff" * 4),
    "cut off": _handmade(4, 3, 8, 2, _rgb_rows())[:-20],
    "a bad bit depth": _handmade(4, 3, 4, 2, _rgb_rows()),
    "no image data": SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 8, 2, 0, 0, 0)) + _chunk(b"IEND", b""),
}


@pytest.mark.parametrize("what", sorted(LEFT_TO_PILLOW))
def test_left_to_pillow(what: str) -> None:
    assert rewrapped(LEFT_TO_PILLOW[what], MAX_PIXELS) is None


def test_animated_and_oversized_images_are_left_to_pillow() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, format="PNG", save_all=True, append_images=frames[1:])
    assert rewrapped(out.getvalue(), MAX_PIXELS) is None
    png = _png(Image.new("RGB", (20, 10)))
    assert rewrapped(png, 199) is None
    assert rewrapped(png, 200) is not None
    side = int((REWRAP_MAX_BYTES / 4) ** 0.5) + 1
    assert (filtered_size(struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0), MAX_PIXELS) or 0) > REWRAP_MAX_BYTES
    big = _handmade(side, side, 8, 6, b"")  # the header alone decides: nothing is inflated
    assert rewrapped(big, MAX_PIXELS) is None


def _outcome(png: bytes) -> tuple[str, object]:
    try:
        img = open_image(png, MAX_PIXELS)
    except BadRequest as exc:
        return "error", exc.detail
    return img.mode, np.asarray(img).tobytes()


@pytest.mark.parametrize("what", sorted(LEFT_TO_PILLOW))
def test_open_image_answers_as_pillow_alone(what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the rewrap refuses reaches Pillow as it was: the same pixels or the same 400 as
    without the rewrap (Pillow tolerates some, such as image data short of the header's rows)."""
    png = LEFT_TO_PILLOW[what]
    if not png.startswith(SIGNATURE):
        return
    with_rewrap = _outcome(png)
    monkeypatch.setattr(inputs, "rewrapped", lambda data, max_pixels: None)
    assert _outcome(png) == with_rewrap
