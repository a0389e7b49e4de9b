"""Perturbation methods: what changes when parts of the input are replaced. Occlusion slides a
window over an image; feature ablation replaces one feature at a time; Kernel SHAP fits a weighted
linear surrogate to random coalitions of features."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import FeatureAblation, KernelShap, Occlusion
from pydantic import Field

from app.inference.explained import TargetScalar, baseline_for, check_baseline
from app.inference.facts import ModelFacts
from app.inference.methods.base import Attributed, Attribution, Method, chunk, per_eval, per_row, samples_for
from app.inference.params import MethodParams, Runs, Seed, TabularBaseline

_TABULAR = frozenset({"tabular"})


class OcclusionParams(MethodParams):
    window: int = Field(16, ge=1, le=1024, description="Side of the square occluding window, in model-input pixels")
    stride: int = Field(8, ge=1, le=1024, description="Step between windows, in model-input pixels")


def _occlusion_passes(prm: OcclusionParams, shape: tuple[int, ...]) -> int:
    height, width = shape[-2], shape[-1]
    window = min(prm.window, height, width)
    return ((height - window) // prm.stride + 1) * ((width - window) // prm.stride + 1) + 1


def _occlusion(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
               prm: OcclusionParams, max_rows: int) -> Attribution:
    channels = x.shape[1]
    window = min(prm.window, x.shape[-2], x.shape[-1])
    attr = Occlusion(forward).attribute(
        x, sliding_window_shapes=(channels, window, window), strides=(channels, prm.stride, prm.stride),
        baselines=0.0, additional_forward_args=(targets,),
        perturbations_per_eval=per_eval(max_rows, x.shape[0], _occlusion_passes(prm, tuple(x.shape)) - 1))
    return attr, None


OCCLUSION = Method("occlusion", frozenset({"image"}), OcclusionParams, _occlusion, passes=_occlusion_passes)


def _zeros_without_mean(facts: ModelFacts) -> dict[str, Any]:
    """`mean` is the default baseline where the catalog gives a mean, else `zeros`."""
    return {} if facts.has_mean else {"baseline": "zeros"}


def _check_baseline(facts: ModelFacts, prm: Any) -> None:
    check_baseline(facts.name, facts.has_mean, facts.spatial_input, prm.baseline)


class FeatureAblationParams(MethodParams):
    baseline: TabularBaseline = Field("mean", description="What a feature is replaced with: the training "
                                      "mean (where the catalog gives one), zeros, or a number")


def _feature_ablation(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                      prm: FeatureAblationParams, max_rows: int) -> Attribution:
    attr = FeatureAblation(forward).attribute(
        x, baselines=baseline_for(forward.model, x, prm.baseline), additional_forward_args=(targets,),
        perturbations_per_eval=per_eval(max_rows, x.shape[0], x.shape[-1]))
    return attr, None


FEATURE_ABLATION = Method("feature_ablation", _TABULAR, FeatureAblationParams, _feature_ablation,
                          passes=lambda prm, shape: shape[-1] + 1, defaults=_zeros_without_mean,
                          check=_check_baseline)


class KernelShapParams(MethodParams):
    n_samples: int = Field(200, ge=2, le=10000, description="Coalitions evaluated per instance")
    baseline: TabularBaseline = "mean"
    seed: Seed = 0
    runs: Runs = 1


def _kernel_shap(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                 prm: KernelShapParams, max_rows: int) -> Attributed:
    shap = KernelShap(forward)

    def run(xi: torch.Tensor, ti: torch.Tensor) -> Attribution:
        attr = shap.attribute(xi, baselines=baseline_for(forward.model, xi, prm.baseline),
                              n_samples=prm.n_samples, additional_forward_args=(ti,),
                              perturbations_per_eval=chunk(1, prm.n_samples, max_rows))
        return attr, None

    return per_row(run, prm.seed, x, targets, prm.runs)


def _kernel_shap_defaults(facts: ModelFacts) -> dict[str, Any]:
    """More features, more coalitions (`samples_for`), and the baseline as feature_ablation's."""
    return {"n_samples": samples_for(facts.input_shape[-1]), **_zeros_without_mean(facts)}


KERNEL_SHAP = Method("kernel_shap", _TABULAR, KernelShapParams, _kernel_shap,
                     passes=lambda prm, shape: prm.n_samples, stochastic=True, defaults=_kernel_shap_defaults,
                     check=_check_baseline)
