"""The reference the batched engine is held to: Captum run on one input alone (tests of the
method table: test_methods.py, test_refine.py).

For every method of the table, on the demo models, a shuffled batch of mixed inputs and mixed
targets (None = predicted, explicit indices, both classes of the single-output `purchase`
model) is run through `app.inference.engine.run_batch` as several `ExplainWork` items, the
way the batcher hands concurrent requests to a worker (`run_case`). Row by row, the answer must
be what Captum gives for that input alone, computed here independently (`reference`): Captum
called directly on the `LoadedModel`'s module with `target=`, or, for single-output models, on a
lambda returning the explained output (`p` for target 1, `1 - p` for target 0, the value for
regression). Stochastic methods are seeded (`torch`, `numpy`, `random`) with the request's seed
before the single call. Relative tolerance 1e-5, with an absolute floor of 1e-6 of the largest
reference magnitude for entries near zero (`close`).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerAttribution,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from skimage.segmentation import slic
from torch import nn

from app.inference import params as p
from app.inference.catalog import load_catalog
from app.inference.engine import ExplainResult, ExplainWork, run_batch
from app.inference.explained import blurred
from app.inference.loading import LoadedModel, load_model
from app.inference.methods import METHODS, model_defaults
from app.inference.params import resolve_params
from models.shapes import generate

ROOT = Path(__file__).resolve().parents[3]
CATALOG = ROOT / "models" / "catalog.toml"
MAX_ROWS = 4096  # the service's default MAX_BATCH_ROWS
TABULAR_MODELS = ("breast-cancer", "purchase", "diabetes")
TABULAR_METHODS = ("integrated_gradients", "gradient_shap", "saliency", "input_x_gradient",
                   "smoothgrad", "feature_ablation", "kernel_shap", "lime", "deeplift", "deeplift_shap")
IMAGE_METHODS = ("integrated_gradients", "gradient_shap", "saliency", "input_x_gradient",
                 "smoothgrad", "gradcam", "occlusion", "lime", "deeplift", "deeplift_shap")
STOCHASTIC = ("gradient_shap", "smoothgrad", "kernel_shap", "lime", "deeplift_shap")


# --------------------------------------------------------------------------- models and inputs


@functools.cache
def loaded(name: str) -> LoadedModel:
    specs = {spec.name: spec for spec in load_catalog(CATALOG)}
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return load_model(specs[name], torch.device("cpu"))


def tabular_rows(name: str, n: int, seed: int) -> np.ndarray:
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
def images(n: int, seed: int) -> np.ndarray:
    samples = generate(n, seed)
    return np.stack([np.asarray(s.image, dtype=np.float32).transpose(2, 0, 1) / 255.0 for s in samples])


def inputs(name: str, n: int) -> np.ndarray:
    if loaded(name).spec.kind == "image":
        return images(n, 2024)
    return tabular_rows(name, n, seed=7)


MIXED_TARGETS: dict[str, list[int | None]] = {
    "breast-cancer": [None, 0, 1, None, 1, 0, None],
    "purchase": [None, 0, 1, 1, 0, None, 0],
    "diabetes": [None, 0, None, 0, None, None, 0],
    "shapes": [None, 2, None, 3],
}
SPLITS: dict[int, list[int]] = {7: [2, 1, 3, 1], 5: [2, 1, 2], 4: [1, 2, 1]}


def batched_works(x: np.ndarray, targets: Sequence[int | None], method: str, prm: p.MethodParams,
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


def params_for(name: str, method: str, request: dict[str, Any] | None = None) -> p.MethodParams:
    spec = loaded(name).spec
    return resolve_params(METHODS[method].params, model_defaults(spec, loaded(name).facts, method), request or {})


# --------------------------------------------------------------------------- the reference


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def predicted(model: LoadedModel, x: torch.Tensor) -> int:
    with torch.no_grad():
        out = model.module(x)
    if model.spec.task == "regression":
        return 0
    if out.shape[1] == 1:
        assert model.output_kind == "probabilities"
        return int(float(out[0, 0]) > 0.5)
    return int(out[0].argmax())


def forward_for(model: LoadedModel, target: int) -> tuple[Callable[..., torch.Tensor] | nn.Module, int | None]:
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


class Explained(nn.Module):
    """A single-output model's explained output as a module (DeepLift hooks modules): the value, or 1 - p."""

    def __init__(self, module: nn.Module, complement: bool) -> None:
        super().__init__()
        self.module = module
        self.complement = complement

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)[:, 0]
        return 1.0 - out if self.complement else out


