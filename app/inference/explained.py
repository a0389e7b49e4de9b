"""The explained function: one scalar per row for that row's target (Captum's advice), and
the baselines attribution starts from."""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from app.errors import InvalidInput
from app.inference.loading import LoadedModel


def scores_from_outputs(model: LoadedModel, out: torch.Tensor) -> torch.Tensor:
    """What clients see as scores: softmax or sigmoid of logits, probabilities as they are."""
    if model.spec.task == "regression":
        return out
    if model.out_width == 1:
        prob = out[:, 0] if model.output_kind == "probabilities" else torch.sigmoid(out[:, 0])
        return torch.stack([1.0 - prob, prob], dim=1)
    return out if model.output_kind == "probabilities" else torch.softmax(out, dim=1)


class TargetScalar(nn.Module):
    """`forward(x, targets)` returns, per row, the model's output for that row's target.

    Multi-output models: the target column. A single-output binary classifier: the output for
    target 1, and its complement for target 0 (`-logit`, or `1 - p` where the model itself
    ends in a sigmoid). Regression: the one output.

    With `record=True` (single-pass methods, whose one forward is on the inputs themselves) the
    outputs are kept for the predictions, and a target of -1 means the row's predicted class:
    the prediction and the attribution share one forward pass.
    """

    def __init__(self, model: LoadedModel, record: bool = False):
        super().__init__()
        self.model = model
        self.module = model.module
        self.single = model.out_width == 1
        self.binary = self.single and model.spec.task == "classification"
        self.probabilities = model.output_kind == "probabilities"
        self.record = record
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if self.record:
            kept = out.detach()
            self.outputs.append(kept)
            if not self.single or self.binary:
                predicted = scores_from_outputs(self.model, kept).argmax(dim=1)
                targets = torch.where(targets < 0, predicted, targets)
        if self.binary:
            value = out[:, 0]
            other = 1.0 - value if self.probabilities else -value
            return torch.where(targets == 1, value, other)
        if self.single:
            return out[:, 0]
        return out.gather(1, targets.view(-1, 1)).squeeze(1)


def blurred(x: torch.Tensor) -> torch.Tensor:
    """A heavily blurred copy of images (N, C, H, W): the `blur` baseline."""
    height, width = x.shape[-2:]
    sigma = max(height, width) / 16.0
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(height, width) // 2) - 1)
    kernel = max(kernel, 3)
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def baseline_for(model: LoadedModel, x: torch.Tensor, choice: str | float) -> torch.Tensor | float:
    """Resolve a baseline choice for inputs `x`: a tensor like `x`, or a number."""
    if not isinstance(choice, str):
        return float(choice)
    if choice == "zeros":
        return 0.0
    if choice == "mean":
        tabular = model.spec.tabular
        if model.spec.kind != "tabular":
            raise InvalidInput("baseline 'mean' is for tabular models; use zeros, blur or a number")
        if tabular is None or tabular.mean is None:
            raise InvalidInput(f"model '{model.spec.name}' has no training mean in its catalog entry")
        mean = torch.tensor(tabular.mean, dtype=x.dtype, device=x.device)
        return mean.expand_as(x).contiguous()
    if choice == "blur":
        if model.spec.kind != "image":
            raise InvalidInput("baseline 'blur' is for image models; use zeros, mean or a number")
        return blurred(x)
    raise InvalidInput(f"unknown baseline '{choice}'")
