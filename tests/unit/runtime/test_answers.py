"""Predictions in answers: classes ranked best first, ties in class order, whatever the class count."""

from __future__ import annotations

import numpy as np
import pytest

from app.runtime.answers import SMALL, prediction


@pytest.mark.parametrize("classes", [2, 3, SMALL, SMALL + 1, 1000])
def test_top_k_ranks_like_a_stable_argsort(classes: int) -> None:
    rng = np.random.default_rng(classes)
    labels = [f"class_{i}" for i in range(classes)]
    for _ in range(50):
        scores = (rng.integers(0, 5, classes) / 5).astype(np.float32)  # plenty of ties
        got = prediction(labels, False, scores, 10)
        expected = np.argsort(-scores, kind="stable")[:10].tolist()
        assert got.top_k is not None and [c.index for c in got.top_k] == expected
        assert [c.label for c in got.top_k] == [labels[i] for i in expected]
        assert (got.index, got.label, got.score) == (expected[0], labels[expected[0]], got.top_k[0].score)


def test_regression_answers_its_value() -> None:
    got = prediction(None, True, np.array([151.2345678], dtype=np.float32), None)
    assert got.value == pytest.approx(151.235) and got.top_k is None and got.index is None
