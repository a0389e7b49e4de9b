"""Parity of the batched engine with Captum called on one input alone (issue 3).

For every method of the table, on the demo models, a shuffled batch of mixed inputs and mixed
targets (None = predicted, explicit indices, both classes of the single-output `purchase`
model) is run through `app.inference.engine.run_batch` as several `ExplainWork` items, the
way the batcher hands concurrent requests to a worker. Row by row, the answer must be what
Captum gives for that input alone, computed here independently: Captum called directly on the
`LoadedModel`'s module with `target=`, or, for single-output models, on a lambda returning the
explained output (`p` for target 1, `1 - p` for target 0, the value for regression).
Stochastic methods are seeded (`torch`, `numpy`, `random`) with the request's seed before the
single call. Relative tolerance 1e-5, with an absolute floor of 1e-6 of the largest reference
magnitude for entries near zero.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import (
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from app.inference import params as p
from app.inference.catalog import load_catalog
from app.inference.engine import ExplainResult, ExplainWork, run_batch
from app.inference.explained import blurred
from app.inference.loading import LoadedModel, load_model
from app.inference.methods import METHODS, model_defaults, offered_methods
from app.inference.params import resolve_params
from models.shapes import generate

ROOT = Path(__file__).resolve().parents[3]
CATALOG = ROOT / "models" / "catalog.toml"
MAX_ROWS = 4096  # the service's default MAX_BATCH_ROWS
TABULAR_MODELS = ("breast-cancer", "purchase", "diabetes")
TABULAR_METHODS = ("integrated_gradients", "gradient_shap", "saliency", "input_x_gradient",
                   "smoothgrad", "feature_ablation", "kernel_shap")
IMAGE_METHODS = ("integrated_gradients", "gradient_shap", "saliency", "input_x_gradient",
                 "smoothgrad", "gradcam", "occlusion")
STOCHASTIC = ("gradient_shap", "smoothgrad", "kernel_shap")


# --------------------------------------------------------------------------- models and inputs


@functools.cache
def loaded(name: str) -> LoadedModel:
    specs = {spec.name: spec for spec in load_catalog(CATALOG)}
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return load_model(specs[name], torch.device("cpu"))


def _tabular_rows(name: str, n: int, seed: int) -> np.ndarray:
    """The model's example rows (if any) and rows drawn around its training mean, >= 0 like the data."""
    spec = loaded(name).spec
    assert spec.tabular is not None and spec.tabular.mean is not None and spec.tabular.std is not None
    features = spec.features or []
    rows: list[list[float]] = []
    example = ROOT / "models" / name.replace("-", "_") / "example.json"
    if example.is_file():
        rows += [[float(inst[f]) for f in features] for inst in json.loads(example.read_text())["instances"]]
    rng = np.random.default_rng(seed)
    mean, std = np.array(spec.tabular.mean), np.array(spec.tabular.std)
    while len(rows) < n:
        rows.append(list(np.maximum(mean + std * rng.normal(0.0, 1.0, len(mean)), 0.0)))
    return np.array(rows[:n], dtype=np.float32)


@functools.cache
def _images(n: int, seed: int) -> np.ndarray:
    samples = generate(n, seed)
    return np.stack([np.asarray(s.image, dtype=np.float32).transpose(2, 0, 1) / 255.0 for s in samples])


def _inputs(name: str, n: int) -> np.ndarray:
    if loaded(name).spec.kind == "image":
        return _images(n, 2024)
    return _tabular_rows(name, n, seed=7)


MIXED_TARGETS: dict[str, list[int | None]] = {
    "breast-cancer": [None, 0, 1, None, 1, 0, None],
    "purchase": [None, 0, 1, 1, 0, None, 0],
    "diabetes": [None, 0, None, 0, None, None, 0],
    "shapes": [None, 2, None, 3],
}
SPLITS: dict[int, list[int]] = {7: [2, 1, 3, 1], 5: [2, 1, 2], 4: [1, 2, 1]}


def _works(x: np.ndarray, targets: Sequence[int | None], method: str, prm: p.MethodParams,
           seed: int = 0) -> tuple[list[ExplainWork], np.ndarray]:
    """Shuffle the rows, then cut them into several requests; returns the works and the row order."""
    order = np.random.default_rng(seed).permutation(len(x))
    works: list[ExplainWork] = []
    start = 0
    for size in SPLITS[len(x)]:
        rows = order[start:start + size]
        works.append(ExplainWork(np.ascontiguousarray(x[rows]), tuple(targets[i] for i in rows), method, prm))
        start += size
    return works, order


def _params(name: str, method: str, request: dict[str, Any] | None = None) -> p.MethodParams:
    spec = loaded(name).spec
    return resolve_params(METHODS[method].params, model_defaults(spec, loaded(name).facts, method), request or {})


