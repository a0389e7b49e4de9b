"""Runs one batch of work on one replica: N payloads in, N results out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from app.errors import ErrorItem, InternalError, InvalidInput
from app.inference.explained import TargetScalar, requested_targets, resolve_predicted, scores_from_outputs
from app.inference.interrupt import checkpoint
from app.inference.loading import LoadedModel
from app.inference.methods import METHODS
from app.inference.params import MethodParams


@dataclass(frozen=True)
class PredictWork:
    inputs: NDArray[np.float32]
    """n x input_shape: what the model's kind decoded."""
    request_id: str = "-"

    @property
    def key(self) -> tuple[str, ...]:
        """Work with the same key may share a batch."""
        return ("predict",)


@dataclass(frozen=True)
class ExplainWork:
    inputs: NDArray[np.float32]
    targets: tuple[int | None, ...]
    """Per instance: a class index, or None for the predicted class."""
    method: str
    params: MethodParams
    request_id: str = "-"

    @property
    def key(self) -> tuple[str, MethodParams]:
        return (self.method, self.params)


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
R = TypeVar("R", PredictResult, ExplainResult)


def work_rows(work: Work) -> int:
    """The forward+backward rows `work` costs: its instances times its method's passes."""
    count = int(work.inputs.shape[0])
    if isinstance(work, PredictWork):
        return count
    return count * METHODS[work.method].passes(work.params, tuple(work.inputs.shape[1:]))


def _to_device(model: LoadedModel, arrays: Sequence[NDArray[np.float32]]) -> torch.Tensor:
    host = torch.from_numpy(np.concatenate(arrays, axis=0).astype(np.float32, copy=False))
    if model.device.type == "cuda":
        return host.pin_memory().to(model.device, non_blocking=True)
    return host


def _split(array: NDArray[np.float32], sizes: Sequence[int]) -> list[NDArray[np.float32]]:
    return np.split(array, np.cumsum(sizes)[:-1])


def _predicted_scores(model: LoadedModel, x: torch.Tensor, max_rows: int) -> torch.Tensor:
    """Scores of every row, at most `max_rows` rows through the model at once."""
    chunks = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], max_rows):
            checkpoint()
            chunks.append(model.module(x[i : i + max_rows]))
        return scores_from_outputs(model, torch.cat(chunks))


def _not_finite(what: str, index: int) -> InvalidInput:
    return InvalidInput(f"instance {index}: the model's {what} is not a finite number for this input (values "
                        "far outside what the model was trained on, or a baseline far from them?)",
                        [ErrorItem(("instances", index), f"{what} not finite")])


def _finite_or_error(result: R, *arrays: tuple[str, NDArray[np.float32] | None]) -> R | InvalidInput:
    """An item whose numbers are not all finite gets a 422 instead: a null never reaches an answer."""
    for what, array in arrays:
        if array is None:
            continue
        rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if bad.size:
            return _not_finite(what, int(bad[0]))
    return result


def run_batch(model: LoadedModel, work: Sequence[Work], max_rows: int) -> list[Result | InvalidInput]:
    """Compute a batch whose items share a kind, method and parameters; an item whose numbers are
    not finite is answered with its own 422."""
    if not work:
        return []
    sizes = [item.inputs.shape[0] for item in work]
    x = _to_device(model, [item.inputs for item in work])
    if isinstance(work[0], PredictWork):
        host = _predicted_scores(model, x, max_rows).float().cpu().numpy()
        return [_finite_or_error(PredictResult(s), ("output", s)) for s in _split(host, sizes)]
    first = work[0]
    if not all(isinstance(w, ExplainWork) and w.method == first.method and w.params == first.params
               for w in work):
        raise InternalError("a batch mixes methods or parameters")
    method = METHODS[first.method]
    requested = requested_targets([t for item in work for t in item.targets], x.device)  # type: ignore[union-attr]
    if method.single_forward:
        # One forward serves both the predictions and the attribution.
        forward = TargetScalar(model, record=True)
        with torch.enable_grad():
            attr, delta = method.attribute(forward, x.clone(), requested, first.params, max_rows)
        outputs = torch.cat(forward.outputs)
        if outputs.shape[0] != x.shape[0]:
            raise InternalError(f"{first.method} ran {outputs.shape[0]} forward rows for {x.shape[0]}")
        scores = scores_from_outputs(model, outputs)
    else:
        scores = _predicted_scores(model, x, max_rows)
        with torch.enable_grad():
            attr, delta = method.attribute(TargetScalar(model), x.clone(), resolve_predicted(model, requested, scores),
                                           first.params, max_rows)
    targets = resolve_predicted(model, requested, scores)
    if attr.shape[0] != x.shape[0]:
        raise InternalError(f"{first.method} returned {attr.shape[0]} rows for {x.shape[0]}")
    attr_host = attr.detach().float().cpu().numpy()
    delta_host = delta.detach().float().cpu().numpy().reshape(-1) if delta is not None else None
    score_host = scores.float().cpu().numpy()
    target_host = targets.cpu().numpy()
    results: list[Result | InvalidInput] = []
    start = 0
    for size in sizes:
        rows = slice(start, start + size)
        item = ExplainResult(score_host[rows], target_host[rows], attr_host[rows],
                             delta_host[rows] if delta_host is not None else None)
        checked = _finite_or_error(item, ("output", item.scores), ("attribution", item.attributions),
                                   ("convergence delta", item.deltas))
        if isinstance(checked, InvalidInput) and size > 1:  # name the instance within its own request
            checked.detail = checked.detail.replace("instance", "an instance", 1)
        results.append(checked)
        start += size
    return results
