"""The integrated-gradients family, whose answers carry a convergence delta: integrated gradients
(path integral from a baseline) and gradient SHAP (its expectation over noisy baselines)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from captum.attr import NoiseTunnel
from captum.attr._core.gradient_shap import InputBaselineXGradient
from pydantic import Field, ModelWrapValidatorHandler, PlainValidator, WithJsonSchema, model_validator

from app.errors import InvalidInput
from app.inference.explained import TargetScalar, baseline_for, check_baseline
from app.inference.facts import ModelFacts
from app.inference.methods.base import Attributed, Attribution, Method, chunk, per_row, summed
from app.inference.methods.paths import BroadcastPathIntegratedGradients
from app.inference.methods.refine import DEFAULT_MAX_STEPS, DEFAULT_TOLERANCE, at_steps, auto_passes, refined
from app.inference.params import Baseline, MethodParams, Runs, Seed

_BOTH = frozenset({"tabular", "image"})


def check_baseline_fits(facts: ModelFacts, prm: Any) -> None:
    """A named baseline the model can give, a triple only for three channels."""
    check_baseline(facts.name, facts.has_mean, facts.spatial_input, prm.baseline)
    if isinstance(prm.baseline, tuple) and not (facts.spatial_input and facts.input_shape[0] == len(prm.baseline)):
        raise InvalidInput(f"params.baseline: one number per channel is for image models "
                           f"(model '{facts.name}' takes {facts.input_shape})")


def _omitted(value: object) -> bool:
    return value is None


MAX_STEPS = 1024


def _steps(value: object) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= MAX_STEPS:
            return value
        raise ValueError(f'steps must be from 1 to {MAX_STEPS}, or "auto"')
    raise ValueError(f'expected a whole number of steps (1 to {MAX_STEPS}) or "auto", not {value!r}')


Steps = Annotated[int | Literal["auto"], PlainValidator(_steps), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_STEPS}, {"type": "string", "enum": ["auto"]}]})]


class IntegratedGradientsParams(MethodParams):
    n_steps: Steps = Field(
        32, description='Steps of the path integral, or "auto": as many as `tolerance` needs, up to `max_steps`')
    tolerance: float | None = Field(
        None, gt=0.0, le=1.0, exclude_if=_omitted, json_schema_extra={"default": DEFAULT_TOLERANCE},
        description=f'With n_steps "auto": the largest |convergence_delta| allowed, relative to |F(x) - F(baseline)| '
                    f"(default {DEFAULT_TOLERANCE}); ignored otherwise")
    max_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, exclude_if=_omitted, json_schema_extra={"default": DEFAULT_MAX_STEPS},
        description=f'With n_steps "auto": the most steps tried (default {DEFAULT_MAX_STEPS}); ignored otherwise')
    baseline: Baseline = "zeros"
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                    "riemann_middle"] = Field("gausslegendre", description="Quadrature rule (Captum's)")

    @model_validator(mode="wrap")
    @classmethod
    def _auto_only(cls, data: Any, handler: ModelWrapValidatorHandler[IntegratedGradientsParams]
                   ) -> IntegratedGradientsParams:
        """tolerance and max_steps are filled in for "auto" and dropped for a number of steps, so
        that requests computing the same thing share a batch key."""
        prm = handler(data)
        update: dict[str, float | int | None]
        if prm.n_steps == "auto":
            update = {"tolerance": prm.tolerance or DEFAULT_TOLERANCE, "max_steps": prm.max_steps or DEFAULT_MAX_STEPS}
        else:
            update = {"tolerance": None, "max_steps": None}
        return prm if all(getattr(prm, k) == v for k, v in update.items()) else prm.model_copy(update=update)


def _ig_passes(prm: IntegratedGradientsParams, shape: tuple[int, ...]) -> int:
    """A fixed number of steps and the two forwards of the delta; "auto": its worst case."""
    if prm.n_steps == "auto":
        assert prm.max_steps is not None
        return auto_passes(prm.max_steps)
    return prm.n_steps + 2


def _integrated_gradients(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                          prm: IntegratedGradientsParams, max_rows: int) -> Attribution | Attributed:
    if prm.n_steps == "auto":
        return refined(forward, x, targets, prm, max_rows)
    ig = summed(BroadcastPathIntegratedGradients(forward))
    baseline = baseline_for(forward.model, x, prm.baseline)
    attr = at_steps(ig, x, baseline, targets, prm.n_steps, prm.method, max_rows)
    return attr, forward.delta(attr, x, baseline, targets, max_rows)


def _ig_defaults(facts: ModelFacts) -> dict[str, Any]:
    """Tabular models: "auto" (a forward is cheap, and 32 steps left 13-38% of held-out demo rows
    over 1%); image models: 32 steps (a forward is dear, and 32 meet 1% on the demo images)."""
    return {} if facts.spatial_input else {"n_steps": "auto"}


INTEGRATED_GRADIENTS = Method(
    "integrated_gradients", _BOTH, IntegratedGradientsParams, _integrated_gradients,
    passes=_ig_passes, reports_delta=True, defaults=_ig_defaults, check=check_baseline_fits, pixel_level=True)


class GradientShapParams(MethodParams):
    n_samples: int = Field(16, ge=1, le=1024, description="Noisy baselines drawn per instance")
    stdevs: float = Field(0.0, ge=0.0, le=1e6, description="Gaussian noise added to the input, in input units")
    baseline: Baseline = "zeros"
    seed: Seed = 0
    runs: Runs = 1


def _gradient_shap(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                   prm: GradientShapParams, max_rows: int) -> Attributed:
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

    return per_row(run, prm.seed, x, targets, prm.runs)


GRADIENT_SHAP = Method(
    "gradient_shap", _BOTH, GradientShapParams, _gradient_shap, passes=lambda prm, shape: prm.n_samples + 2,
    reports_delta=True, stochastic=True, check=check_baseline_fits, pixel_level=True)
