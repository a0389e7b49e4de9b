"""DeepLift (the Rescale rule: one forward of the input and its baseline, one backward whose
gradients are replaced at every non-linearity by difference quotients) and DeepLift SHAP (DeepLift
averaged over reference inputs drawn around the baseline). Both attribute F(x) - F(reference)
exactly where the rule applies, so their answers carry a convergence delta.

Captum hooks the net's non-linear modules (ReLU, sigmoid, max-pooling, ...): a model whose forward
calls one such module twice (a torchvision ResNet block's `relu`) or that cannot take hooks
(TorchScript) is not offered these methods; a non-linearity applied as a function (`F.relu`) is
passed through as if linear, which its convergence delta shows.
"""

from __future__ import annotations

import warnings

import torch
from captum.attr import DeepLift
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from pydantic import Field

from app.inference.explained import TargetScalar, baseline_for, baseline_rows
from app.inference.facts import ModelFacts
from app.inference.interrupt import checkpoint
from app.inference.methods.base import Attributed, Attribution, Method, grad_leaf, per_row
from app.inference.methods.integrated import check_baseline_fits
from app.inference.params import Baseline, MethodParams, Runs, Seed

_BOTH = frozenset({"tabular", "image"})
_NON_LINEAR = frozenset(kind.__name__ for kind in SUPPORTED_NON_LINEAR)

# Captum announces its temporary hooks on every call (a UserWarning that says nothing to a client).
warnings.filterwarnings("ignore", message="Setting forward, backward hooks and attributes on non-linear",
                        category=UserWarning)


def _fits(facts: ModelFacts) -> bool:
    """Hooks attach to its modules and no non-linear module is called twice in a forward."""
    return facts.hookable and not any(kind in _NON_LINEAR for kind in facts.reused.values())


class DeepLiftParams(MethodParams):
    baseline: Baseline = "zeros"


def _deeplift(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
              prm: DeepLiftParams, max_rows: int) -> Attribution:
    deeplift = DeepLift(forward)
    baseline = baseline_for(forward.model, x, prm.baseline)
    step = max(1, max_rows // 2)  # each forward carries inputs and baselines
    parts = []
    with forward.module.as_built():  # its rules are per non-linear module, as the net defines them
        for i in range(0, x.shape[0], step):
            checkpoint()
            rows = slice(i, i + step)
            parts.append(deeplift.attribute(grad_leaf(x[rows]), baselines=baseline_rows(baseline, rows),
                                            additional_forward_args=(targets[rows],)))
    attr = torch.cat(parts)
    # Captum computes the delta with its hooks removed: the served function's F(x) - F(baseline).
    return attr, forward.delta(attr, x, baseline, targets, max_rows)


DEEPLIFT = Method("deeplift", _BOTH, DeepLiftParams, _deeplift, passes=lambda prm, shape: 4, reports_delta=True,
                  fits=_fits, check=check_baseline_fits, pixel_level=True)
"""Passes: the input and its baseline forward and backward, and the delta's two ends (at most)."""


class DeepLiftShapParams(MethodParams):
    baseline: Baseline = "zeros"
    n_baselines: int = Field(16, ge=2, le=1024, description="Reference inputs drawn around the baseline")
    stdevs: float = Field(1.0, ge=0.0, le=1e6, description="Gaussian noise of the references, in standard "
                          "deviations of the model's normalisation (the catalog's std; 1 where it has none)")
    seed: Seed = 0
    runs: Runs = 1


def references(forward: TargetScalar, xi: torch.Tensor, prm: DeepLiftShapParams) -> torch.Tensor:
    """`n_baselines` references for one input: its baseline plus Gaussian noise of `stdevs` normalisation stds."""
    chosen = baseline_for(forward.model, xi, prm.baseline)
    base = chosen if isinstance(chosen, torch.Tensor) else torch.full_like(xi, chosen)
    noise = torch.randn((prm.n_baselines, *xi.shape[1:]), dtype=xi.dtype, device=xi.device)
    return base + prm.stdevs * forward.module.std.to(xi.dtype) * noise


def _deeplift_shap(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                   prm: DeepLiftShapParams, max_rows: int) -> Attributed:
    """Captum's DeepLiftShap: DeepLift of the input against each reference, averaged; the
    references in chunks of at most `max_rows` forward rows."""
    deeplift = DeepLift(forward)
    step = max(1, max_rows // 2)

    def run(xi: torch.Tensor, ti: torch.Tensor) -> Attribution:
        drawn = references(forward, xi, prm)
        attrs, deltas = [], []
        for i in range(0, drawn.shape[0], step):
            checkpoint()
            part = drawn[i : i + step]
            attr, delta = deeplift.attribute(grad_leaf(xi.expand_as(part)), baselines=part,
                                             additional_forward_args=(ti.expand(part.shape[0]),),
                                             return_convergence_delta=True)
            attrs.append(attr)
            deltas.append(delta)
        return torch.cat(attrs).mean(dim=0, keepdim=True), torch.cat(deltas).mean().reshape(1)

    with forward.module.as_built():  # its rules are per non-linear module, as the net defines them
        return per_row(run, prm.seed, x, targets, prm.runs)


DEEPLIFT_SHAP = Method("deeplift_shap", _BOTH, DeepLiftShapParams, _deeplift_shap,
                       passes=lambda prm, shape: 4 * prm.n_baselines, reports_delta=True, stochastic=True,
                       fits=_fits, check=check_baseline_fits, pixel_level=True)
