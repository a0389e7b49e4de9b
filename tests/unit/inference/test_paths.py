"""app/inference/methods/paths.py: Captum's integrated gradients, bit for bit, with the path made in one broadcast."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from app.inference.methods.paths import BroadcastPathIntegratedGradients, path

METHODS = ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 5)).eval()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps", [2, 7, 32])
@pytest.mark.parametrize("shape", [(1, 30), (5, 30), (3, 3, 9, 7)])
def test_the_path_is_captums(method: str, steps: int, shape: tuple[int, ...]) -> None:
    alphas = approximation_parameters(method)[1](steps)
    inputs = torch.randn(shape, generator=torch.Generator().manual_seed(steps)) * 10
    for baseline in (0.0, 0, -1.5, torch.randn(shape), torch.randn((1, *shape[1:])), torch.zeros(shape)):
        captums = torch.cat([baseline + alpha * (inputs - baseline) for alpha in alphas], dim=0)
        ours = path(inputs, baseline, alphas)
        assert ours.shape == captums.shape and torch.equal(ours, captums)


def _both(model: nn.Module, inputs: torch.Tensor, **kwargs: Any) -> tuple[Any, Any]:
    return (IntegratedGradients(model).attribute(inputs, **kwargs),
            BroadcastPathIntegratedGradients(model).attribute(inputs, **kwargs))


@pytest.mark.parametrize("method", METHODS)
def test_attributions_and_deltas_are_captums(method: str) -> None:
    rows = torch.randn(6, 30, generator=torch.Generator().manual_seed(3))
    for kwargs in ({"target": 1}, {"target": torch.tensor([0, 1, 2, 0, 1, 2]), "baselines": rows.mean(0, keepdim=True)},
                   {"target": 2, "baselines": 0.5, "internal_batch_size": 7},
                   {"target": 0, "n_steps": 5, "return_convergence_delta": True}):
        captums, ours = _both(_mlp(), rows, method=method, **kwargs)
        if isinstance(captums, tuple):
            assert torch.equal(ours[0], captums[0]) and torch.equal(ours[1], captums[1])
        else:
            assert torch.equal(ours, captums)
    images = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(4))
    captums, ours = _both(_cnn(), images, target=3, method=method, n_steps=16, internal_batch_size=5)
    assert torch.equal(ours, captums)


def test_without_multiplying_by_inputs_and_with_several_inputs() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a.sin() * b).sum(dim=1, keepdim=True)

    a, b = torch.randn(4, 6), torch.randn(4, 6)
    for multiply in (True, False):
        captums = IntegratedGradients(Two(), multiply_by_inputs=multiply).attribute((a, b), baselines=(0.1, b * 0))
        ours = BroadcastPathIntegratedGradients(Two(), multiply_by_inputs=multiply).attribute(
            (a, b), baselines=(0.1, b * 0))
        assert all(torch.equal(x, y) for x, y in zip(ours, captums, strict=True))


def test_other_dtypes_take_captums_own_path() -> None:
    rows = torch.randn(3, 30, dtype=torch.bfloat16)
    model = _mlp().to(torch.bfloat16)
    captums, ours = _both(model, rows, target=1, n_steps=8)
    assert torch.equal(ours, captums)
