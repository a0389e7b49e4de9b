"""Runs one batch of work on one replica: N payloads in, N results out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from app.errors import ErrorItem, InternalError, InvalidInput
from app.inference import faithfulness
from app.inference.explained import (
    TargetScalar,
    chunked_outputs,
    requested_targets,
    resolve_predicted,
    scores_from_outputs,
)
from app.inference.inputs import ModelArray, instance_shape
from app.inference.loading import LoadedModel
from app.inference.methods import METHODS
from app.inference.methods.base import Attributed
from app.inference.params import MethodParams


@dataclass(frozen=True)
class PredictWork:
    inputs: ModelArray
    """n x input_shape, or n x H x W x 3 RGB bytes: what the model's kind decoded."""
    request_id: str = "-"

    @property
    def key(self) -> tuple[str, ...]:
        """Work with the same key may share a batch."""
        return ("predict",)


@dataclass(frozen=True)
class ExplainWork:
    inputs: ModelArray
    targets: tuple[int | None, ...]
    """Per instance: a class index, or None for the predicted class."""
    method: str
    params: MethodParams
    request_id: str = "-"
    faithfulness: bool = False
    """Also the deletion and insertion AUC of each explanation (app.inference.faithfulness)."""

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
    steps: NDArray[np.int64] | None = None
    """Integrated gradients to a tolerance: the steps each row used ..."""
    converged: NDArray[np.bool_] | None = None
    """... and whether its delta met the tolerance."""
    spread: NDArray[np.float32] | None = None
    """Stochastic methods over several runs: the standard error of each attribution."""
    faithfulness: NDArray[np.float64] | None = None
    """On request: per row, (deletion AUC, insertion AUC)."""


Work = PredictWork | ExplainWork
Result = PredictResult | ExplainResult
R = TypeVar("R", PredictResult, ExplainResult)


def work_rows(work: Work) -> int:
    """The forward+backward rows `work` costs: its instances times its method's passes."""
    count = int(work.inputs.shape[0])
    if isinstance(work, PredictWork):
        return count
    return count * METHODS[work.method].passes(work.params, instance_shape(work.inputs))


