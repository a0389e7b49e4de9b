"""Deterministic synthetic images of one shape over a smooth textured background.

Every image shows exactly one filled shape (`LABELS`: circle, square, triangle, star) at a
random position, with a random size (the larger side of its tight box is 25%-60% of the
shorter image side), a random rotation (square, triangle, star) and a random fill colour whose
luminance differs from every background pixel under its box by at least `MIN_CONTRAST` levels.
The background is a random two-colour linear gradient plus a few low-frequency waves, faint
stripes and low-amplitude pixel noise: everything in it is smoother and fainter than the
shape's edges, and nothing in it depends on the label. Edges are anti-aliased (4x
supersampling).

    >>> import numpy as np
    >>> sample = draw_sample(np.random.default_rng(0))
    >>> sample.image.size, LABELS[sample.label], sample.box  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "LABELS",
    "MIN_CONTRAST",
    "ShapeLayers",
    "ShapeSample",
    "draw_layers",
    "draw_sample",
    "generate",
]

LABELS: list[str] = ["circle", "square", "triangle", "star"]
MIN_CONTRAST = 60.0
"""Least |luminance(fill) - luminance(background)| (0-255 scale) under the shape's box."""

_SUPERSAMPLE = 4
_MIN_FRACTION, _MAX_FRACTION = 0.25, 0.60
_LUMA = np.array([0.299, 0.587, 0.114])
_STAR_INNER = 0.45  # inner / outer radius of the five-pointed star


@dataclass(frozen=True)
class ShapeSample:
    """One generated image, its label index into `LABELS` and the shape's tight box.

    `box` is (x0, y0, x1, y1) in pixels, x1/y1 exclusive: every pixel the shape touches lies
    inside it, and each of its four edges touches the shape.
    """

    image: Image.Image
    label: int
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapeLayers:
    """A sample with what it was composited from (for tests and diagnostics).

    `image == background * (1 - alpha) + fill * alpha` (rounded to uint8), with `background`
    float (H, W, 3) in 0-255, `alpha` float (H, W) in [0, 1] (the shape's coverage) and `fill`
    the shape's RGB colour.
    """

    sample: ShapeSample
    background: np.ndarray
    alpha: np.ndarray
    fill: tuple[int, int, int]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random texture, float (H, W, 3); its luminance typically spans ~30 levels."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    scale = float(max(width, height))
    u, v = xs / scale, ys / scale  # in [0, 1)
    base = rng.uniform(45.0, 210.0, size=3)
    delta = rng.uniform(-35.0, 35.0, size=3)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    t = u * np.cos(angle) + v * np.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9) - 0.5  # [-0.5, 0.5]
    img = base + t[..., None] * delta
    for _ in range(int(rng.integers(1, 4))):  # broad low-frequency waves
        freq = rng.uniform(0.5, 2.0)
        theta = rng.uniform(0.0, 2.0 * np.pi)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        amp = rng.uniform(-7.0, 7.0, size=3)
        wave = np.sin(2 * np.pi * freq * (u * np.cos(theta) + v * np.sin(theta)) + phase)
        img = img + wave[..., None] * amp
    if rng.random() < 0.5:  # faint stripes
        freq = rng.uniform(3.0, 8.0)
        theta = rng.uniform(0.0, np.pi)
        stripes = np.sin(2 * np.pi * freq * (u * np.cos(theta) + v * np.sin(theta)))
        img = img + stripes[..., None] * rng.uniform(2.0, 6.0)
    img = img + rng.normal(0.0, 3.0, size=img.shape)
    return np.clip(img, 0.0, 255.0)


def _unit_outline(label: int, angle: float) -> np.ndarray:
    """Polygon vertices (N, 2) of the shape with circumradius 1 around the origin."""
    if label == 0:  # circle: a fine polygon, only used for the extent
        k = np.arange(64)
        radii = np.ones(64)
        step = 2 * np.pi / 64
    elif label == 1:  # square
        k = np.arange(4)
        radii = np.ones(4)
        step = np.pi / 2
    elif label == 2:  # equilateral triangle
        k = np.arange(3)
        radii = np.ones(3)
        step = 2 * np.pi / 3
    elif label == 3:  # five-pointed star
        k = np.arange(10)
        radii = np.where(k % 2 == 0, 1.0, _STAR_INNER)
        step = np.pi / 5
    else:
        raise ValueError(f"label must be in 0..{len(LABELS) - 1}, not {label}")
    phi = angle + k * step - np.pi / 2
    return np.stack([radii * np.cos(phi), radii * np.sin(phi)], axis=1)