def module_for(model: LoadedModel, target: int) -> tuple[nn.Module, int | None]:
    if model.out_width > 1:
        return model.module, target
    return Explained(model.module, model.spec.task == "classification" and target == 0), None


def baseline(model: LoadedModel, x: torch.Tensor, choice: str | float | tuple[float, ...]) -> torch.Tensor:
    if choice == "zeros":
        return torch.zeros_like(x)
    if choice == "mean" and model.spec.kind == "image":  # the normalisation's mean colour
        return torch.tensor(model.spec.image_spec.mean, dtype=x.dtype).view(1, -1, 1, 1).expand_as(x)
    if choice == "mean":
        assert model.spec.tabular is not None and model.spec.tabular.mean is not None
        return torch.tensor([model.spec.tabular.mean], dtype=x.dtype)
    if choice == "blur":  # the service's blur definition; what is tested here is batching
        return blurred(x)
    if isinstance(choice, tuple):  # one number per channel
        return torch.tensor(choice, dtype=x.dtype).view(1, -1, 1, 1).expand_as(x)
    assert not isinstance(choice, str)
    return torch.full_like(x, float(choice))


def last_conv(model: LoadedModel) -> str:
    return [n for n, m in model.module.named_modules() if isinstance(m, nn.Conv2d)][-1]


