"""normalize_attribution against Captum's own normalisation, plus robustness properties."""

from __future__ import annotations

import numpy as np
import pytest
from captum.attr._utils.visualization import _normalize_attr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.ndimage import gaussian_filter

from app.render import normalize_attribution
from app.render.options import SIGNS

RNG_SEEDS = [0, 1, 2, 3]
CAPTUM_SIGN = {"absolute": "absolute_value", "positive": "positive", "all": "all"}
"""Our sign names -> Captum's (Captum calls "absolute" "absolute_value")."""


def _random_map(seed: int, shape: tuple[int, ...] = (37, 53)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Heavy tails so the outlier threshold actually clips something.
    return rng.standard_t(df=2, size=shape) * rng.uniform(0.01, 100.0)


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("sign", ["absolute", "positive", "all"])
@pytest.mark.parametrize("outlier_perc", [0.5, 2.0, 10.0, 50.0])
def test_matches_captum(seed: int, sign: str, outlier_perc: float) -> None:
    attr = _random_map(seed)
    ours = normalize_attribution(attr, sign, outlier_perc)  # type: ignore[arg-type]
    ref = _normalize_attr(attr, CAPTUM_SIGN[sign], outlier_perc)
    assert ours.dtype == np.float32
    assert ours.shape == attr.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
    assert np.isclose(np.abs(ours).max(), 1.0)  # something saturates


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("outlier_perc", [0.5, 2.0, 25.0])
def test_negative_gives_magnitudes_like_captum(seed: int, outlier_perc: float) -> None:
    # Captum 0.9 divides min(a, 0) by a negated threshold, so its "negative" result is
    # already the magnitudes in [0, 1] (with -0.0 where a >= 0), not values in [-1, 0].
    attr = _random_map(seed)
    ours = normalize_attribution(attr, "negative", outlier_perc)
    ref = _normalize_attr(attr, "negative", outlier_perc)
    assert ours.min() == 0.0 and not np.signbit(ours).any()
    assert ours.max() == 1.0
    np.testing.assert_allclose(ours, np.abs(ref), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("sign", ["absolute", "all"])
def test_outlier_perc_zero_divides_by_peak(seed: int, sign: str) -> None:
    # Captum itself sometimes raises IndexError here (percentile 100 rounds above the total).
    attr = _random_map(seed)
    values = np.abs(attr) if sign == "absolute" else attr
    expected = values / np.abs(attr).max()
    out = normalize_attribution(attr, sign, 0.0)  # type: ignore[arg-type]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sign", ["absolute", "positive", "all"])
def test_float32_input_matches_captum_float32(sign: str) -> None:
    attr = _random_map(7, (64, 64)).astype(np.float32)
    ours = normalize_attribution(attr, sign)  # type: ignore[arg-type]
    ref = _normalize_attr(attr, CAPTUM_SIGN[sign], 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_channels_are_summed_like_captum() -> None:
    chw = _random_map(3, (3, 20, 30))
    ours = normalize_attribution(chw, "all")
    ref = _normalize_attr(np.sum(np.moveaxis(chw, 0, -1), axis=2), "all", 2)
    assert ours.shape == (20, 30)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_batch_of_one_is_accepted() -> None:
    chw = _random_map(4, (3, 8, 9))
    np.testing.assert_array_equal(
        normalize_attribution(chw[None], "absolute"), normalize_attribution(chw, "absolute")
    )


@pytest.mark.parametrize("sign", SIGNS)
def test_all_zero_gives_zeros(sign: str) -> None:
    out = normalize_attribution(np.zeros((5, 7)), sign)  # type: ignore[arg-type]
    assert out.shape == (5, 7)
    assert not out.any()


def test_constant_map() -> None:
    np.testing.assert_array_equal(normalize_attribution(np.full((4, 4), 3.0), "absolute"), 1.0)
    np.testing.assert_array_equal(normalize_attribution(np.full((4, 4), -3.0), "all"), -1.0)
    np.testing.assert_array_equal(normalize_attribution(np.full((4, 4), -3.0), "negative"), 1.0)
    np.testing.assert_array_equal(normalize_attribution(np.full((4, 4), -3.0), "positive"), 0.0)


@pytest.mark.parametrize("sign", SIGNS)
def test_non_finite_inputs_count_as_zero(sign: str) -> None:
    attr = _random_map(5, (16, 16))
    dirty = attr.copy()
    dirty[0, 0], dirty[3, 4], dirty[7, 7] = np.nan, np.inf, -np.inf
    clean = attr.copy()
    clean[0, 0] = clean[3, 4] = clean[7, 7] = 0.0
    out = normalize_attribution(dirty, sign)  # type: ignore[arg-type]
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, normalize_attribution(clean, sign))  # type: ignore[arg-type]


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize(("smooth", "floor"), [(0.0, False), (1.5, False), (0.0, True)])
def test_the_callers_map_is_left_as_it_was(sign: str, smooth: float, floor: bool) -> None:
    """A finite float64 map is worked on as it is (no copy made to clean it): never written to."""
    attr = _random_map(6, (3, 16, 16)).astype(np.float64)
    for supplied in (attr, attr.sum(axis=0)):
        before = supplied.copy()
        normalize_attribution(supplied, sign, smooth=smooth, floor=floor)  # type: ignore[arg-type]
        np.testing.assert_array_equal(supplied, before)


def test_all_nan_map_gives_zeros() -> None:
    assert not normalize_attribution(np.full((3, 3), np.nan), "all").any()


def test_huge_values_do_not_overflow() -> None:
    attr = np.full((50, 50), np.finfo(np.float64).max / 2)
    attr[0, 0] = -attr[0, 0]
    out = normalize_attribution(attr, "all")
    assert np.isfinite(out).all()
    assert out[0, 0] == -1.0 and out[1, 1] == 1.0


def test_outlier_perc_100_is_finite() -> None:
    attr = np.zeros((4, 4))
    attr[0, 0] = 2.0
    out = normalize_attribution(attr, "absolute", 100.0)
    assert np.isfinite(out).all() and out[0, 0] == 1.0


@pytest.mark.parametrize("shape", [(5,), (1, 2, 3, 4, 5), ()])
def test_bad_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        normalize_attribution(np.ones(shape), "all")


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        normalize_attribution(np.ones((2, 2)), "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        normalize_attribution(np.ones((2, 2)), "all", outlier_perc=-1.0)


@settings(max_examples=200, deadline=None)
@given(
    attr=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=12),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    ),
    sign=st.sampled_from(SIGNS),
    outlier_perc=st.floats(0.0, 100.0),
)
def test_output_always_finite_and_in_range(
    attr: np.ndarray, sign: str, outlier_perc: float
) -> None:
    out = normalize_attribution(attr, sign, outlier_perc)  # type: ignore[arg-type]
    assert out.dtype == np.float32
    assert out.shape == attr.shape[-2:]
    assert np.isfinite(out).all()
    low = -1.0 if sign == "all" else 0.0
    assert out.min() >= low and out.max() <= 1.0
    if np.any(attr != 0) and sign in ("absolute", "all"):
        assert np.abs(out).max() > 0 or attr.ndim == 3  # channels may cancel out


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("shape", [(128, 128), (224, 224), (40, 300)])
@pytest.mark.parametrize("outlier_perc", [0.5, 2.0, 10.0])
@pytest.mark.parametrize("sparse", [False, True])
def test_large_maps_match_captum(seed: int, shape: tuple[int, int], outlier_perc: float, sparse: bool) -> None:
    # Maps this large take the partial sort (only the largest values are sorted): the same threshold.
    attr = _random_map(seed, shape)
    if sparse:  # a GradCAM-like map: most of it exactly zero
        attr[np.abs(attr) < np.quantile(np.abs(attr), 0.8)] = 0.0
    ours = normalize_attribution(attr, "absolute", outlier_perc)
    ref = _normalize_attr(attr, "absolute_value", outlier_perc)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- smoothing and the floor


def test_smoothing_spreads_a_lone_pixel_into_a_gaussian() -> None:
    impulse = np.zeros((41, 41))
    impulse[20, 20] = -5.0
    sharp = normalize_attribution(impulse, "absolute", 0.0)
    smooth = normalize_attribution(impulse, "absolute", 0.0, smooth=3.0)
    assert np.count_nonzero(sharp) == 1
    assert smooth[20, 20] == 1.0 and np.count_nonzero(smooth > 0.05) > 50
    np.testing.assert_allclose(smooth, smooth.T, atol=1e-6)  # symmetric
    expected = np.exp(-(np.arange(-20, 21) ** 2) / (2 * 3.0**2))  # the profile of a sigma-3 Gaussian
    np.testing.assert_allclose(smooth[20], expected, atol=2e-3)


@pytest.mark.parametrize("sign", SIGNS)
def test_smoothing_zero_changes_nothing(sign: str) -> None:
    attr = _random_map(5)
    np.testing.assert_array_equal(normalize_attribution(attr, sign, smooth=0.0), normalize_attribution(attr, sign))


@pytest.mark.parametrize(("sign", "values"), [("absolute", np.abs), ("all", lambda a: a)])
def test_smoothing_blurs_magnitudes_for_absolute_and_signed_values_for_all(sign: str, values: object) -> None:
    """A +1/-1 checkerboard's magnitudes blur to a flat map; its signed values to about zero (away from
    the edges, where "nearest" repeats the border)."""
    attr = _random_map(9)
    blurred = gaussian_filter(values(attr), sigma=2.0, mode="nearest")  # type: ignore[operator]
    np.testing.assert_allclose(normalize_attribution(attr, sign, smooth=2.0),  # type: ignore[arg-type]
                               normalize_attribution(blurred, sign), rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
    board = np.where((np.arange(16)[:, None] + np.arange(16)[None, :]) % 2 == 0, 1.0, -1.0)
    raw = gaussian_filter(values(board), sigma=2.0, mode="nearest")  # type: ignore[operator]
    assert np.allclose(raw, 1.0) if sign == "absolute" else np.abs(raw[3:-3, 3:-3]).max() < 0.01


@pytest.mark.parametrize("sign", ["absolute", "positive", "negative"])
def test_the_floor_maps_floor_to_peak_linearly(sign: str) -> None:
    attr = np.random.default_rng(6).uniform(10.0, 11.0, (37, 53))  # far from zero, like an upsampled GradCAM map
    if sign == "negative":
        attr = -attr
    values = np.abs(attr)
    out = normalize_attribution(attr, sign, floor=True)  # type: ignore[arg-type]
    np.testing.assert_allclose(out, (values - values.min()) / (values.max() - values.min()), rtol=1e-5, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0
    without = normalize_attribution(attr, sign)  # type: ignore[arg-type]
    assert without.min() > 0.5  # from zero, every pixel is at least half coloured


def test_the_floor_leaves_signed_maps_and_flat_maps_alone() -> None:
    attr = _random_map(8)
    np.testing.assert_array_equal(normalize_attribution(attr, "all", floor=True), normalize_attribution(attr, "all"))
    assert not normalize_attribution(np.full((4, 4), 2.0), "absolute", floor=True).any()
