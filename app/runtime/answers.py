"""Turns computed results into the JSON shapes of API.md (predictions, targets, explanations)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.errors import ErrorItem, InvalidInput, did_you_mean, quoted
from app.inference.catalog import ModelSpec
from app.schemas import TargetValue


def round_significant(value: float) -> float:
    """6 significant digits, as every number in an answer."""
    return float(f"{value:.6g}")


def prediction(spec: ModelSpec, labels: list[str] | None, scores: NDArray[np.float32],
               top_k: int | None) -> dict[str, Any]:
    """One instance's prediction: class index, label, score and top_k; or a regression value."""
    if spec.task == "regression":
        return {"value": round_significant(float(scores[0]))}
    order = np.argsort(-scores, kind="stable")
    best = int(order[0])
    answer: dict[str, Any] = {
        "index": best, "label": labels[best] if labels else None, "score": round_significant(float(scores[best]))}
    k = min(top_k or min(5, len(scores)), len(scores))
    answer["top_k"] = [
        {"index": int(i), "label": labels[int(i)] if labels else None, "score": round_significant(float(scores[i]))}
        for i in order[:k]]
    return answer


def target(spec: ModelSpec, labels: list[str] | None, scores: NDArray[np.float32], index: int) -> dict[str, Any]:
    if spec.task == "regression":
        return {"index": 0, "label": None, "score": None}
    return {"index": index, "label": labels[index] if labels else None,
            "score": round_significant(float(scores[index]))}


def resolve_targets(spec: ModelSpec, labels: list[str] | None, classes: int,
                    requested: TargetValue | list[TargetValue], count: int) -> tuple[int | None, ...]:
    """Per instance: a class index, or None for the predicted class. Out of range: 422."""
    if isinstance(requested, list):
        if len(requested) != count:
            raise InvalidInput(
                f"target has {len(requested)} entries for {count} instances",
                [ErrorItem(("target",), "one target per instance")])
        values: Sequence[TargetValue] = requested
    else:
        values = [requested] * count
    return tuple(_one_target(spec, labels, classes, v, i, isinstance(requested, list))
                 for i, v in enumerate(values))


def _one_target(spec: ModelSpec, labels: list[str] | None, classes: int, value: TargetValue,
                i: int, per_instance: bool) -> int | None:
    loc: tuple[str | int, ...] = ("target", i) if per_instance else ("target",)
    if value is None:
        return None
    if spec.task == "regression":
        if value == 0:
            return 0
        raise InvalidInput("regression models have one output: target must be null or 0",
                           [ErrorItem(loc, "out of range")])
    if isinstance(value, str):
        if labels is None or value not in labels:
            hint = did_you_mean(value, labels or [])
            raise InvalidInput(f"unknown target label {quoted(value)}{hint}", [ErrorItem(loc, f"unknown label{hint}")])
        return labels.index(value)
    if not 0 <= value < classes:
        raise InvalidInput(f"target {quoted(value)} is out of range 0..{classes - 1}",
                           [ErrorItem(loc, "out of range")])
    return value


def headline(spec: ModelSpec, pred: dict[str, Any]) -> str:
    """`purchase 92%` or `value 151.3`: the start of a plain-language summary."""
    if spec.task == "regression":
        return f"{spec.name} {pred['value']:.4g}"
    label = pred["label"] if pred["label"] is not None else f"class {pred['index']}"
    return f"{label} {pred['score'] * 100:.0f}%"


def tabular_attributions(features: Sequence[str], values: NDArray[np.float64],
                         attributions: NDArray[np.float32]) -> list[dict[str, Any]]:
    return [{"feature": name, "value": float(v), "attribution": round_significant(float(a))}
            for name, v, a in zip(features, values, attributions, strict=True)]
