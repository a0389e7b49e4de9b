"""Output sizing, crop placement, coordinate mapping and blending of overlays."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from app.render import (
    Placement,
    RenderSpec,
    heatmap_rgba,
    output_size,
    overlay,
    overlay_and_heatmap,
)
from app.render.overlay import blend


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _grey(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (128, 128, 128))


def _centre_crop(width: int, height: int) -> Placement:
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return Placement((width, height), (left, top, left + side, top + side))


@pytest.mark.parametrize(
    ("size", "max_size", "expected"),
    [
        ((333, 517), 100, (64, 100)),
        ((517, 333), 100, (100, 64)),
        ((2000, 1500), 1024, (1024, 768)),
        ((640, 480), 1024, (640, 480)),  # never upscaled
        ((50, 40), 1024, (50, 40)),
        ((100, 100), 100, (100, 100)),
        ((1, 5000), 100, (1, 100)),  # never 0
        ((5000, 1), 100, (100, 1)),
        ((7, 3), 1, (1, 1)),
    ],
)
def test_output_size(size: tuple[int, int], max_size: int, expected: tuple[int, int]) -> None:
    assert output_size(size, max_size) == expected


@pytest.mark.parametrize("size", [(333, 517), (517, 333), (1999, 1001), (4000, 37)])
@pytest.mark.parametrize("max_size", [100, 256, 1024])
def test_output_size_keeps_aspect(size: tuple[int, int], max_size: int) -> None:
    w, h = output_size(size, max_size)
    assert max(w, h) == min(max_size, max(size))
    # Rounding one side moves the ratio by at most half a pixel on the shorter side.
    assert abs(w * size[1] - h * size[0]) <= 0.5 * max(size) + 1e-9


def test_output_size_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        output_size((0, 10), 100)
    with pytest.raises(ValueError):
        output_size((10, 10), 0)


def test_placement_validation() -> None:
    with pytest.raises(ValueError):
        Placement((10, 10), (5, 0, 5, 10))
    with pytest.raises(ValueError):
        Placement((0, 10), (0, 0, 1, 1))
    assert Placement.whole((30, 20)).crop_box == (0.0, 0.0, 30.0, 20.0)


def test_odd_sizes_modes_and_max_size() -> None:
    img = _image(333, 517)
    attr = np.random.default_rng(1).normal(size=(3, 128, 128)).astype(np.float32)
    spec = RenderSpec(max_size=100)
    placement = _centre_crop(333, 517)
    out = overlay(img, attr, placement, spec)
    heat = heatmap_rgba(attr, placement, spec)
    assert out.mode == "RGB" and out.size == (64, 100)
    assert heat.mode == "RGBA" and heat.size == (64, 100)


def test_small_image_not_upscaled() -> None:
    img = _image(40, 30)
    out = overlay(img, np.ones((128, 128)), Placement.whole((40, 30)), RenderSpec())
    assert out.size == (40, 30)


def test_heatmap_transparent_outside_crop() -> None:
    placement = Placement((333, 517), (100.0, 150.0, 233.0, 367.0))
    heat = np.asarray(heatmap_rgba(np.ones((128, 128)), placement, RenderSpec()))
    alpha = heat[..., 3]
    outside = np.ones(alpha.shape, dtype=bool)
    outside[150:367, 100:233] = False
    assert (alpha[outside] == 0).all()
    assert (alpha[151:366, 101:232] == 255).all()


def test_heatmap_transparent_outside_scaled_crop() -> None:
    placement = Placement((1000, 2000), (250.0, 500.0, 750.0, 1500.0))
    heat = np.asarray(heatmap_rgba(np.ones((64, 64)), placement, RenderSpec(max_size=200)))
    assert heat.shape == (200, 100, 4)
    alpha = heat[..., 3]
    assert (alpha[:50].max(), alpha[150:].max(), alpha[:, :25].max(), alpha[:, 75:].max()) == (
        0, 0, 0, 0,
    )
    assert (alpha[51:149, 26:74] == 255).all()


def test_overlay_equals_image_where_attribution_is_zero() -> None:
    img = _image(333, 517, seed=3)
    attr = np.zeros((128, 128))
    attr[:16, :16] = 1.0  # hotspot top-left, rest zero
    out = np.asarray(overlay(img, attr, Placement.whole((333, 517)), RenderSpec()))
    orig = np.asarray(img)
    np.testing.assert_array_equal(out[200:, 100:], orig[200:, 100:])
    assert np.abs(out[:50, :30].astype(int) - orig[:50, :30]).mean() > 20


def test_overlay_all_zero_attribution_is_original() -> None:
    img = _image(120, 80, seed=5)
    out = overlay(img, np.zeros((3, 32, 32)), Placement.whole((120, 80)), RenderSpec(alpha=1.0))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))


def test_overlay_zero_attribution_when_resized() -> None:
    img = _image(400, 300, seed=6)
    out = overlay(img, np.zeros((16, 16)), Placement.whole((400, 300)), RenderSpec(max_size=200))
    ref = img.resize((200, 150), Image.Resampling.BILINEAR)
    assert np.abs(np.asarray(out).astype(int) - np.asarray(ref)).max() <= 1


def test_overlay_blend_formula() -> None:
    img = _grey(50, 50)
    spec = RenderSpec(alpha=0.5)
    out = np.asarray(overlay(img, np.ones((8, 8)), Placement.whole((50, 50)), spec)).astype(int)
    heat = np.asarray(heatmap_rgba(np.ones((8, 8)), Placement.whole((50, 50)), spec)).astype(int)
    expected = 128 * 0.5 + heat[..., :3] * 0.5  # heat alpha is 255 everywhere
    assert np.abs(out - expected).max() <= 1
    opaque = np.asarray(
        overlay(img, np.ones((8, 8)), Placement.whole((50, 50)), RenderSpec(alpha=1))
    )
    np.testing.assert_array_equal(opaque, heat[..., :3])


@pytest.mark.parametrize("max_size", [1024, 150])
def test_hotspot_maps_to_matching_corner(max_size: int) -> None:
    # 300 x 200 image, shorter-side centre crop: the model saw x in [50, 250], y in [0, 200].
    placement = _centre_crop(300, 200)
    attr = np.zeros((64, 64))
    attr[:8, :8] = 1.0  # top-left of the model input -> image x in [50, 75], y in [0, 25]
    attr[-8:, -8:] = -1.0  # bottom-right -> image x in [225, 250], y in [175, 200]
    spec = RenderSpec(sign="positive", max_size=max_size)
    out_w, out_h = output_size((300, 200), max_size)
    scale = out_w / 300
    img = _grey(300, 200)
    heat = np.asarray(heatmap_rgba(attr, placement, spec))
    over = np.asarray(overlay(img, attr, placement, spec)).astype(int)
    assert heat.shape == (out_h, out_w, 4)

    def at(x: float, y: float) -> tuple[int, int]:
        return int(y * scale), int(x * scale)

    hot = at(60, 10)
    assert heat[hot][3] == 255
    r, g, b = over[hot]
    assert r >= 120 and g < 80 and b < 80  # grey blended with jet's dark red (128, 0, 0)
    for x, y in [(10, 10), (40, 10), (60, 40), (90, 10), (240, 185), (290, 190), (150, 100)]:
        assert heat[at(x, y)][3] == 0, (x, y)
        assert (over[at(x, y)] == 128).all(), (x, y)
    # The same map with sign="negative" lights up only the bottom-right corner.
    neg = np.asarray(heatmap_rgba(attr, placement, RenderSpec(sign="negative", max_size=max_size)))
    assert neg[at(240, 185)][3] == 255 and neg[hot][3] == 0
    # The hot region's extent in the output matches [50, 75] x [0, 25] within a pixel.
    rows, cols = np.nonzero(heat[..., 3] > 0)
    assert abs(cols.min() - 50 * scale) <= 1.5 and abs(cols.max() - 75 * scale) <= 1.5
    assert rows.min() == 0 and abs(rows.max() - 25 * scale) <= 1.5


def test_signed_overlay_colours() -> None:
    attr = np.zeros((32, 32))
    attr[:, :16] = -1.0
    attr[:, 16:] = 1.0
    heat = np.asarray(heatmap_rgba(attr, Placement.whole((64, 32)), RenderSpec(sign="all")))
    left, right = heat[16, 5], heat[16, 60]
    assert left[2] > 200 and left[0] < 60 and left[3] == 255  # blue for negative
    assert right[0] > 200 and right[2] < 60 and right[3] == 255  # red for positive


def test_image_modes_are_converted() -> None:
    placement = Placement.whole((20, 10))
    attr = np.ones((4, 4))
    for img in (
        Image.new("L", (20, 10), 100),
        Image.new("P", (20, 10), 3),
        Image.new("CMYK", (20, 10)),
    ):
        out = overlay(img, attr, placement, RenderSpec())
        assert out.mode == "RGB" and out.size == (20, 10)


def test_transparency_is_kept_and_the_heat_goes_over_it() -> None:
    placement = Placement.whole((20, 10))
    image = Image.new("RGBA", (20, 10), (10, 20, 30, 0))
    image.paste((200, 100, 50, 255), (0, 0, 10, 10))  # left half opaque, right half transparent
    # No attribution: the image as it was, transparency included.
    clear = np.asarray(overlay(image, np.zeros((4, 4)), placement, RenderSpec()))
    assert clear.shape == (10, 20, 4)
    assert (clear[:, :10] == (200, 100, 50, 255)).all() and (clear[:, 10:, 3] == 0).all()
    # Full attribution at alpha 0.5: half the heat colour over opaque pixels; over transparent
    # pixels the heat colour itself at half opacity ("over" composition).
    full = np.asarray(overlay(image, np.ones((4, 4)), placement, RenderSpec(colormap="gray", alpha=0.5)))
    assert abs(int(full[5, 2, 0]) - (200 + 255) // 2) <= 1 and full[5, 2, 3] == 255
    assert tuple(full[5, 17, :3]) == (255, 255, 255) and abs(int(full[5, 17, 3]) - 128) <= 1
    # A palette image with a transparent index keeps it too.
    palette = Image.new("P", (20, 10), 0)
    palette.info["transparency"] = 0
    assert overlay(palette, np.zeros((4, 4)), placement, RenderSpec()).mode == "RGBA"


def test_image_size_must_match_placement() -> None:
    with pytest.raises(ValueError):
        overlay(_grey(20, 10), np.ones((4, 4)), Placement.whole((10, 20)), RenderSpec())


def test_overlay_and_heatmap_matches_separate_calls() -> None:
    img = _image(333, 517, seed=9)
    attr = np.random.default_rng(2).normal(size=(128, 128))
    placement, spec = _centre_crop(333, 517), RenderSpec(max_size=256, sign="all")
    both = overlay_and_heatmap(img, attr, placement, spec)
    np.testing.assert_array_equal(
        np.asarray(both[0]), np.asarray(overlay(img, attr, placement, spec))
    )
    np.testing.assert_array_equal(
        np.asarray(both[1]), np.asarray(heatmap_rgba(attr, placement, spec))
    )


@pytest.mark.parametrize("alpha", [0.0, 0.13, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("sign", ["absolute", "all", "negative"])
@pytest.mark.parametrize("transparent", [False, True])
def test_overlay_from_the_opacity_table_is_blend_of_the_heatmap(alpha: float, sign: str, transparent: bool) -> None:
    """`overlay` takes its opacity from the colour table; `blend` makes it from the heatmap's alpha:
    the same pixels, for opaque and transparent images, whole and cropped placements."""
    rng = np.random.default_rng(int(alpha * 100))
    attr = rng.standard_t(df=2, size=(96, 96))
    for width, height, placement in ((96, 96, None), (150, 110, _centre_crop(150, 110))):
        img = _image(width, height, seed=3)
        if transparent:
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
        placement = placement or Placement.whole((width, height))
        spec = RenderSpec(alpha=alpha, sign=sign, max_size=128)  # type: ignore[arg-type]
        expected = blend(img, heatmap_rgba(attr, placement, spec), alpha)
        got = overlay(img, attr, placement, spec)
        assert got.mode == expected.mode == ("RGBA" if transparent else "RGB")
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
        opacity = np.asarray(heatmap_rgba(attr, placement, spec, opacity=True))
        heat = np.asarray(heatmap_rgba(attr, placement, spec))
        np.testing.assert_array_equal(opacity[..., :3], heat[..., :3])
        table = np.asarray([round(v * alpha) for v in range(256)], np.uint8)
        np.testing.assert_array_equal(opacity[..., 3], table[heat[..., 3]])


def test_threaded_rendering_is_deterministic() -> None:
    img = _image(300, 200, seed=4)
    attrs = [np.random.default_rng(s).normal(size=(64, 64)) for s in range(8)]
    placement, spec = _centre_crop(300, 200), RenderSpec(sign="all", colormap="RdBu_r")

    def render(attr: np.ndarray) -> bytes:
        return np.asarray(overlay(img, attr, placement, spec)).tobytes()

    serial = [render(a) for a in attrs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(render, attrs)) == serial


def _affine_onto(norm: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The crop-region path's sampling, for the whole canvas: Pillow's bilinear affine transform
    (after an antialiased shrink where the canvas is smaller than the map)."""
    src = Image.fromarray(np.ascontiguousarray(norm, dtype=np.float32))
    width, height = size
    if width < src.width or height < src.height:
        src = src.resize((min(src.width, width), min(src.height, height)), Image.Resampling.BILINEAR)
    scale_x, scale_y = src.width / width, src.height / height
    return np.asarray(src.transform(size, Image.Transform.AFFINE, (scale_x, 0.0, 0.0, 0.0, scale_y, 0.0),
                                    resample=Image.Resampling.BILINEAR, fillcolor=0.0), dtype=np.float32)


