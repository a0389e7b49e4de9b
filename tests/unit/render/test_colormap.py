"""colorize: colours, channel order and alpha ramp."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from app.render import COLORMAPS, RenderSpec, colorize
from app.render.colormap import colormap_lut


def _px(value: float, spec: RenderSpec) -> tuple[int, int, int, int]:
    r, g, b, a = colorize(np.array([[value]], dtype=np.float32), spec)[0, 0]
    return int(r), int(g), int(b), int(a)


def test_shape_and_dtype() -> None:
    out = colorize(np.zeros((7, 11), dtype=np.float32), RenderSpec())
    assert out.shape == (7, 11, 4)
    assert out.dtype == np.uint8


def test_jet_ends() -> None:
    r, g, b, a = _px(1.0, RenderSpec())
    assert r > 100 and g < 30 and b < 30 and a == 255  # dark red
    r, g, b, a = _px(0.0, RenderSpec())
    assert b > 100 and r < 30 and g < 30 and a == 0  # dark blue, transparent


@pytest.mark.parametrize("name", COLORMAPS)
@pytest.mark.parametrize("value", [0.0, 0.25, 0.5, 1.0])
def test_rgb_order_matches_matplotlib(name: str, value: float) -> None:
    expected = np.rint(np.asarray(matplotlib.colormaps[name](value))[:3] * 255)
    got = np.array(_px(value, RenderSpec(colormap=name))[:3])
    assert np.abs(got - expected).max() <= 3


def test_viridis_top_is_yellow_not_bgr() -> None:
    r, g, b, _ = _px(1.0, RenderSpec(colormap="viridis"))
    assert r > 200 and g > 200 and b < 80


def test_alpha_ramp() -> None:
    values = np.linspace(0.0, 1.0, 1001, dtype=np.float32)[None, :]
    alpha = colorize(values, RenderSpec())[0, :, 3].astype(int)
    assert alpha[0] == 0
    assert (alpha[values[0] < 0.02] == 0).all()
    assert alpha[-1] == 255
    assert (alpha[values[0] >= 0.3] == 255).all()
    assert (np.diff(alpha) >= 0).all()
    assert 0 < alpha[150] < 255  # in between at 0.15


def test_alpha_is_symmetric_for_signed_maps() -> None:
    values = np.linspace(-1.0, 1.0, 401, dtype=np.float32)[None, :]
    alpha = colorize(values, RenderSpec(sign="all"))[0, :, 3]
    np.testing.assert_array_equal(alpha, alpha[::-1])
    assert alpha[200] == 0 and alpha[0] == alpha[-1] == 255


def test_diverging_bwr() -> None:
    spec = RenderSpec(sign="all")
    r, g, b, a = _px(0.0, spec)
    assert min(r, g, b) > 240 and a == 0  # near white at the centre
    r, g, b, a = _px(1.0, spec)
    assert r > 200 and g < 60 and b < 60 and a == 255
    r, g, b, a = _px(-1.0, spec)
    assert b > 200 and r < 60 and g < 60 and a == 255


def test_diverging_coolwarm_centre_is_grey() -> None:
    r, g, b, _ = _px(0.0, RenderSpec(sign="all", colormap="coolwarm"))
    assert max(r, g, b) - min(r, g, b) < 40 and min(r, g, b) > 180


def test_out_of_range_and_nan_are_clipped() -> None:
    spec = RenderSpec()
    assert _px(5.0, spec) == _px(1.0, spec)
    assert _px(-3.0, spec) == _px(0.0, spec)
    assert _px(float("nan"), spec) == _px(0.0, spec)
    signed = RenderSpec(sign="all")
    assert _px(float("-inf"), signed) == _px(-1.0, signed)
    assert _px(float("nan"), signed) == _px(0.0, signed)


def test_lut_is_cached_and_read_only() -> None:
    lut = colormap_lut("jet")
    assert lut is colormap_lut("jet")
    assert lut.shape == (256, 3)
    with pytest.raises(ValueError):
        lut[0, 0] = 1


def test_bad_input_shape_raises() -> None:
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 2, 2), dtype=np.float32), RenderSpec())