def _coverage(
    label: int,
    points: np.ndarray,
    center: tuple[float, float],
    radius: float,
    width: int,
    height: int,
) -> np.ndarray:
    """Anti-aliased coverage in [0, 1], float (H, W)."""
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(canvas)
    if label == 0:
        cx, cy = center
        draw.ellipse(
            [
                (cx - radius) * ss,
                (cy - radius) * ss,
                (cx + radius) * ss - 1,
                (cy + radius) * ss - 1,
            ],
            fill=255,
        )
    else:
        draw.polygon([(float(x) * ss, float(y) * ss) for x, y in points], fill=255)
    small = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _pick_fill(rng: np.random.Generator, region: np.ndarray) -> tuple[int, int, int]:
    """A random colour whose luminance is >= MIN_CONTRAST away from every pixel of `region`."""
    luma = region.reshape(-1, 3) @ _LUMA
    lo, hi = float(luma.min()), float(luma.max())
    for _ in range(64):
        colour = rng.integers(0, 256, size=3)
        y = float(colour @ _LUMA)
        if y <= lo - MIN_CONTRAST or y >= hi + MIN_CONTRAST:
            return (int(colour[0]), int(colour[1]), int(colour[2]))
    # Rare: fall back to a random dark or light tint, whichever side has room.
    tint = rng.integers(0, 40, size=3)
    if lo >= 255.0 - hi:
        return (int(tint[0]), int(tint[1]), int(tint[2]))
    return (int(255 - tint[0]), int(255 - tint[1]), int(255 - tint[2]))


def draw_layers(
    rng: np.random.Generator,
    width: int = 128,
    height: int = 128,
    label: int | None = None,
) -> ShapeLayers:
    """Like `draw_sample`, also returning the background, coverage and fill colour."""
    if width < 16 or height < 16:
        raise ValueError("width and height must be at least 16 pixels")
    if label is None:
        label = int(rng.integers(len(LABELS)))
    elif not 0 <= label < len(LABELS):
        raise ValueError(f"label must be in 0..{len(LABELS) - 1}, not {label}")
    background = _background(rng, width, height)

    side = rng.uniform(_MIN_FRACTION, _MAX_FRACTION) * min(width, height)
    angle = 0.0 if label == 0 else float(rng.uniform(0.0, 2.0 * np.pi))
    unit = _unit_outline(label, angle)
    extent = unit.max(axis=0) - unit.min(axis=0)
    radius = side / float(extent.max())  # larger box side == side
    points = unit * radius
    low = points.min(axis=0)
    span = points.max(axis=0) - low
    margin = 1.0
    x0 = rng.uniform(margin, width - margin - span[0])
    y0 = rng.uniform(margin, height - margin - span[1])
    points = points - low + np.array([x0, y0])
    center = (x0 - float(low[0]), y0 - float(low[1]))

    alpha = _coverage(label, points, center, radius, width, height)
    ys, xs = np.nonzero(alpha > 0)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    region = background[box[1] : box[3], box[0] : box[2]]
    fill = _pick_fill(rng, region)

    a = alpha[..., None]
    pixels = background * (1.0 - a) + np.array(fill, dtype=np.float64) * a
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return ShapeLayers(ShapeSample(image, label, box), background, alpha, fill)


def draw_sample(
    rng: np.random.Generator,
    width: int = 128,
    height: int = 128,
    label: int | None = None,
) -> ShapeSample:
    """One RGB image of `width` x `height` with a single shape (`label`, or a random one)."""
    return draw_layers(rng, width, height, label).sample


def generate(n: int, seed: int, width: int = 128, height: int = 128) -> list[ShapeSample]:
    """`n` samples, labels balanced (counts differ by at most one), identical for a seed."""
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(LABELS))
    return [draw_sample(rng, width, height, int(label)) for label in labels]