@pytest.mark.parametrize("shape", [(128, 128), (37, 53)])
def test_a_map_at_its_canvas_size_is_placed_as_it_is(shape: tuple[int, int]) -> None:
    from app.render.overlay import place_map

    height, width = shape
    norm = np.random.default_rng(3).random(shape, dtype=np.float32)
    # What the general path (Pillow's bilinear affine transform) makes of it: the same values.
    resampled = _affine_onto(norm, (width, height))
    placed = place_map(norm, Placement.whole((width, height)), (width, height))
    np.testing.assert_array_equal(placed, resampled)
    np.testing.assert_array_equal(placed, norm)


@pytest.mark.parametrize(("shape", "size"), [
    ((16, 16), (128, 128)),  # GradCAM's coarse map, upsampled
    ((128, 128), (640, 480)),  # onto a larger photo
    ((224, 224), (100, 75)),  # onto a smaller one
    ((7, 300), (150, 40)),  # up in one axis, down in the other
    ((1, 1), (9, 5)),
])
def test_a_map_covering_the_whole_canvas_is_sampled_as_a_crop_region_is(
        shape: tuple[int, int], size: tuple[int, int]) -> None:
    from app.render.overlay import place_map

    norm = np.random.default_rng(5).random(shape, dtype=np.float32)
    placed = place_map(norm, Placement.whole(size), size)
    assert placed.shape == (size[1], size[0])
    # Resized, not transformed: the same pixel centres, equal to float32 rounding of values in [0, 1].
    np.testing.assert_allclose(placed, _affine_onto(norm, size), rtol=0, atol=1e-6)
