"""The method table: name -> kinds, parameter schema, cost in passes, and the Captum call for
a batch with per-row targets.

Deterministic methods run one Captum call for the whole batch. Stochastic ones
(`gradient_shap`, `smoothgrad`, `kernel_shap`) run Captum once per row with the row's seed,
so each row's numbers are exactly those of the same request served alone.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import torch
from captum._utils.gradient import compute_gradients
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
from captum.attr._utils import approximation_methods as _captum_approximation

from app.errors import InvalidInput, quoted
from app.inference import params as p
from app.inference.catalog import ModelSpec
from app.inference.explained import TargetScalar, baseline_for
from app.inference.loading import LoadedModel

Attribution = tuple[torch.Tensor, torch.Tensor | None]
"""Per-row attributions shaped like the inputs (GradCAM: N x 1 x H x W) and per-row deltas."""

_RNG_LOCK = threading.Lock()


def _cache_gauss_legendre() -> None:
    """Captum recomputes the Gauss-Legendre nodes and weights (numpy's `leggauss`, about 0.5 ms
    for 32 steps) twice per IG call, though they depend on n_steps alone: serve them from a
    cache. Same numbers; skipped if a Captum version no longer has the builder."""
    original = getattr(_captum_approximation, "gauss_legendre_builders", None)
    if original is None or getattr(original, "cached", False):
        return
    step_sizes, alphas = original()
    cached_steps = lru_cache(maxsize=128)(lambda n: tuple(step_sizes(n)))
    cached_alphas = lru_cache(maxsize=128)(lambda n: tuple(alphas(n)))

    def builders() -> tuple[Callable[[int], list[float]], Callable[[int], list[float]]]:
        return (lambda n: list(cached_steps(n))), (lambda n: list(cached_alphas(n)))

    builders.cached = True  # type: ignore[attr-defined]
    _captum_approximation.gauss_legendre_builders = builders


_cache_gauss_legendre()


def _summed_gradients(forward_fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...],
                      target_ind: Any = None, additional_forward_args: Any = None) -> tuple[torch.Tensor, ...]:
    """Captum's `compute_gradients` for the explained function (one scalar per row): one backward
    from the sum of the rows' outputs instead of one autograd root per row (`torch.unbind`).
    Rows do not interact, so the gradients are the same; the per-row Python work is gone (a batch
    of 64 IG requests is 2048 roots: about 9 of its 19 ms on CPU)."""
    if target_ind is not None:
        return compute_gradients(forward_fn, inputs, target_ind, additional_forward_args)
    args = additional_forward_args if additional_forward_args is not None else ()
    if not isinstance(args, tuple):
        args = (args,)
    with torch.autograd.set_grad_enabled(True):
        outputs = forward_fn(*inputs, *args)
        return torch.autograd.grad(outputs.sum(), inputs)


A = TypeVar("A", IntegratedGradients, Saliency, InputXGradient, GradientShap)


def _summed(attribution: A) -> A:
    attribution.gradient_func = _summed_gradients
    return attribution


@dataclass(frozen=True)
class Method:
    name: str
    kinds: frozenset[str]
    params: type[p.MethodParams]
    attribute: Callable[[TargetScalar, torch.Tensor, torch.Tensor, Any, int], Attribution]
    passes: Callable[[Any, tuple[int, ...]], int]
    """Forward/backward passes per instance for these parameters and one instance's shape."""
    stochastic: bool = False
    needs_hooks: bool = False
    single_forward: bool = False
    """Its one forward is on the inputs themselves: predictions reuse it (see TargetScalar)."""


def _chunk(rows: int, passes: int, max_rows: int) -> int:
    return max(1, min(rows * passes, max_rows))


def _in_chunks(run: Callable[[torch.Tensor, torch.Tensor], Attribution], x: torch.Tensor,
               targets: torch.Tensor, max_rows: int) -> Attribution:
    """At most `max_rows` examples per call of `run`: single-pass methods, and integrated
    gradients, whose Captum batching splits the steps but never the examples."""
    if x.shape[0] <= max_rows:
        return run(x, targets)
    parts = [run(x[i : i + max_rows], targets[i : i + max_rows]) for i in range(0, x.shape[0], max_rows)]
    deltas = [delta for _, delta in parts if delta is not None]
    return torch.cat([attr for attr, _ in parts]), (torch.cat(deltas) if deltas else None)


def _grad_leaf(x: torch.Tensor) -> torch.Tensor:
    """Inputs that gradients are taken against (Captum warns, once per process, when they are not)."""
    return x.detach().requires_grad_()


