"""Faithfulness of an explanation: deletion and insertion AUC (Petsiuk et al., RISE, 2018).

Deletion: the target's score as the most important features (or pixels) are removed first, in
decreasing order of the attribution (channels summed; ties in raster order), until none is left;
insertion: the score as they are put back first into an input that has none. Each curve is the
score at `points` evenly spaced fractions of the features (images: 0, 1/32, ..., 1 of the pixels;
tabular rows: one feature at a time), and its AUC is the trapezoid rule's on [0, 1]. A faithful
explanation has a low deletion and a high insertion AUC. The score is the one clients see: the
target's probability, or a regression model's value (then the AUCs are in its units).

What a removed feature becomes: an image's pixel takes the normalisation's mean colour (zero
after normalisation, as RISE's code substitutes), and insertion starts from a heavily blurred
copy of the image (RISE's); a tabular feature takes the training mean (zeros where the catalog
has none), for both curves. The perturbed inputs are built chunk by chunk on the model's device,
at most `max_rows` per forward, with a checkpoint between chunks.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from app.inference.explained import blurred, scores_from_outputs
from app.inference.interrupt import checkpoint
from app.inference.loading import LoadedModel

IMAGE_STEPS = 32


def steps(input_shape: tuple[int, ...]) -> int:
    """Steps of a curve: 32 for images, one per feature for tabular rows."""
    return IMAGE_STEPS if len(input_shape) == 3 else input_shape[-1]


def passes(input_shape: tuple[int, ...]) -> int:
    """Forward passes per instance: both curves, each at steps + 1 points."""
    return 2 * (steps(input_shape) + 1)


def _substrates(model: LoadedModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(what a deleted feature becomes, what an insertion starts from), like `x`."""
    mean = model.spec.input_kind.mean_input(model.spec)
    removed = (torch.from_numpy(mean).to(device=x.device, dtype=x.dtype).unsqueeze(0).expand_as(x)
               if mean is not None else torch.zeros_like(x))
    start = blurred(x) if x.dim() == 4 else removed
    return removed, start


def _positions(attributions: torch.Tensor) -> torch.Tensor:
    """Per row, each feature's (pixel's) rank in decreasing attribution, channels summed: N x P."""
    if attributions.dim() == 2:  # tabular: N x F
        scores = attributions
    else:  # images: N x C x H x W, or GradCAM's N x 1 x H x W
        scores = attributions.reshape(attributions.shape[0], attributions.shape[1], -1).sum(dim=1)
    order = torch.argsort(-scores, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def curves(model: LoadedModel, x: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor,
           max_rows: int) -> NDArray[np.float64]:
    """N x 2 x (steps + 1): the deletion and insertion curves of each row's target score."""
    n = x.shape[0]
    k = steps(tuple(x.shape[1:]))
    ranks = _positions(attributions.to(x.device))
    features = ranks.shape[1]
    counts = torch.round(torch.arange(k + 1, device=x.device, dtype=torch.float64) * features / k).long()
    removed, start = _substrates(model, x)
    jobs = [(row, curve, point) for row in range(n) for curve in (0, 1) for point in range(k + 1)]
    out = np.empty((n, 2, k + 1), dtype=np.float64)
    with torch.inference_mode():
        for begin in range(0, len(jobs), max_rows):
            checkpoint()
            part = jobs[begin : begin + max_rows]
            rows = torch.tensor([j[0] for j in part], device=x.device)
            first = ranks[rows] < counts[torch.tensor([j[2] for j in part], device=x.device)].unsqueeze(1)
            if x.dim() == 4:  # one rank per pixel, for every channel
                first = first.reshape(len(part), 1, *x.shape[2:])
            deleting = torch.tensor([j[1] == 0 for j in part], device=x.device).reshape(-1, *[1] * (x.dim() - 1))
            # deletion: the first-ranked features removed; insertion: only the first-ranked ones present
            batch = torch.where(deleting, torch.where(first, removed[rows], x[rows]),
                                torch.where(first, x[rows], start[rows]))
            scores = scores_from_outputs(model, model.module(batch))
            picked = scores.gather(1, targets[rows].view(-1, 1)).squeeze(1).double().cpu().numpy()
            for (row, curve, point), value in zip(part, picked, strict=True):
                out[row, curve, point] = value
    return out


def areas(curve_values: NDArray[np.float64]) -> NDArray[np.float64]:
    """N x 2 (deletion AUC, insertion AUC): the trapezoid rule over [0, 1]."""
    k = curve_values.shape[-1] - 1
    return (curve_values[..., :-1] + curve_values[..., 1:]).sum(axis=-1) / (2.0 * k)
