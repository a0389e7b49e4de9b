"""The explained function: one scalar per row for that row's target (Captum's advice), the one
place where "the predicted class" is resolved, and the baselines attribution starts from."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from app.errors import InternalError, InvalidInput
from app.inference.interrupt import checkpoint
from app.inference.loading import LoadedModel

PREDICTED = -1
"""A row's target meaning "its predicted class", until `resolve_predicted` picks it."""


def scores_from_outputs(model: LoadedModel, out: torch.Tensor) -> torch.Tensor:
    """What clients see as scores: softmax or sigmoid of logits, probabilities as they are."""
    if model.spec.task == "regression":
        return out
    if model.out_width == 1:
        prob = out[:, 0] if model.output_kind == "probabilities" else torch.sigmoid(out[:, 0])
        return torch.stack([1.0 - prob, prob], dim=1)
    return out if model.output_kind == "probabilities" else torch.softmax(out, dim=1)


def requested_targets(targets: Sequence[int | None], device: torch.device) -> torch.Tensor:
    """Per row: the requested class index, or PREDICTED."""
    return torch.tensor([PREDICTED if t is None else t for t in targets], dtype=torch.long, device=device)


def resolve_predicted(model: LoadedModel, requested: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """PREDICTED rows get their predicted class (regression: the one output, 0)."""
    if model.spec.task != "classification":
        return torch.zeros_like(requested)
    return torch.where(requested == PREDICTED, scores.argmax(dim=1), requested)


class TargetScalar(nn.Module):
    """`forward(x, targets)` returns, per row, the model's output for that row's target.

    Multi-output models: the target column. A single-output binary classifier: the output for
    target 1, and its complement for target 0 (`-logit`, or `1 - p` where the model itself
    ends in a sigmoid). Regression: the one output.

    With `record=True` (single-pass methods, whose one forward is on the inputs themselves) the
    outputs are kept for the predictions, and PREDICTED targets are resolved from them: the
    prediction and the attribution share one forward pass. Every forward is a checkpoint where
    abandoned work stops (`app.inference.interrupt`).
    """

    def __init__(self, model: LoadedModel, record: bool = False, batch_outputs: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.module = model.module
        self.single = model.out_width == 1
        self.binary = self.single and model.spec.task == "classification"
        self.probabilities = model.output_kind == "probabilities"
        self.record = record
        self.outputs: list[torch.Tensor] = []
        self.batch_outputs = batch_outputs
        """The module's outputs on the batch's inputs, where the caller has them already (the
        predictions' forward): `endpoints` takes F(x) from them instead of another forward."""

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        checkpoint()
        out = self.module(x)
        if self.record:
            kept = out.detach()
            self.outputs.append(kept)
            targets = resolve_predicted(self.model, targets, scores_from_outputs(self.model, kept))
        return self.pick(out, targets)

    def pick(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per row, the output `out` (the module's) gives for that row's target."""
        if self.binary:
            value = out[:, 0]
            other = 1.0 - value if self.probabilities else -value
            return torch.where(targets == 1, value, other)
        if self.single:
            return out[:, 0]
        return out.gather(1, targets.view(-1, 1)).squeeze(1)

    def endpoints(self, x: torch.Tensor, baseline: torch.Tensor | float, targets: torch.Tensor,
                  max_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """F(x) and F(baseline) per row, the two ends of a convergence delta, for the batch's inputs
        `x`: F(x) from `batch_outputs` where given, F of a number baseline (the same input for
        every row) from the model's `constant_output`, at most `max_rows` rows per forward
        otherwise. (Captum's `return_convergence_delta` runs both forwards again for every chunk of
        rows it attributes: one-row forwards for a request of one image.)"""
        with torch.no_grad():
            end_out = self.batch_outputs
            if end_out is None:
                end_out = chunked_outputs(self.module, x, max_rows)
            if end_out.shape[0] != x.shape[0]:
                raise InternalError(f"outputs of {end_out.shape[0]} rows given for a batch of {x.shape[0]}")
            if isinstance(baseline, torch.Tensor):
                start_out = chunked_outputs(self.module, baseline, max_rows)
            else:
                start_out = self.model.constant_output(baseline).expand(x.shape[0], -1)
            return self.pick(end_out, targets), self.pick(start_out, targets)

    def delta(self, attr: torch.Tensor, x: torch.Tensor, baseline: torch.Tensor | float, targets: torch.Tensor,
              max_rows: int) -> torch.Tensor:
        """Captum's convergence delta of `attr` from `baseline` to the batch's inputs `x`:
        sum(attributions) - (F(x) - F(baseline)) per row, its ends from `endpoints`."""
        return convergence_delta(attr, *self.endpoints(x, baseline, targets, max_rows))


def convergence_delta(attr: torch.Tensor, end: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Captum's convergence delta per row: sum(attributions) - (F(x) - F(baseline))."""
    return attr.reshape(attr.shape[0], -1).sum(dim=1) - (end - start)


def chunked_outputs(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, max_rows: int) -> torch.Tensor:
    """`forward` of every row of `x`, at most `max_rows` rows at once (a checkpoint before each)."""
    parts = []
    for i in range(0, x.shape[0], max_rows):
        checkpoint()
        parts.append(forward(x[i : i + max_rows]))
    return torch.cat(parts)


def baseline_rows(baseline: torch.Tensor | float, rows: slice | torch.Tensor) -> torch.Tensor | float:
    """A baseline for these rows of the batch (a number serves every row)."""
    return baseline[rows] if isinstance(baseline, torch.Tensor) else baseline


def blurred(x: torch.Tensor) -> torch.Tensor:
    """A heavily blurred copy of images (N, C, H, W): the `blur` baseline."""
    height, width = x.shape[-2:]
    sigma = max(height, width) / 16.0
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(height, width) // 2) - 1)
    kernel = max(kernel, 3)
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def check_baseline(model_name: str, has_mean: bool, spatial_input: bool, choice: object) -> None:
    """422 for a named baseline this model cannot give (checked before the request is queued)."""
    if choice == "mean" and not has_mean:
        raise InvalidInput(f"params.baseline: model '{model_name}' has no mean input in its catalog entry "
                           "(tabular.mean); use zeros or a number")
    if choice == "blur" and not spatial_input:
        raise InvalidInput(f"params.baseline: 'blur' is for image models (model '{model_name}' is not one); "
                           "use zeros, mean or a number")


def baseline_for(model: LoadedModel, x: torch.Tensor, choice: str | float | Sequence[float]) -> torch.Tensor | float:
    """Resolve a baseline choice for inputs `x`: a tensor like `x`, or a number. A sequence is
    one number per channel (images)."""
    if isinstance(choice, int | float):
        return float(choice)
    if not isinstance(choice, str):
        per_channel = torch.tensor(list(choice), dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.dim() - 2)))
        return per_channel.expand_as(x).contiguous()
    if choice == "zeros":
        return 0.0
    if choice == "mean":
        mean = model.spec.input_kind.mean_input(model.spec)
        check_baseline(model.spec.name, mean is not None, model.facts.spatial_input, choice)
        assert mean is not None
        return torch.from_numpy(mean).to(device=x.device, dtype=x.dtype).unsqueeze(0).expand_as(x).contiguous()
    if choice == "blur":
        check_baseline(model.spec.name, model.facts.has_mean, model.facts.spatial_input, choice)
        return blurred(x)
    raise InvalidInput(f"params.baseline: unknown baseline {choice!r}")
