"""Contribution chart rendering and the one-sentence summary."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from app.render import contribution_chart, summary_sentence
from app.render.tabular import NEGATIVE_COLOR, POSITIVE_COLOR, format_signed, format_value


def _decode(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.format == "PNG"
    return img


def _rows_with(rgb: np.ndarray, hex_color: str) -> np.ndarray:
    target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return np.nonzero((np.abs(rgb[..., :3].astype(int) - target).max(axis=-1) <= 2).any(axis=1))[0]


def _chart(n: int) -> Image.Image:
    rng = np.random.default_rng(n)
    features = [f"feature_{i}" for i in range(n)]
    return _decode(contribution_chart(features, list(rng.normal(size=n)),
                                      list(rng.normal(size=n)), f"{n} features"))


def test_chart_decodes_and_grows_with_features() -> None:
    small, large = _chart(3), _chart(30)
    assert small.width == large.width
    assert large.height > small.height
    assert large.height >= 30 * 25  # about 30 px per bar keeps 30 labels legible
    assert large.height <= 30 * 60


def test_chart_colours_and_ranking() -> None:
    png = contribution_chart(
        ["age", "income", "debt"], [41, 52000.0, 0.35], [0.1, 0.02, -0.9], "approve 81%"
    )
    rgb = np.asarray(_decode(png).convert("RGB"))
    red, blue = _rows_with(rgb, POSITIVE_COLOR), _rows_with(rgb, NEGATIVE_COLOR)
    assert red.size and blue.size
    assert blue.min() < red.min()  # |-0.9| is the largest, so the blue bar is on top


def test_chart_all_positive_has_no_negative_colour() -> None:
    png = contribution_chart(["a", "b"], [1, 2], [0.5, 0.1], "t")
    rgb = np.asarray(_decode(png).convert("RGB"))
    assert _rows_with(rgb, POSITIVE_COLOR).size and not _rows_with(rgb, NEGATIVE_COLOR).size


def test_chart_edge_cases() -> None:
    assert _decode(contribution_chart([], [], [], "nothing")).height > 0
    odd = contribution_chart(
        ["price_$", "$x$ ^{", "a" * 200],
        [float("nan"), "red", 1e9],  # type: ignore[list-item]
        [float("nan"), 0.0, -1e-9],
        "100% $ sure_",
    )
    assert _decode(odd).height > 0
    with pytest.raises(ValueError):
        contribution_chart(["a", "b"], [1.0], [0.1, 0.2], "mismatch")


def test_charts_render_in_threads() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        images = list(pool.map(_chart, [5, 10, 5, 10]))
    assert images[0].size == images[2].size and images[1].size == images[3].size


def test_summary_both_sides() -> None:
    assert summary_sentence(
        "purchase 92%",
        ["cart_adds", "category_views", "return_rate", "age", "visits"],
        [0.31, 0.22, -0.05, 0.01, 0.0],
    ) == (
        "purchase 92%: raised most by cart_adds (+0.31) and category_views (+0.22), "
        "lowered by return_rate (-0.05)"
    )


def test_summary_only_negative() -> None:
    assert (
        summary_sentence("purchase 12%", ["cart_adds", "return_rate"], [0.0, -0.4])
        == "purchase 12%: lowered most by return_rate (-0.40)"
    )


def test_summary_only_positive_and_ranking() -> None:
    assert (
        summary_sentence("churn 70%", ["a", "b", "c"], [0.1, 1.5, 0.7], k=1)
        == "churn 70%: raised most by b (+1.50)"
    )


def test_summary_three_drivers_each_side() -> None:
    assert summary_sentence(
        "score 0.7", ["a", "b", "c", "d", "e", "f", "g"], [0.3, -0.2, 0.2, -0.1, 0.1, -0.3, 0.05],
        k=3,
    ) == (
        "score 0.7: raised most by a (+0.30), c (+0.20) and e (+0.10), "
        "lowered by f (-0.30), b (-0.20) and d (-0.10)"
    )


def test_summary_small_values_keep_significance() -> None:
    assert (
        summary_sentence("p 50%", ["x", "y"], [0.0031, -0.004567])
        == "p 50%: raised most by x (+0.0031), lowered by y (-0.00457)"
    )


def test_summary_nothing_moved() -> None:
    expected = "default 3%: no feature moved the prediction"
    assert summary_sentence("default 3%", ["a", "b"], [0.0, float("nan")]) == expected
    assert summary_sentence("default 3%", [], []) == expected


def test_summary_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        summary_sentence("h", ["a"], [0.1, 0.2])
    with pytest.raises(ValueError):
        summary_sentence("h", ["a"], [0.1], k=0)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.31, "+0.31"), (-0.05, "-0.05"), (0.0031, "+0.0031"), (0.00312345, "+0.00312"),
     (-2.5, "-2.50"), (12.345, "+12.35"), (0.0, "+0.00"), (0.006, "+0.01"), (1e-7, "+1e-07")],
)
def test_format_signed(value: float, text: str) -> None:
    assert format_signed(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(3.0, "3"), (12, "12"), (0.123456, "0.1235"), (np.float32(0.5), "0.5"), (np.int64(7), "7"),
     (52000.0, "52000"), (1.5e9, "1.5e+09"), ("red", "red"), (True, "True"),
     (float("nan"), "nan")],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text
