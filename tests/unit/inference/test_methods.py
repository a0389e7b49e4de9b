"""Parity of the batched engine with Captum called on one input alone (issue 3): every method of
the table, on the demo models, batched with mixed inputs and targets (tests/unit/inference/parity.py
says how), equals Captum row by row; stochastic methods give the same numbers for the same seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from app.inference.engine import ExplainResult, run_batch
from app.inference.methods import METHODS, offered_methods
from app.inference.params import resolve_params
from tests.unit.inference.parity import (
    IMAGE_METHODS,
    MAX_ROWS,
    MIXED_TARGETS,
    STOCHASTIC,
    TABULAR_METHODS,
    TABULAR_MODELS,
    batched_works,
    close,
    inputs,
    loaded,
    params_for,
    reference,
    run_case,
)

# --------------------------------------------------------------------------- cases

CASES: list[tuple[str, str, dict[str, Any]]] = [
    *[(model, method, {}) for model in TABULAR_MODELS for method in TABULAR_METHODS],
    # shapes: light parameters keep a CNN on a busy CPU fast; the code paths are the same.
    ("shapes", "integrated_gradients", {"n_steps": 8}),
    ("shapes", "gradient_shap", {"n_samples": 4, "stdevs": 0.05, "seed": 11}),
    ("shapes", "saliency", {}),
    ("shapes", "input_x_gradient", {}),
    ("shapes", "smoothgrad", {"n_samples": 4}),
    ("shapes", "gradcam", {}),
    ("shapes", "occlusion", {"window": 32, "stride": 32}),
    ("shapes", "lime", {"n_samples": 24, "n_segments": 20}),
    ("shapes", "deeplift", {}),
    ("shapes", "deeplift_shap", {"n_baselines": 3, "seed": 4}),
    # Non-default parameters: baselines, integration rules, seeds, noise, layers, signs.
    ("breast-cancer", "integrated_gradients", {"baseline": "mean", "n_steps": 20}),
    ("diabetes", "integrated_gradients", {"baseline": 1.5, "method": "riemann_trapezoid"}),
    ("purchase", "integrated_gradients", {"baseline": "mean", "method": "riemann_middle", "n_steps": 9}),
    ("breast-cancer", "gradient_shap", {"stdevs": 0.2, "seed": 7, "baseline": "mean"}),
    ("purchase", "smoothgrad", {"seed": 3, "stdevs": 0.5, "n_samples": 8}),
    ("purchase", "saliency", {"abs": True}),
    ("purchase", "kernel_shap", {"baseline": "zeros", "n_samples": 64, "seed": 5}),
    ("diabetes", "feature_ablation", {"baseline": "zeros"}),
    ("shapes", "integrated_gradients", {"baseline": "blur", "n_steps": 4, "method": "riemann_trapezoid"}),
    ("shapes", "gradcam", {"layer": "features.8"}),
    ("shapes", "integrated_gradients", {"n_steps": "auto", "max_steps": 32, "tolerance": 0.005}),
    ("purchase", "lime", {"baseline": "zeros", "n_samples": 40, "seed": 9}),
    ("diabetes", "deeplift", {"baseline": "mean"}),
    ("breast-cancer", "deeplift_shap", {"baseline": "mean", "stdevs": 0.5, "n_baselines": 5}),
    ("shapes", "deeplift", {"baseline": [0.2, 0.4, 0.6]}),
    ("shapes", "lime", {"segments": "grid", "n_samples": 16, "n_segments": 16}),
    ("breast-cancer", "integrated_gradients", {"n_steps": "auto", "baseline": "mean", "method": "riemann_middle"}),
]


def _case_id(case: tuple[str, str, dict[str, Any]]) -> str:
    model, method, request = case
    extra = ",".join(f"{k}={v}" for k, v in request.items())
    return f"{model}-{method}" + (f"[{extra}]" if extra else "")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_batched_rows_equal_captum_alone(case: tuple[str, str, dict[str, Any]]) -> None:
    name, method, request = case
    run_case(loaded(name), method, request)


@pytest.mark.parametrize(("name", "method"), [("breast-cancer", "integrated_gradients"),
                                              ("diabetes", "feature_ablation"),
                                              ("shapes", "occlusion")])
def test_parity_holds_when_captum_chunks_the_batch(name: str, method: str) -> None:
    """A small MAX_BATCH_ROWS makes Captum split the scaled inputs / perturbations into chunks."""
    request = {"window": 64, "stride": 64} if method == "occlusion" else {}
    run_case(loaded(name), method, request, max_rows=40)


@pytest.mark.parametrize(("name", "method"), [("breast-cancer", "integrated_gradients"),
                                              ("shapes", "integrated_gradients"),
                                              ("shapes", "gradcam"), ("purchase", "saliency")])
def test_parity_holds_with_chunks_smaller_than_the_batch(name: str, method: str) -> None:
    """Chunks of 2 rows (CPU_CHUNK_MB on a large model) for a batch of more instances: the
    instances are split into groups (Captum's IG batching splits only the steps)."""
    assert len(MIXED_TARGETS[name]) > 2
    request = {"n_steps": 4} if method == "integrated_gradients" else {}
    run_case(loaded(name), method, request, max_rows=2)


def test_every_method_of_the_table_is_covered() -> None:
    covered = {(model, method) for model, method, _ in CASES}
    for name in (*TABULAR_MODELS, "shapes"):
        offered = offered_methods(loaded(name).spec, loaded(name).facts)
        assert offered == list(IMAGE_METHODS if name == "shapes" else TABULAR_METHODS)
        assert {m for model, m in covered if model == name} == set(offered)
    assert set(TABULAR_METHODS) | set(IMAGE_METHODS) == set(METHODS)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(("name", "method"), [(m, s) for m in ("breast-cancer", "purchase") for s in STOCHASTIC]
                         + [("shapes", "smoothgrad")])
def test_same_request_twice_gives_identical_numbers(name: str, method: str) -> None:
    model = loaded(name)
    request = {"n_samples": 2} if name == "shapes" else {}
    prm = params_for(name, method, request)
    dumped = prm.model_dump(mode="json")
    assert dumped["seed"] == 0  # default seed, echoed in the answer's params
    targets = (None, 1, None, 0)
    x = inputs(name, len(targets))
    works, _ = batched_works(x, targets, method, prm)
    first = run_batch(model, works, MAX_ROWS)
    second = run_batch(model, list(reversed(works)), MAX_ROWS)
    for a, b in zip(first, reversed(second), strict=True):
        assert isinstance(a, ExplainResult) and isinstance(b, ExplainResult)
        np.testing.assert_array_equal(a.attributions, b.attributions)
    reseeded = params_for(name, method, {**request, "seed": 12345})
    changed = run_batch(model, batched_works(x, targets, method, reseeded)[0], MAX_ROWS)
    assert not all(np.array_equal(a.attributions, c.attributions)  # type: ignore[union-attr]
                   for a, c in zip(first, changed, strict=True))


def test_stochastic_methods_leave_the_global_generators_alone() -> None:
    model = loaded("purchase")
    prm = params_for("purchase", "kernel_shap", {"n_samples": 16})
    np.random.seed(99)
    torch.manual_seed(99)
    before_np, before_torch = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    run_batch(model, batched_works(inputs("purchase", 5), (None,) * 5, "kernel_shap", prm)[0], MAX_ROWS)
    assert np.array_equal(np.random.get_state()[1], before_np)
    assert torch.equal(torch.get_rng_state(), before_torch)


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(("method", "request_params"), [
    ("integrated_gradients", {"n_steps": 0}),
    ("integrated_gradients", {"n_steps": 100000}),
    ("integrated_gradients", {"baseline": "sideways"}),
    ("integrated_gradients", {"steps": 8}),
    ("gradient_shap", {"stdevs": -1.0}),
    ("gradient_shap", {"seed": -1}),
    ("smoothgrad", {"n_samples": 0}),
    ("kernel_shap", {"n_samples": 1}),
    ("occlusion", {"window": 0}),
    ("occlusion", {"stride": 2000}),
    ("saliency", {"abs": "maybe"}),
    ("input_x_gradient", {"anything": 1}),
    ("gradcam", {"layer": "x" * 500}),
    ("feature_ablation", {"baseline": "blur"}),
])
def test_unknown_or_out_of_range_params_are_rejected_with_their_location(
        method: str, request_params: dict[str, Any]) -> None:
    from app.errors import InvalidInput

    with pytest.raises(InvalidInput) as info:
        resolve_params(METHODS[method].params, {}, request_params)
    assert info.value.errors
    assert info.value.errors[0].loc[0] == "params"
    assert info.value.errors[0].loc[1] == next(iter(request_params))


def test_resolved_params_are_hashable_batch_keys() -> None:
    a = resolve_params(METHODS["integrated_gradients"].params, {}, {"n_steps": 16})
    b = resolve_params(METHODS["integrated_gradients"].params, {"n_steps": 16}, {})
    c = resolve_params(METHODS["integrated_gradients"].params, {}, {})
    assert a == b and hash(a) == hash(b)
    assert a != c


def test_costs_in_passes() -> None:
    ig = METHODS["integrated_gradients"]
    assert ig.passes(resolve_params(ig.params, {}, {"n_steps": 50}), (30,)) >= 50
    occ = METHODS["occlusion"]
    prm = resolve_params(occ.params, {}, {"window": 32, "stride": 32})
    assert occ.passes(prm, (3, 128, 128)) >= 16
    fa = METHODS["feature_ablation"]
    assert fa.passes(resolve_params(fa.params, {}, {}), (30,)) >= 30
    assert METHODS["saliency"].passes(resolve_params(METHODS["saliency"].params, {}, {}), (30,)) == 1


@pytest.mark.parametrize(("name", "method", "request_params"), [
    ("breast-cancer", "kernel_shap", {"n_samples": 64, "runs": 3, "seed": 5}),
    ("purchase", "lime", {"n_samples": 32, "runs": 4}),
    ("diabetes", "deeplift_shap", {"n_baselines": 4, "runs": 2, "seed": 8}),
    ("shapes", "smoothgrad", {"n_samples": 2, "runs": 3}),
])
def test_runs_give_the_mean_and_its_standard_error(name: str, method: str, request_params: dict[str, Any]) -> None:
    """runs = k: each row's attributions are the mean of Captum alone at seeds seed, ..., seed + k - 1,
    and its spread their standard error (sample standard deviation / sqrt(k))."""
    model = loaded(name)
    prm = params_for(name, method, request_params)
    x = inputs(name, 4)
    targets = (None, 1, None, 0) if name != "diabetes" else (None,) * 4
    results = run_batch(model, batched_works(x, targets, method, prm)[0], MAX_ROWS)
    attrs = np.concatenate([r.attributions for r in results])  # type: ignore[union-attr]
    spread = np.concatenate([r.spread for r in results])  # type: ignore[union-attr]
    order = batched_works(x, targets, method, prm)[1]
    runs = request_params["runs"]
    for pos, row in enumerate(order):
        xi = torch.from_numpy(x[row:row + 1].copy())
        target = int(np.concatenate([r.targets for r in results])[pos])  # type: ignore[union-attr]
        alone = torch.cat([reference(model, method, prm.model_copy(update={"seed": prm.seed + k}), xi.clone(),  # type: ignore[attr-defined]
                                     target)[0] for k in range(runs)])
        scale = float(alone.abs().max())
        close(attrs[pos:pos + 1], alone.mean(dim=0, keepdim=True), f"{name} {method} row {row} mean", scale)
        close(spread[pos:pos + 1], alone.std(dim=0, keepdim=True) / runs ** 0.5, f"{name} {method} row {row} spread",
              scale)
    assert METHODS[method].cost(prm, x.shape[1:]) == runs * METHODS[method].passes(prm, x.shape[1:])
