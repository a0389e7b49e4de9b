"""RenderSpec defaults, colormap resolution and validation."""

from __future__ import annotations

import dataclasses

import matplotlib
import pytest

from app.render import COLORMAPS, DIVERGING, RenderSpec

REQUIRED = {"jet", "viridis", "inferno", "magma", "plasma", "turbo", "hot", "gray"}
REQUIRED_DIVERGING = {"coolwarm", "bwr", "RdBu_r", "seismic"}


def test_colormap_names() -> None:
    assert set(COLORMAPS) >= REQUIRED | REQUIRED_DIVERGING
    assert DIVERGING == REQUIRED_DIVERGING
    assert set(COLORMAPS) >= DIVERGING
    assert all(name in matplotlib.colormaps for name in COLORMAPS)


def test_defaults() -> None:
    spec = RenderSpec()
    assert (spec.colormap, spec.alpha, spec.sign, spec.max_size, spec.outlier_perc) == (
        None, 0.5, "absolute", 1024, 2.0,
    )
    assert (spec.smooth, spec.floor) == (0.0, False)
    assert spec.resolved_colormap() == "jet"
    assert RenderSpec(sign="positive").resolved_colormap() == "jet"
    assert RenderSpec(sign="negative").resolved_colormap() == "jet"
    assert RenderSpec(sign="all").resolved_colormap() == "bwr"
    assert RenderSpec(sign="all", colormap="viridis").resolved_colormap() == "viridis"
    assert RenderSpec(colormap="seismic").resolved_colormap() == "seismic"


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RenderSpec().alpha = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"colormap": "rainbow_unicorn"},
        {"alpha": -0.1},
        {"alpha": 1.5},
        {"alpha": float("nan")},
        {"sign": "both"},
        {"max_size": 0},
        {"max_size": 10.5},
        {"outlier_perc": -1.0},
        {"outlier_perc": 100.0},
        {"smooth": -1.0},
        {"smooth": 65.0},
        {"smooth": float("inf")},
    ],
)
def test_invalid_specs_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RenderSpec(**kwargs)  # type: ignore[arg-type]