def reference(model: LoadedModel, method: str, prm: Any, x: torch.Tensor,
              target: int, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Captum on one input (batch of 1) alone (integrated gradients with n_steps "auto": at the
    `steps` the row reports)."""
    f, t = forward_for(model, target)
    if method in STOCHASTIC:
        seed_everything(prm.seed)
    if method == "integrated_gradients":
        attr, delta = IntegratedGradients(f).attribute(
            x, baselines=baseline(model, x, prm.baseline), target=t, n_steps=steps or prm.n_steps,
            method=prm.method, return_convergence_delta=True)
        return attr, delta.reshape(-1)
    if method == "gradient_shap":
        attr, delta = GradientShap(f).attribute(
            x, baselines=baseline(model, x, prm.baseline), n_samples=prm.n_samples, stdevs=prm.stdevs,
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
        # A conv folded with its BatchNorm at load is swapped back for the call, as the engine does
        # (test_folding.py holds the swapped module to the unfolded net).
        with model.module.layer(f"net.{prm.layer}" if prm.layer else last_conv(model)) as layer:
            cam = LayerGradCam(f, layer).attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear"), None
    if method == "occlusion":
        c = x.shape[1]
        attr = Occlusion(f).attribute(x, sliding_window_shapes=(c, prm.window, prm.window),
                                      strides=(c, prm.stride, prm.stride), baselines=0.0, target=t)
        return attr, None
    if method == "feature_ablation":
        return FeatureAblation(f).attribute(x, baselines=baseline(model, x, prm.baseline), target=t), None
    if method == "kernel_shap":
        attr = KernelShap(f).attribute(x, baselines=baseline(model, x, prm.baseline),
                                       n_samples=prm.n_samples, target=t)
        return attr, None
    if method == "lime":
        mask = None
        if x.dim() == 4 and prm.segments == "superpixels":  # SLIC superpixels, as scikit-image makes them
            ids = slic(x[0].numpy().transpose(1, 2, 0).astype(np.float64), n_segments=prm.n_segments,
                       compactness=10.0, start_label=0)
            assert ids.max() >= 1
            mask = torch.from_numpy(ids).long()[None, None]
        elif x.dim() == 4:  # square cells of side sqrt(H x W / n_segments), numbered row by row
            side = round((x.shape[-2] * x.shape[-1] / prm.n_segments) ** 0.5)
            rows, cols = torch.arange(x.shape[-2]) // side, torch.arange(x.shape[-1]) // side
            mask = (rows[:, None] * int(cols.max() + 1) + cols[None, :])[None, None]
        return Lime(f).attribute(x, baselines=baseline(model, x, prm.baseline), target=t, feature_mask=mask,
                                 n_samples=prm.n_samples), None
    if method in ("deeplift", "deeplift_shap"):
        with model.module.as_built():  # its rules are per non-linear module: the net's own (reordering.py)
            return _deeplift_reference(model, method, prm, x, target)
    raise AssertionError(f"no reference for {method}")


def _deeplift_reference(model: LoadedModel, method: str, prm: Any, x: torch.Tensor,
                        target: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    m, t = module_for(model, target)
    base = baseline(model, x, prm.baseline).expand_as(x)
    if method == "deeplift":
        attr, delta = DeepLift(m).attribute(x.requires_grad_(), baselines=base, target=t,
                                            return_convergence_delta=True)
        return attr.detach(), delta.detach().reshape(-1)
    # references: the baseline plus noise of `stdevs` normalisation stds, drawn first from the seed
    noise = torch.randn((prm.n_baselines, *x.shape[1:]), dtype=x.dtype)
    drawn = base + prm.stdevs * model.module.std * noise
    attr, delta = DeepLiftShap(m).attribute(x.requires_grad_(), baselines=drawn, target=t,
                                            return_convergence_delta=True)
    return attr.detach(), delta.detach().mean().reshape(1)


def close(actual: np.ndarray, expected: torch.Tensor, what: str, scale: float | None = None) -> None:
    """rtol 1e-5, atol 1e-6 of `scale` (default: the largest reference magnitude)."""
    expected = expected.detach().float()
    if scale is None:
        scale = float(expected.abs().max())
    floor = 1e-6 * max(scale, 1e-12)
    torch.testing.assert_close(torch.from_numpy(np.asarray(actual, dtype=np.float32)), expected,
                               rtol=1e-5, atol=floor, msg=lambda m: f"{what}: {m}")


PERTURBATION_METHODS = frozenset({"feature_ablation", "occlusion", "kernel_shap", "lime"})


def run_case(model: LoadedModel, method: str, request: dict[str, Any], max_rows: int = MAX_ROWS) -> None:
    name = model.spec.name
    targets = MIXED_TARGETS[name]
    x = inputs(name, len(targets))
    prm = params_for(name, method, request)
    works, order = batched_works(x, targets, method, prm)
    results = run_batch(model, works, max_rows)
    assert len(results) == len(works)
    assert all(isinstance(r, ExplainResult) for r in results)
    attrs = np.concatenate([r.attributions for r in results])  # type: ignore[union-attr]
    got_targets = np.concatenate([r.targets for r in results])  # type: ignore[union-attr]
    deltas = [r.deltas for r in results]  # type: ignore[union-attr]
    auto = getattr(prm, "n_steps", None) == "auto"
    steps = np.concatenate([r.steps for r in results]) if auto else None  # type: ignore[union-attr]
    assert all((r.steps is not None) == auto for r in results)  # type: ignore[union-attr]
    has_delta = method in ("integrated_gradients", "gradient_shap", "deeplift", "deeplift_shap")
    assert all((d is not None) == has_delta for d in deltas)
    expected_shape = (1, *x.shape[2:]) if method == "gradcam" else x.shape[1:]
    assert attrs.shape == (len(x), *expected_shape)
    for pos, row in enumerate(order):
        xi = torch.from_numpy(x[row:row + 1].copy())
        wanted = targets[row]
        target = predicted(model, xi) if wanted is None else wanted
        assert got_targets[pos] == target, f"row {row}: target {got_targets[pos]} != {target}"
        ref_attr, ref_delta = reference(model, method, prm, xi, target, int(steps[pos]) if steps is not None else None)
        scale = None
        if method in PERTURBATION_METHODS:
            # Differences of two outputs: float32 rounding of the outputs themselves (which the batch
            # size can change by an ulp) bounds how close they can be, not the difference.
            with torch.no_grad():
                output = float(model.module(xi).abs().max())
            scale = max(float(ref_attr.abs().max()), output)
        close(attrs[pos:pos + 1], ref_attr, f"{name} {method} row {row} (target {target})", scale=scale)
        if has_delta:
            assert ref_delta is not None
            flat = np.concatenate([d for d in deltas if d is not None])
            # The delta is a small difference of large terms (sum of attributions, F(x) - F(baseline)):
            # its tolerance scales with those terms, not with the delta itself.
            close(flat[pos:pos + 1], ref_delta, f"{name} {method} row {row} delta",
                   scale=float(ref_attr.abs().sum()) + abs(float(ref_delta[0])))
