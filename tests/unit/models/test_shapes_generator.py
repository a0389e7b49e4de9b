"""The synthetic shapes generator (models/shapes.py): determinism, balance, boxes, contrast."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from models.shapes import (
    LABELS,
    MIN_CONTRAST,
    ShapeLayers,
    ShapeSample,
    draw_layers,
    draw_sample,
    generate,
)

LUMA = np.array([0.299, 0.587, 0.114])


def _pixels(sample: ShapeSample) -> np.ndarray:
    return np.asarray(sample.image, dtype=np.int16)


def test_generate_is_deterministic_for_a_seed() -> None:
    first, second = generate(12, seed=5), generate(12, seed=5)
    assert [s.label for s in first] == [s.label for s in second]
    assert [s.box for s in first] == [s.box for s in second]
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(_pixels(a), _pixels(b))
    other = generate(12, seed=6)
    assert any(
        not np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(first, other, strict=True)
    )


def test_draw_sample_is_deterministic_for_a_generator_state() -> None:
    a = draw_sample(np.random.default_rng(3), label=2)
    b = draw_sample(np.random.default_rng(3), label=2)
    assert (a.label, a.box) == (b.label, b.box) == (2, a.box)
    assert np.array_equal(_pixels(a), _pixels(b))


@pytest.mark.parametrize("n", [40, 10, 1, 0])
def test_labels_are_balanced(n: int) -> None:
    counts = Counter(s.label for s in generate(n, seed=11, width=48, height=48))
    assert sum(counts.values()) == n
    assert set(counts) <= set(range(len(LABELS)))
    per_label = [counts.get(k, 0) for k in range(len(LABELS))]
    assert max(per_label) - min(per_label) <= 1


def test_labels_are_shuffled_not_cyclic() -> None:
    labels = [s.label for s in generate(40, seed=2, width=32, height=32)]
    assert labels != [i % len(LABELS) for i in range(40)]


def _check_layers(layers: ShapeLayers, width: int, height: int) -> None:
    sample = layers.sample
    assert sample.image.mode == "RGB"
    assert sample.image.size == (width, height)
    x0, y0, x1, y1 = sample.box
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    # The box is tight: the shape lies inside it and touches each of its four edges.
    alpha = layers.alpha
    assert alpha.shape == (height, width)
    outside = alpha.copy()
    outside[y0:y1, x0:x1] = 0.0
    assert not outside.any()
    inner = alpha[y0:y1, x0:x1]
    assert inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any()
    # Size: the larger box side is 25%-60% of the shorter image side (+ anti-aliased rims).
    side = max(x1 - x0, y1 - y0)
    assert 0.25 * min(width, height) - 1 <= side <= 0.60 * min(width, height) + 2
    # The image is the shape composited over the background.
    expected = layers.background * (1 - alpha[..., None]) + np.array(layers.fill) * alpha[..., None]
    assert np.abs(_pixels(sample) - np.rint(expected)).max() <= 1


def test_box_is_inside_the_image_and_tight() -> None:
    rng = np.random.default_rng(0)
    for i in range(60):
        _check_layers(draw_layers(rng, label=i % len(LABELS)), 128, 128)


@pytest.mark.parametrize(("width", "height"), [(160, 120), (96, 200), (40, 24)])
def test_non_square_sizes(width: int, height: int) -> None:
    rng = np.random.default_rng(width * height)
    for label in range(len(LABELS)):
        _check_layers(draw_layers(rng, width, height, label), width, height)
    for sample in generate(8, seed=1, width=width, height=height):
        assert sample.image.size == (width, height)
        x0, y0, x1, y1 = sample.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_shape_pixels_differ_from_the_background() -> None:
    rng = np.random.default_rng(1)
    for _ in range(40):
        layers = draw_layers(rng)
        x0, y0, x1, y1 = layers.sample.box
        image = _pixels(layers.sample).astype(np.float64)
        box_bg = layers.background[y0:y1, x0:x1]
        box_img = image[y0:y1, x0:x1]
        covered = layers.alpha[y0:y1, x0:x1] > 0.99
        assert covered.sum() >= 0.25 * covered.size  # a filled shape, not an outline
        # Every fully covered pixel is the fill colour, far in luminance from the background.
        assert np.abs(box_img[covered] - np.array(layers.fill)).max() <= 1
        gap = np.abs(box_img[covered] @ LUMA - box_bg[covered] @ LUMA)
        assert gap.min() >= MIN_CONTRAST - 1
        # And the background inside the box is faint next to that contrast.
        assert np.ptp(box_bg @ LUMA) < MIN_CONTRAST + 20


def test_object_edges_are_stronger_than_background_texture() -> None:
    rng = np.random.default_rng(9)
    for _ in range(20):
        layers = draw_layers(rng)
        image = _pixels(layers.sample).astype(np.float64) @ LUMA
        background = layers.background @ LUMA
        edge = np.abs(np.diff(image, axis=1))
        texture = np.abs(np.diff(background, axis=1))
        assert edge.max() > 3 * np.percentile(texture, 99)


def test_background_does_not_depend_on_the_label() -> None:
    backgrounds = [draw_layers(np.random.default_rng(42), label=k).background for k in range(4)]
    for other in backgrounds[1:]:
        assert np.array_equal(backgrounds[0], other)


def test_label_is_honoured_and_validated() -> None:
    rng = np.random.default_rng(5)
    assert [draw_sample(rng, label=k).label for k in range(len(LABELS))] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        draw_sample(rng, label=len(LABELS))
    with pytest.raises(ValueError):
        draw_sample(rng, width=8, height=128)
    with pytest.raises(ValueError):
        generate(-1, seed=0)
    assert LABELS == ["circle", "square", "triangle", "star"]
