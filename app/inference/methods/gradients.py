"""Single-pass gradient methods (saliency, input x gradient) and SmoothGrad (saliency averaged
over noisy copies of the input)."""

from __future__ import annotations

import torch
from captum.attr import InputXGradient, NoiseTunnel, Saliency
from pydantic import Field

from app.inference.explained import TargetScalar
from app.inference.methods.base import Attributed, Attribution, Method, chunk, grad_leaf, in_chunks, per_row, summed
from app.inference.params import MethodParams, NoParams, Runs, Seed

_BOTH = frozenset({"tabular", "image"})


class SaliencyParams(MethodParams):
    abs: bool = Field(False, description="Absolute gradients (Captum's default) instead of signed ones")


def _saliency(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
              prm: SaliencyParams, max_rows: int) -> Attribution:
    saliency = summed(Saliency(forward))
    return in_chunks(
        lambda xs, ts: (saliency.attribute(grad_leaf(xs), additional_forward_args=(ts,), abs=prm.abs), None),
        x, targets, max_rows)


SALIENCY = Method("saliency", _BOTH, SaliencyParams, _saliency, passes=lambda prm, shape: 1, single_forward=True,
                  pixel_level=True)


def _input_x_gradient(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                      prm: NoParams, max_rows: int) -> Attribution:
    ixg = summed(InputXGradient(forward))
    return in_chunks(lambda xs, ts: (ixg.attribute(grad_leaf(xs), additional_forward_args=(ts,)), None),
                     x, targets, max_rows)


INPUT_X_GRADIENT = Method("input_x_gradient", _BOTH, NoParams, _input_x_gradient, passes=lambda prm, shape: 1,
                          single_forward=True, pixel_level=True)


class SmoothGradParams(MethodParams):
    n_samples: int = Field(16, ge=1, le=1024, description="Noisy copies averaged per instance")
    stdevs: float = Field(0.1, ge=0.0, le=1e6, description="Gaussian noise, in input units")
    seed: Seed = 0
    runs: Runs = 1


def _smoothgrad(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
                prm: SmoothGradParams, max_rows: int) -> Attributed:
    tunnel = NoiseTunnel(summed(Saliency(forward)))

    def run(xi: torch.Tensor, ti: torch.Tensor) -> Attribution:
        attr = tunnel.attribute(xi, nt_type="smoothgrad", nt_samples=prm.n_samples, stdevs=prm.stdevs,
                                nt_samples_batch_size=chunk(1, prm.n_samples, max_rows),
                                additional_forward_args=(ti,), abs=False)
        return attr, None

    return per_row(run, prm.seed, x, targets, prm.runs)


SMOOTHGRAD = Method("smoothgrad", _BOTH, SmoothGradParams, _smoothgrad, passes=lambda prm, shape: prm.n_samples,
                    stochastic=True, pixel_level=True)
