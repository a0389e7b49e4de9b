"""The integrated-gradients family, whose answers carry a convergence delta: integrated gradients
(path integral from a baseline) and gradient SHAP (its expectation over noisy baselines)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from captum.attr._core.gradient_shap import InputBaselineXGradient
from pydantic import Field

from app.errors import InvalidInput
from app.inference.explained import TargetScalar, baseline_for, check_baseline
from app.inference.facts import ModelFacts
from app.inference.methods.base import Attribution, Method, chunk, in_chunks, per_row, summed
from app.inference.params import Baseline, MethodParams, Seed

_BOTH = frozenset({"tabular", "image"})


def check_baseline_fits(facts: ModelFacts, prm: Any) -> None:
    """A named baseline the model can give, a triple only for three channels."""
    check_baseline(facts.name, facts.has_mean, facts.spatial_input, prm.baseline)
    if isinstance(prm.baseline, tuple) and not (facts.spatial_input and facts.input_shape[0] == len(prm.baseline)):
        raise InvalidInput(f"params.baseline: one number per channel is for image models "
                           f"(model '{facts.name}' takes {facts.input_shape})")


class IntegratedGradientsParams(MethodParams):
    n_steps: int = Field(32, ge=1, le=1024, description="Steps of the path integral")
    baseline: Baseline = "zeros"
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                    "riemann_middle"] = Field("gausslegendre", description="Quadrature rule (Captum's)")


def _integrated_gradients(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                          prm: IntegratedGradientsParams, max_rows: int) -> Attribution:
    ig = summed(IntegratedGradients(forward))

    def run(xs: torch.Tensor, ts: torch.Tensor) -> Attribution:
        attr, delta = ig.attribute(
            xs, baselines=baseline_for(forward.model, xs, prm.baseline), additional_forward_args=(ts,),
            n_steps=prm.n_steps, method=prm.method,
            internal_batch_size=chunk(xs.shape[0], prm.n_steps, max_rows), return_convergence_delta=True)
        return attr, delta

    return in_chunks(run, x, targets, max_rows)


INTEGRATED_GRADIENTS = Method(
    "integrated_gradients", _BOTH, IntegratedGradientsParams, _integrated_gradients,
    passes=lambda prm, shape: prm.n_steps + 2, reports_delta=True, check=check_baseline_fits)


class GradientShapParams(MethodParams):
    n_samples: int = Field(16, ge=1, le=1024, description="Noisy baselines drawn per instance")
    stdevs: float = Field(0.0, ge=0.0, le=1e6, description="Gaussian noise added to the input, in input units")
    baseline: Baseline = "zeros"
    seed: Seed = 0


def _gradient_shap(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                   prm: GradientShapParams, max_rows: int) -> Attribution:
    """Captum's GradientShap (a NoiseTunnel over InputBaselineXGradient), with its samples in
    chunks of at most `max_rows`: 1024 samples of a large image never share one forward."""
    tunnel = NoiseTunnel(summed(InputBaselineXGradient(forward)))

    def run(xi: torch.Tensor, ti: torch.Tensor) -> Attribution:
        base = baseline_for(forward.model, xi, prm.baseline)
        base_t = base if isinstance(base, torch.Tensor) else torch.full_like(xi, base)
        attr, delta = tunnel.attribute.__wrapped__(  # type: ignore[attr-defined]  # as GradientShap calls it
            tunnel, xi, nt_type="smoothgrad", nt_samples=prm.n_samples,
            nt_samples_batch_size=chunk(1, prm.n_samples, max_rows), stdevs=prm.stdevs,
            draw_baseline_from_distrib=True, baselines=(base_t,), additional_forward_args=(ti,),
            return_convergence_delta=True)
        return attr, delta

    return per_row(run, prm.seed, x, targets)


GRADIENT_SHAP = Method(
    "gradient_shap", _BOTH, GradientShapParams, _gradient_shap, passes=lambda prm, shape: prm.n_samples + 2,
    reports_delta=True, stochastic=True, check=check_baseline_fits)