def _integrated_gradients(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                          prm: p.IntegratedGradientsParams, max_rows: int) -> Attribution:
    ig = _summed(IntegratedGradients(forward))

    def run(xs: torch.Tensor, ts: torch.Tensor) -> Attribution:
        attr, delta = ig.attribute(
            xs, baselines=baseline_for(forward.model, xs, prm.baseline), additional_forward_args=(ts,),
            n_steps=prm.n_steps, method=prm.method,
            internal_batch_size=_chunk(xs.shape[0], prm.n_steps, max_rows),
            return_convergence_delta=True)
        return attr, delta

    return _in_chunks(run, x, targets, max_rows)


def _saliency(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
              prm: p.SaliencyParams, max_rows: int) -> Attribution:
    saliency = _summed(Saliency(forward))
    return _in_chunks(
        lambda xs, ts: (saliency.attribute(_grad_leaf(xs), additional_forward_args=(ts,), abs=prm.abs), None),
        x, targets, max_rows)


def _input_x_gradient(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                      prm: p.NoParams, max_rows: int) -> Attribution:
    ixg = _summed(InputXGradient(forward))
    return _in_chunks(lambda xs, ts: (ixg.attribute(_grad_leaf(xs), additional_forward_args=(ts,)), None),
                      x, targets, max_rows)


def _gradcam(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
             prm: p.GradCamParams, max_rows: int) -> Attribution:
    layer = layer_path(forward.model, prm)
    cam = LayerGradCam(forward, forward.module.get_submodule(layer))
    size = tuple(x.shape[-2:])

    def run(xs: torch.Tensor, ts: torch.Tensor) -> Attribution:
        maps = cam.attribute(xs, additional_forward_args=(ts,), relu_attributions=True)
        return LayerAttribution.interpolate(maps, size, "bilinear"), None

    return _in_chunks(run, x, targets, max_rows)


def layer_path(model: LoadedModel, prm: p.GradCamParams) -> str:
    if model.gradcam_layer is None:
        raise InvalidInput(f"model '{model.spec.name}' offers no layer for gradcam")
    if prm.layer is None:
        return model.gradcam_layer
    path = f"net.{prm.layer}"
    try:
        model.module.get_submodule(path)
    except AttributeError:
        raise InvalidInput(f"params.layer: no module {quoted(prm.layer)} in model '{model.spec.name}'",
                           ) from None
    return path


def _occlusion(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
               prm: p.OcclusionParams, max_rows: int) -> Attribution:
    channels = x.shape[1]
    window = min(prm.window, x.shape[-2], x.shape[-1])
    attr = Occlusion(forward).attribute(
        x, sliding_window_shapes=(channels, window, window), strides=(channels, prm.stride, prm.stride),
        baselines=0.0, additional_forward_args=(targets,),
        perturbations_per_eval=_per_eval(max_rows, x.shape[0], _occlusion_passes(prm, tuple(x.shape)) - 1))
    return attr, None


