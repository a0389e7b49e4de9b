"""The fidelity benchmark's measures (bench/fidelity), checked on cases with known answers, and
its committed report against its committed results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bench.common import RESULTS
from bench.fidelity.images import pointing, randomized, rank_similarity
from bench.fidelity.models import loaded
from bench.fidelity.report import render
from bench.fidelity.tabular import _exact_shapley
from models.shapes import ShapeSample


def test_exact_shapley_values_of_a_linear_model_are_weight_times_difference() -> None:
    weights = torch.tensor([0.5, -2.0, 3.0, 1.5])
    x, base = torch.tensor([[1.0, 2.0, -1.0, 4.0]]), torch.tensor([[0.5, 0.0, 1.0, 4.0]])
    phi = _exact_shapley(lambda inputs, targets: inputs @ weights, x, base, torch.zeros(1, dtype=torch.long))  # type: ignore[arg-type]
    np.testing.assert_allclose(phi, (weights * (x - base))[0].numpy(), atol=1e-6)


def test_exact_shapley_values_of_an_interaction_split_it_evenly() -> None:
    """f = x0 * x1 from a zero baseline: each feature gets half of x0 * x1; a dummy feature gets 0."""
    x, base = torch.tensor([[3.0, 4.0, 7.0]]), torch.zeros(1, 3)
    phi = _exact_shapley(lambda inputs, targets: inputs[:, 0] * inputs[:, 1], x, base,  # type: ignore[arg-type]
                         torch.zeros(1, dtype=torch.long))
    np.testing.assert_allclose(phi, [6.0, 6.0, 0.0], atol=1e-6)
    assert math.isclose(phi.sum(), 12.0)


def test_pointing_counts_peaks_inside_the_box() -> None:
    image = ShapeSample(image=None, label=0, box=(10, 20, 30, 40))  # type: ignore[arg-type]
    inside, outside = np.zeros((64, 64)), np.zeros((64, 64))
    inside[25, 15] = 1.0  # row 25, column 15: in x 10..29, y 20..39
    outside[15, 25] = 1.0
    assert pointing(np.stack([inside, outside]), [image, image]) == 0.5


def test_rank_similarity() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 8))
    assert rank_similarity(maps, maps) == pytest.approx(1.0)
    assert rank_similarity(maps, -maps) == pytest.approx(-1.0)
    assert rank_similarity(maps, np.zeros_like(maps)) == 0.0


def test_randomised_copies_change_the_model_not_the_original() -> None:
    model = loaded("shapes")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    top, everything = randomized(model, everything=False), randomized(model, everything=True)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed_top = {k for k, v in top.module.state_dict().items() if not torch.equal(v, before[k])}
    changed_all = {k for k, v in everything.module.state_dict().items() if not torch.equal(v, before[k])}
    assert "net.classifier.weight" in changed_top and "net.features.0.weight" not in changed_top
    assert "net.features.0.weight" in changed_all and changed_top < changed_all


def test_the_committed_report_is_the_committed_results() -> None:
    results = json.loads((RESULTS / "fidelity.json").read_text())
    assert (RESULTS / "fidelity.md").read_text() == render(results)
    methods = {row["method"] for row in results["images"]["rows"] if not row.get("reference")}
    from app.inference.methods import METHODS

    assert methods == {name for name, m in METHODS.items() if "image" in m.kinds}