# --------------------------------------------------------------------------- the reference


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _predicted(model: LoadedModel, x: torch.Tensor) -> int:
    with torch.no_grad():
        out = model.module(x)
    if model.spec.task == "regression":
        return 0
    if out.shape[1] == 1:
        assert model.output_kind == "probabilities"
        return int(float(out[0, 0]) > 0.5)
    return int(out[0].argmax())


def _forward(model: LoadedModel, target: int) -> tuple[Callable[..., torch.Tensor] | nn.Module, int | None]:
    """What Captum is called on for this target, and the `target=` it gets."""
    module = model.module
    if model.out_width > 1:
        return module, target
    if model.spec.task == "regression":
        return (lambda x: module(x)[:, 0]), None
    assert model.output_kind == "probabilities"  # purchase ends in a sigmoid
    if target == 1:
        return (lambda x: module(x)[:, 0]), None
    return (lambda x: 1.0 - module(x)[:, 0]), None


def _baseline(model: LoadedModel, x: torch.Tensor, choice: str | float) -> torch.Tensor:
    if choice == "zeros":
        return torch.zeros_like(x)
    if choice == "mean":
        assert model.spec.tabular is not None and model.spec.tabular.mean is not None
        return torch.tensor([model.spec.tabular.mean], dtype=x.dtype)
    if choice == "blur":  # the service's blur definition; what is tested here is batching
        return blurred(x)
    assert not isinstance(choice, str)
    return torch.full_like(x, float(choice))


def _last_conv(model: LoadedModel) -> str:
    return [n for n, m in model.module.named_modules() if isinstance(m, nn.Conv2d)][-1]


