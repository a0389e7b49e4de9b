"""Runs one batch of work on one replica: N payloads in, N results out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from app.errors import InternalError
from app.inference.explained import TargetScalar, scores_from_outputs
from app.inference.loading import LoadedModel
from app.inference.methods import METHODS
from app.inference.params import MethodParams


@dataclass(frozen=True)
class PredictWork:
    inputs: NDArray[np.float32]
    """n x features, or n x 3 x H x W pixels in [0, 1]."""
    request_id: str = "-"


@dataclass(frozen=True)
class ExplainWork:
    inputs: NDArray[np.float32]
    targets: tuple[int | None, ...]
    """Per instance: a class index, or None for the predicted class."""
    method: str
    params: MethodParams
    request_id: str = "-"


@dataclass(frozen=True)
class PredictResult:
    scores: NDArray[np.float32]
    """n x classes probabilities (binary single-output: [1 - p, p]); regression: n x 1 values."""


@dataclass(frozen=True)
class ExplainResult:
    scores: NDArray[np.float32]
    targets: NDArray[np.int64]
    attributions: NDArray[np.float32]
    """Shaped like the inputs (images: channels kept; GradCAM: 1 x H x W)."""
    deltas: NDArray[np.float32] | None


Work = PredictWork | ExplainWork
Result = PredictResult | ExplainResult


def _to_device(model: LoadedModel, arrays: Sequence[NDArray[np.float32]]) -> torch.Tensor:
    host = torch.from_numpy(np.concatenate(arrays, axis=0).astype(np.float32, copy=False))
    if model.device.type == "cuda":
        return host.pin_memory().to(model.device, non_blocking=True)
    return host


def _split(array: NDArray[np.float32], sizes: Sequence[int]) -> list[NDArray[np.float32]]:
    return np.split(array, np.cumsum(sizes)[:-1])


def _predicted_scores(model: LoadedModel, x: torch.Tensor, max_rows: int) -> torch.Tensor:
    """Scores of every row, at most `max_rows` rows through the model at once."""
    with torch.inference_mode():
        chunks = [model.module(x[i : i + max_rows]) for i in range(0, x.shape[0], max_rows)]
        return scores_from_outputs(model, torch.cat(chunks))


def run_batch(model: LoadedModel, work: Sequence[Work], max_rows: int) -> list[Result]:
    """Compute a batch whose items share a kind, method and parameters."""
    if not work:
        return []
    sizes = [item.inputs.shape[0] for item in work]
    x = _to_device(model, [item.inputs for item in work])
    if isinstance(work[0], PredictWork):
        host = _predicted_scores(model, x, max_rows).float().cpu().numpy()
        return [PredictResult(s) for s in _split(host, sizes)]
    first = work[0]
    if not all(isinstance(w, ExplainWork) and w.method == first.method and w.params == first.params
               for w in work):
        raise InternalError("a batch mixes methods or parameters")
    method = METHODS[first.method]
    requested = _requested_targets(work, x.device)
    if method.single_forward:
        # One forward serves both the predictions and the attribution.
        forward = TargetScalar(model, record=True)
        with torch.enable_grad():
            attr, delta = method.attribute(forward, x.clone(), requested, first.params, max_rows)
        outputs = torch.cat(forward.outputs)
        if outputs.shape[0] != x.shape[0]:
            raise InternalError(f"{first.method} ran {outputs.shape[0]} forward rows for {x.shape[0]}")
        scores = scores_from_outputs(model, outputs)
        targets = _resolve_targets(model, requested, scores)
    else:
        scores = _predicted_scores(model, x, max_rows)
        targets = _resolve_targets(model, requested, scores)
        with torch.enable_grad():
            attr, delta = method.attribute(TargetScalar(model), x.clone(), targets, first.params, max_rows)
    if attr.shape[0] != x.shape[0]:
        raise InternalError(f"{first.method} returned {attr.shape[0]} rows for {x.shape[0]}")
    attr_host = attr.detach().float().cpu().numpy()
    delta_host = delta.detach().float().cpu().numpy().reshape(-1) if delta is not None else None
    score_host = scores.float().cpu().numpy()
    target_host = targets.cpu().numpy()
    results: list[Result] = []
    start = 0
    for size in sizes:
        rows = slice(start, start + size)
        results.append(ExplainResult(
            score_host[rows], target_host[rows], attr_host[rows],
            delta_host[rows] if delta_host is not None else None))
        start += size
    return results


def _requested_targets(work: Sequence[Work], device: torch.device) -> torch.Tensor:
    """Per row: the requested class index, or -1 for the predicted class."""
    chosen: list[int] = []
    for item in work:
        assert isinstance(item, ExplainWork)
        chosen.extend(-1 if t is None else t for t in item.targets)
    return torch.tensor(chosen, dtype=torch.long, device=device)


def _resolve_targets(model: LoadedModel, requested: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    if model.spec.task != "classification":
        return torch.zeros_like(requested)
    return torch.where(requested < 0, scores.argmax(dim=1), requested)
