"""A method row, and what the rows share: chunking, per-row seeding, Captum speed-ups.

A row (`Method`) owns all of a method: its parameter schema and defaults, the kinds it applies
to, its cost in passes, whether it reports a convergence delta, its request-time checks against
the model and its Captum call with per-row targets (docs/architecture.md, "Add a method").
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import torch
from captum._utils.gradient import compute_gradients
from captum.attr import GradientAttribution
from captum.attr._utils import approximation_methods as _captum_approximation

from app.inference.explained import TargetScalar
from app.inference.facts import ModelFacts
from app.inference.interrupt import checkpoint
from app.inference.params import MethodParams

Attribution = tuple[torch.Tensor, torch.Tensor | None]
"""Per-row attributions shaped like the inputs (GradCAM: N x 1 x H x W) and per-row deltas."""


@dataclass(frozen=True)
class Attributed:
    """An attribution with what some methods add per row."""

    attr: torch.Tensor
    delta: torch.Tensor | None = None
    steps: torch.Tensor | None = None
    """Integrated gradients to a tolerance: the steps each row used."""
    converged: torch.Tensor | None = None
    """... and whether its delta met the tolerance."""
    spread: torch.Tensor | None = None
    """Stochastic methods over several runs: the standard error of each attribution (like `attr`)."""


AttributeFn = Callable[[TargetScalar, torch.Tensor, torch.Tensor, Any, int], Attribution | Attributed]
"""(explained function, inputs, per-row targets, parameters, most rows per forward) -> attribution."""


def _no_defaults(facts: ModelFacts) -> dict[str, Any]:
    return {}


def _no_check(facts: ModelFacts, params: Any) -> None:
    return None


def _always(facts: ModelFacts) -> bool:
    return True


@dataclass(frozen=True)
class Method:
    name: str
    kinds: frozenset[str]
    params: type[MethodParams]
    attribute: AttributeFn
    passes: Callable[[Any, tuple[int, ...]], int]
    """Forward/backward passes per instance, for these parameters and one instance's shape."""
    reports_delta: bool = False
    """Its answers carry a convergence delta (the integrated-gradients family)."""
    stochastic: bool = False
    needs_layers: bool = False
    """Attributes to a layer through hooks: not offered where hooks cannot attach (TorchScript)."""
    single_forward: bool = False
    """Its one forward is on the inputs themselves: predictions reuse it (see TargetScalar)."""
    defaults: Callable[[ModelFacts], dict[str, Any]] = _no_defaults
    """Per-model defaults (under the catalog's `method_params`), from what the model is like."""
    check: Callable[[ModelFacts, Any], None] = _no_check
    """Request-time checks against the model (422), before anything is queued."""
    fits: Callable[[ModelFacts], bool] = _always
    """Whether it can run on this model at all, from what the model is like (DeepLift: hooks attach
    and no non-linearity is called twice)."""
    render_floor: bool = False
    """Its maps are coloured between their floor and their peak (GradCAM: a coarse map, upsampled,
    whose floor is seldom zero), not from zero."""
    pixel_level: bool = False
    """Its maps have per-pixel detail (gradients): overlays blur them by default (`render.smooth`)."""

    def cost(self, params: Any, shape: tuple[int, ...]) -> int:
        """Passes per instance, every run counted (stochastic methods' `runs`)."""
        return self.passes(params, shape) * getattr(params, "runs", 1)

    def offered_for(self, kinds: frozenset[str], facts: ModelFacts) -> bool:
        """For inputs like the model's (`kinds`: its kind's `method_kinds`), where a layer method
        finds a layer to hook, and where it fits the model."""
        layer_found = not self.needs_layers or facts.gradcam_layer is not None
        return bool(self.kinds & kinds) and layer_found and self.fits(facts)


def samples_for(features: int) -> int:
    """Default samples of the tabular sampling methods (Kernel SHAP, LIME): 50 per feature, at
    least 200 (docs/api.md, "How sure the sampling methods are", has the measurements)."""
    return min(10000, max(200, 50 * features))


def chunk(rows: int, passes: int, max_rows: int) -> int:
    """Rows per forward for `rows` instances of `passes` each, at most `max_rows`."""
    return max(1, min(rows * passes, max_rows))


def per_eval(max_rows: int, rows: int, perturbations: int) -> int:
    """Perturbations per forward: Captum expands the inputs that many times up front, so never
    more than there are perturbations (or than `max_rows` allows)."""
    return max(1, min(max_rows // rows, perturbations))


def in_chunks(run: Callable[[torch.Tensor, torch.Tensor], Attribution], x: torch.Tensor,
              targets: torch.Tensor, max_rows: int) -> Attribution:
    """At most `max_rows` examples per call of `run` (Captum's own batching splits steps and
    samples, never examples)."""
    if x.shape[0] <= max_rows:
        return run(x, targets)
    parts = []
    for i in range(0, x.shape[0], max_rows):
        checkpoint()
        parts.append(run(x[i : i + max_rows], targets[i : i + max_rows]))
    deltas = [delta for _, delta in parts if delta is not None]
    return torch.cat([attr for attr, _ in parts]), (torch.cat(deltas) if deltas else None)


_RNG_LOCK = threading.Lock()


def per_row(run: Callable[[torch.Tensor, torch.Tensor], Attribution], seed: int,
            x: torch.Tensor, targets: torch.Tensor, runs: int = 1) -> Attributed:
    """Run a stochastic method row by row, each from `seed`, under one lock for the global RNGs:
    each row's numbers are those of the same request served alone. With several `runs` (seeds
    seed, seed + 1, ...), a row's attributions and delta are the runs' means, and its spread the
    standard error of that mean (the runs' sample standard deviation / sqrt(runs))."""
    attrs: list[torch.Tensor] = []
    deltas: list[torch.Tensor] = []
    spreads: list[torch.Tensor] = []
    devices = [x.device] if x.device.type == "cuda" else []
    with _RNG_LOCK, torch.random.fork_rng(devices=devices):
        for i in range(x.shape[0]):
            row_attrs: list[torch.Tensor] = []
            row_deltas: list[torch.Tensor] = []
            for offset in range(runs):
                checkpoint()
                torch.manual_seed(seed + offset)
                np_state = np.random.get_state()
                np.random.seed(seed + offset)
                random.seed(seed + offset)
                try:
                    attr, delta = run(x[i : i + 1], targets[i : i + 1])
                finally:
                    np.random.set_state(np_state)
                row_attrs.append(attr)
                if delta is not None:
                    row_deltas.append(delta.reshape(1, -1).mean(dim=1))
            stacked = torch.cat(row_attrs)
            attrs.append(stacked.mean(dim=0, keepdim=True))
            if runs > 1:
                spreads.append(stacked.std(dim=0, keepdim=True) / math.sqrt(runs))
            if row_deltas:
                deltas.append(torch.stack(row_deltas).mean(dim=0))
    return Attributed(torch.cat(attrs), torch.cat(deltas) if deltas else None,
                      spread=torch.cat(spreads) if spreads else None)


def grad_leaf(x: torch.Tensor) -> torch.Tensor:
    """Inputs that gradients are taken against (Captum warns, once per process, when they are not)."""
    return x.detach().requires_grad_()


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


G = TypeVar("G", bound=GradientAttribution)


def summed(attribution: G) -> G:
    attribution.gradient_func = _summed_gradients
    return attribution


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