def reference(model: LoadedModel, method: str, prm: Any, x: torch.Tensor,
              target: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Captum on one input (batch of 1) alone."""
    f, t = _forward(model, target)
    if method in STOCHASTIC:
        _seed_everything(prm.seed)
    if method == "integrated_gradients":
        attr, delta = IntegratedGradients(f).attribute(
            x, baselines=_baseline(model, x, prm.baseline), target=t, n_steps=prm.n_steps,
            method=prm.method, return_convergence_delta=True)
        return attr, delta.reshape(-1)
    if method == "gradient_shap":
        attr, delta = GradientShap(f).attribute(
            x, baselines=_baseline(model, x, prm.baseline), n_samples=prm.n_samples, stdevs=prm.stdevs,
            target=t, return_convergence_delta=True)
        return attr, delta.mean().reshape(1)  # one delta per random sample: their mean
    if method == "saliency":
        return Saliency(f).attribute(x.requires_grad_(), target=t, abs=prm.abs), None
    if method == "input_x_gradient":
        return InputXGradient(f).attribute(x.requires_grad_(), target=t), None
    if method == "smoothgrad":
        attr = NoiseTunnel(Saliency(f)).attribute(
            x, nt_type="smoothgrad", nt_samples=prm.n_samples, stdevs=prm.stdevs, target=t, abs=False)
        return attr, None
    if method == "gradcam":
        layer = model.module.get_submodule(f"net.{prm.layer}" if prm.layer else _last_conv(model))
        cam = LayerGradCam(f, layer).attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear"), None
    if method == "occlusion":
        c = x.shape[1]
        attr = Occlusion(f).attribute(x, sliding_window_shapes=(c, prm.window, prm.window),
                                      strides=(c, prm.stride, prm.stride), baselines=0.0, target=t)
        return attr, None
    if method == "feature_ablation":
        return FeatureAblation(f).attribute(x, baselines=_baseline(model, x, prm.baseline), target=t), None
    if method == "kernel_shap":
        attr = KernelShap(f).attribute(x, baselines=_baseline(model, x, prm.baseline),
                                       n_samples=prm.n_samples, target=t)
        return attr, None
    raise AssertionError(f"no reference for {method}")


def _close(actual: np.ndarray, expected: torch.Tensor, what: str, scale: float | None = None) -> None:
    """rtol 1e-5, atol 1e-6 of `scale` (default: the largest reference magnitude)."""
    expected = expected.detach().float()
    if scale is None:
        scale = float(expected.abs().max())
    floor = 1e-6 * max(scale, 1e-12)
    torch.testing.assert_close(torch.from_numpy(np.asarray(actual, dtype=np.float32)), expected,
                               rtol=1e-5, atol=floor, msg=lambda m: f"{what}: {m}")


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
]


def _case_id(case: tuple[str, str, dict[str, Any]]) -> str:
    model, method, request = case
    extra = ",".join(f"{k}={v}" for k, v in request.items())
    return f"{model}-{method}" + (f"[{extra}]" if extra else "")


PERTURBATION_METHODS = frozenset({"feature_ablation", "occlusion", "kernel_shap"})


def _run_case(model: LoadedModel, method: str, request: dict[str, Any], max_rows: int = MAX_ROWS) -> None:
    name = model.spec.name
    targets = MIXED_TARGETS[name]
    x = _inputs(name, len(targets))
    prm = _params(name, method, request)
    works, order = _works(x, targets, method, prm)
    results = run_batch(model, works, max_rows)
    assert len(results) == len(works)
    assert all(isinstance(r, ExplainResult) for r in results)
    attrs = np.concatenate([r.attributions for r in results])  # type: ignore[union-attr]
    got_targets = np.concatenate([r.targets for r in results])  # type: ignore[union-attr]
    deltas = [r.deltas for r in results]  # type: ignore[union-attr]
    has_delta = method in ("integrated_gradients", "gradient_shap")
    assert all((d is not None) == has_delta for d in deltas)
    expected_shape = (1, *x.shape[2:]) if method == "gradcam" else x.shape[1:]
    assert attrs.shape == (len(x), *expected_shape)
    for pos, row in enumerate(order):
        xi = torch.from_numpy(x[row:row + 1].copy())
        wanted = targets[row]
        target = _predicted(model, xi) if wanted is None else wanted
        assert got_targets[pos] == target, f"row {row}: target {got_targets[pos]} != {target}"
        ref_attr, ref_delta = reference(model, method, prm, xi, target)
        scale = None
        if method in PERTURBATION_METHODS:
            # Differences of two outputs: float32 rounding of the outputs themselves (which the batch
            # size can change by an ulp) bounds how close they can be, not the difference.
            with torch.no_grad():
                output = float(model.module(xi).abs().max())
            scale = max(float(ref_attr.abs().max()), output)
        _close(attrs[pos:pos + 1], ref_attr, f"{name} {method} row {row} (target {target})", scale=scale)
        if has_delta:
            assert ref_delta is not None
            flat = np.concatenate([d for d in deltas if d is not None])
            # The delta is a small difference of large terms (sum of attributions, F(x) - F(baseline)):
            # its tolerance scales with those terms, not with the delta itself.
            _close(flat[pos:pos + 1], ref_delta, f"{name} {method} row {row} delta",
                   scale=float(ref_attr.abs().sum()) + abs(float(ref_delta[0])))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_batched_rows_equal_captum_alone(case: tuple[str, str, dict[str, Any]]) -> None:
    name, method, request = case
    _run_case(loaded(name), method, request)


@pytest.mark.parametrize(("name", "method"), [("breast-cancer", "integrated_gradients"),
                                              ("diabetes", "feature_ablation"),
                                              ("shapes", "occlusion")])
def test_parity_holds_when_captum_chunks_the_batch(name: str, method: str) -> None:
    """A small MAX_BATCH_ROWS makes Captum split the scaled inputs / perturbations into chunks."""
    request = {"window": 64, "stride": 64} if method == "occlusion" else {}
    _run_case(loaded(name), method, request, max_rows=40)


@pytest.mark.parametrize(("name", "method"), [("breast-cancer", "integrated_gradients"),
                                              ("shapes", "integrated_gradients"),
                                              ("shapes", "gradcam"), ("purchase", "saliency")])
def test_parity_holds_with_chunks_smaller_than_the_batch(name: str, method: str) -> None:
    """Chunks of 2 rows (CPU_CHUNK_MB on a large model) for a batch of more instances: the
    instances are split into groups (Captum's IG batching splits only the steps)."""
    assert len(MIXED_TARGETS[name]) > 2
    request = {"n_steps": 4} if method == "integrated_gradients" else {}
    _run_case(loaded(name), method, request, max_rows=2)


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
    prm = _params(name, method, request)
    dumped = prm.model_dump(mode="json")
    assert dumped["seed"] == 0  # default seed, echoed in the answer's params
    targets = (None, 1, None, 0)
    x = _inputs(name, len(targets))
    works, _ = _works(x, targets, method, prm)
    first = run_batch(model, works, MAX_ROWS)
    second = run_batch(model, list(reversed(works)), MAX_ROWS)
    for a, b in zip(first, reversed(second), strict=True):
        assert isinstance(a, ExplainResult) and isinstance(b, ExplainResult)
        np.testing.assert_array_equal(a.attributions, b.attributions)
    reseeded = _params(name, method, {**request, "seed": 12345})
    changed = run_batch(model, _works(x, targets, method, reseeded)[0], MAX_ROWS)
    assert not all(np.array_equal(a.attributions, c.attributions)  # type: ignore[union-attr]
                   for a, c in zip(first, changed, strict=True))


def test_stochastic_methods_leave_the_global_generators_alone() -> None:
    model = loaded("purchase")
    prm = _params("purchase", "kernel_shap", {"n_samples": 16})
    np.random.seed(99)
    torch.manual_seed(99)
    before_np, before_torch = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    run_batch(model, _works(_inputs("purchase", 5), (None,) * 5, "kernel_shap", prm)[0], MAX_ROWS)
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