def _per_eval(max_rows: int, rows: int, perturbations: int) -> int:
    """Perturbations per forward: Captum expands the inputs that many times up front, so never
    more than there are perturbations (or than MAX_BATCH_ROWS allows)."""
    return max(1, min(max_rows // rows, perturbations))


def _feature_ablation(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                      prm: p.FeatureAblationParams, max_rows: int) -> Attribution:
    attr = FeatureAblation(forward).attribute(
        x, baselines=baseline_for(forward.model, x, prm.baseline), additional_forward_args=(targets,),
        perturbations_per_eval=_per_eval(max_rows, x.shape[0], x.shape[-1]))
    return attr, None


def _per_row(run: Callable[[torch.Tensor, torch.Tensor], Attribution], seed: int,
             x: torch.Tensor, targets: torch.Tensor) -> Attribution:
    """Run a stochastic method row by row, each from `seed`, under one lock for the global RNGs."""
    attrs: list[torch.Tensor] = []
    deltas: list[torch.Tensor] = []
    devices = [x.device] if x.device.type == "cuda" else []
    with _RNG_LOCK, torch.random.fork_rng(devices=devices):
        for i in range(x.shape[0]):
            torch.manual_seed(seed)
            np_state = np.random.get_state()
            np.random.seed(seed)
            random.seed(seed)
            try:
                attr, delta = run(x[i : i + 1], targets[i : i + 1])
            finally:
                np.random.set_state(np_state)
            attrs.append(attr)
            if delta is not None:
                deltas.append(delta.reshape(1, -1).mean(dim=1))
    return torch.cat(attrs), (torch.cat(deltas) if deltas else None)


def _gradient_shap(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                   prm: p.GradientShapParams, max_rows: int) -> Attribution:
    shap = _summed(GradientShap(forward))

    def run(xi: torch.Tensor, ti: torch.Tensor) -> Attribution:
        base = baseline_for(forward.model, xi, prm.baseline)
        base_t = base if isinstance(base, torch.Tensor) else torch.full_like(xi, base)
        attr, delta = shap.attribute(xi, baselines=base_t, n_samples=prm.n_samples, stdevs=prm.stdevs,
                                     additional_forward_args=(ti,), return_convergence_delta=True)
        return attr, delta

    return _per_row(run, prm.seed, x, targets)


def _smoothgrad(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                prm: p.SmoothGradParams, max_rows: int) -> Attribution:
    tunnel = NoiseTunnel(_summed(Saliency(forward)))

    def run(xi: torch.Tensor, ti: torch.Tensor) -> Attribution:
        attr = tunnel.attribute(xi, nt_type="smoothgrad", nt_samples=prm.n_samples, stdevs=prm.stdevs,
                                nt_samples_batch_size=_chunk(1, prm.n_samples, max_rows),
                                additional_forward_args=(ti,), abs=False)
        return attr, None

    return _per_row(run, prm.seed, x, targets)


def _kernel_shap(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                 prm: p.KernelShapParams, max_rows: int) -> Attribution:
    shap = KernelShap(forward)

    def run(xi: torch.Tensor, ti: torch.Tensor) -> Attribution:
        attr = shap.attribute(xi, baselines=baseline_for(forward.model, xi, prm.baseline),
                              n_samples=prm.n_samples, additional_forward_args=(ti,),
                              perturbations_per_eval=_chunk(1, prm.n_samples, max_rows))
        return attr, None

    return _per_row(run, prm.seed, x, targets)


def _occlusion_passes(prm: p.OcclusionParams, shape: tuple[int, ...]) -> int:
    height, width = shape[-2], shape[-1]
    window = min(prm.window, height, width)
    steps_h = (height - window) // prm.stride + 1
    steps_w = (width - window) // prm.stride + 1
    return steps_h * steps_w + 1


_BOTH = frozenset({"tabular", "image"})
_IMAGE = frozenset({"image"})
_TABULAR = frozenset({"tabular"})

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("integrated_gradients", _BOTH, p.IntegratedGradientsParams, _integrated_gradients,
           lambda prm, shape: prm.n_steps + 2),
    Method("gradient_shap", _BOTH, p.GradientShapParams, _gradient_shap,
           lambda prm, shape: prm.n_samples + 2, stochastic=True),
    Method("saliency", _BOTH, p.SaliencyParams, _saliency, lambda prm, shape: 1, single_forward=True),
    Method("input_x_gradient", _BOTH, p.NoParams, _input_x_gradient, lambda prm, shape: 1,
           single_forward=True),
    Method("smoothgrad", _BOTH, p.SmoothGradParams, _smoothgrad,
           lambda prm, shape: prm.n_samples, stochastic=True),
    Method("gradcam", _IMAGE, p.GradCamParams, _gradcam, lambda prm, shape: 1, needs_hooks=True,
           single_forward=True),
    Method("occlusion", _IMAGE, p.OcclusionParams, _occlusion, _occlusion_passes),
    Method("feature_ablation", _TABULAR, p.FeatureAblationParams, _feature_ablation,
           lambda prm, shape: shape[-1] + 1),
    Method("kernel_shap", _TABULAR, p.KernelShapParams, _kernel_shap,
           lambda prm, shape: prm.n_samples, stochastic=True),
)}
IG_FAMILY = frozenset({"integrated_gradients", "gradient_shap"})


def supported_methods(spec: ModelSpec) -> list[str]:
    """What this model offers: its catalog list, or every method of its kind; no hooks on TorchScript."""
    names = spec.methods or [m.name for m in METHODS.values() if spec.kind in m.kinds]
    offered = []
    for name in names:
        method = METHODS.get(name)
        if method is None or spec.kind not in method.kinds:
            continue
        if method.needs_hooks and spec.format == "torchscript":
            continue
        offered.append(name)
    return offered


def model_overrides(spec: ModelSpec, name: str) -> dict[str, Any]:
    """Per-model defaults: the catalog's `method_params`, and `zeros` where there is no mean."""
    overrides = dict(spec.method_params.get(name, {}))
    has_mean = spec.tabular is not None and spec.tabular.mean is not None
    if name in ("feature_ablation", "kernel_shap") and not has_mean:
        overrides.setdefault("baseline", "zeros")
    return overrides