def _to_device(model: LoadedModel, arrays: Sequence[ModelArray],
               layout: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The batch's inputs as float32 on the model's device; RGB bytes are moved as bytes and made
    3 x H x W floats in [0, 1] there (the same floats as `inputs.model_input`), in `layout`:
    contiguous, as attributions to the inputs need them, or the model's own (channels-last: the
    bytes' own order, so no transposing copy here and none into the model)."""
    host = torch.from_numpy(np.concatenate(arrays, axis=0))  # a copy of its own, writable
    if model.device.type == "cuda":
        host = host.pin_memory().to(model.device, non_blocking=True)
    if host.dtype == torch.uint8:
        return host.permute(0, 3, 1, 2).to(torch.float32, memory_format=layout).div_(255.0)
    return host.to(torch.float32)


def _layout(model: LoadedModel, work: Sequence[Work]) -> torch.memory_format:
    """The model's memory format for a batch whose inputs nothing but the model reads: a layer
    method's (its gradient stops at the layer) without faithfulness scores; else contiguous."""
    first = work[0]
    if (isinstance(first, ExplainWork) and METHODS[first.method].needs_layers
            and not any(isinstance(item, ExplainWork) and item.faithfulness for item in work)):
        return model.module.memory_format
    return torch.contiguous_format


def _split(array: NDArray[np.float32], sizes: Sequence[int]) -> list[NDArray[np.float32]]:
    return np.split(array, np.cumsum(sizes)[:-1])


def _outputs(model: LoadedModel, x: torch.Tensor, max_rows: int, frozen: bool = False) -> torch.Tensor:
    """The model's outputs for every row, at most `max_rows` rows through it at once; `frozen`:
    through the frozen prediction graph where the model has one (the targets of an attribution
    come from the eager module its gradients are of)."""
    with torch.no_grad():
        return chunked_outputs(model.predict if frozen else model.module, x, max_rows)


def _not_finite(what: str, index: int) -> InvalidInput:
    return InvalidInput(f"instance {index}: the model's {what} is not a finite number for this input (values "
                        "far outside what the model was trained on, or a baseline far from them?)",
                        [ErrorItem(("instances", index), f"{what} not finite")])


def _finite_or_error(result: R, *arrays: tuple[str, NDArray[np.floating[Any]] | None]) -> R | InvalidInput:
    """An item whose numbers are not all finite gets a 422 instead: a null never reaches an answer."""
    for what, array in arrays:
        if array is None:
            continue
        rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if bad.size:
            return _not_finite(what, int(bad[0]))
    return result


def _faithfulness(model: LoadedModel, asked: Sequence[bool], sizes: Sequence[int], x: torch.Tensor,
                  attr: torch.Tensor, targets: torch.Tensor, max_rows: int) -> NDArray[np.float64] | None:
    """Deletion and insertion AUC of the rows of the items that asked (N x 2; other rows NaN)."""
    wanted = np.repeat(np.asarray(asked, dtype=bool), sizes)
    if not wanted.any():
        return None
    rows = torch.from_numpy(np.flatnonzero(wanted)).to(x.device)
    out = np.full((x.shape[0], 2), np.nan)
    out[wanted] = faithfulness.areas(faithfulness.curves(model, x[rows], attr[rows], targets[rows], max_rows))
    return out


def _attributed(out: tuple[torch.Tensor, torch.Tensor | None] | Attributed) -> Attributed:
    return out if isinstance(out, Attributed) else Attributed(*out)


def run_batch(model: LoadedModel, work: Sequence[Work], max_rows: int) -> list[Result | InvalidInput]:
    """Compute a batch whose items share a kind, method and parameters; an item whose numbers are
    not finite is answered with its own 422."""
    if not work:
        return []
    sizes = [item.inputs.shape[0] for item in work]
    x = _to_device(model, [item.inputs for item in work], _layout(model, work))
    if isinstance(work[0], PredictWork):
        host = scores_from_outputs(model, _outputs(model, x, max_rows, frozen=True)).float().cpu().numpy()
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
            out = _attributed(method.attribute(forward, x.clone(), requested, first.params, max_rows))
        outputs = torch.cat(forward.outputs)
        if outputs.shape[0] != x.shape[0]:
            raise InternalError(f"{first.method} ran {outputs.shape[0]} forward rows for {x.shape[0]}")
        scores = scores_from_outputs(model, outputs)
    else:
        outputs = _outputs(model, x, max_rows)
        scores = scores_from_outputs(model, outputs)
        with torch.enable_grad():
            out = _attributed(method.attribute(TargetScalar(model, batch_outputs=outputs), x.clone(),
                                               resolve_predicted(model, requested, scores), first.params, max_rows))
    targets = resolve_predicted(model, requested, scores)
    if out.attr.shape[0] != x.shape[0]:
        raise InternalError(f"{first.method} returned {out.attr.shape[0]} rows for {x.shape[0]}")
    attr_host = out.attr.detach().float().cpu().numpy()
    delta_host = out.delta.detach().float().cpu().numpy().reshape(-1) if out.delta is not None else None
    steps_host = out.steps.cpu().numpy() if out.steps is not None else None
    converged_host = out.converged.cpu().numpy() if out.converged is not None else None
    spread_host = out.spread.detach().float().cpu().numpy() if out.spread is not None else None
    asked = [isinstance(item, ExplainWork) and item.faithfulness for item in work]
    faithful_host = _faithfulness(model, asked, sizes, x, out.attr.detach(), targets, max_rows)
    score_host = scores.float().cpu().numpy()
    target_host = targets.cpu().numpy()
    results: list[Result | InvalidInput] = []
    start = 0
    for index, size in enumerate(sizes):
        rows = slice(start, start + size)
        item = ExplainResult(score_host[rows], target_host[rows], attr_host[rows],
                             delta_host[rows] if delta_host is not None else None,
                             steps_host[rows] if steps_host is not None else None,
                             converged_host[rows] if converged_host is not None else None,
                             spread_host[rows] if spread_host is not None else None,
                             faithful_host[rows] if faithful_host is not None and asked[index] else None)
        checked = _finite_or_error(item, ("output", item.scores), ("attribution", item.attributions),
                                   ("convergence delta", item.deltas), ("faithfulness", item.faithfulness))
        if isinstance(checked, InvalidInput) and size > 1:  # name the instance within its own request
            checked.detail = checked.detail.replace("instance", "an instance", 1)
        results.append(checked)
        start += size
    return results
