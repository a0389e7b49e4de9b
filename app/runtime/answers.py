"""The parts of an answer every kind shares: predictions, and the target, from the request's value
to the class an explanation attributes (the one home of the target's rules)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from app.errors import ErrorItem, InvalidInput, did_you_mean, quoted
from app.schemas import ClassScore, Faithfulness, Prediction, Spread, Target, TargetValue

DEFAULT_TOP_K = 5
SMALL = 64
"""Up to this many classes are ranked in Python rather than numpy."""


def round_significant(value: float) -> float:
    """6 significant digits, as every number in an answer."""
    return float(f"{value:.6g}")


def prediction(labels: list[str] | None, regression: bool, scores: NDArray[np.float32],
               top_k: int | None) -> Prediction:
    """One instance's prediction: class index, label, score and top_k; or a regression value."""
    if regression:
        return Prediction(value=round_significant(float(scores[0])))
    k = min(top_k or DEFAULT_TOP_K, len(scores))
    if len(scores) <= SMALL:  # numpy's call overhead is most of the cost of ranking a few classes
        values = scores.tolist()
        order: Sequence[int] = sorted(range(len(values)), key=values.__getitem__, reverse=True)  # stable
    else:
        order = np.argsort(-scores, kind="stable").tolist()
    ranked = [ClassScore(index=i, label=labels[i] if labels else None,
                         score=round_significant(float(scores[i]))) for i in order[:k]]
    best = ranked[0]
    return Prediction(index=best.index, label=best.label, score=best.score, top_k=ranked)


def spread(attributions: NDArray[np.float32], errors: NDArray[np.float32], params: object) -> Spread:
    """One explanation's spread over its runs; per feature where an instance's attributions are a
    vector (tabular rows)."""
    total = float(np.sqrt(np.square(attributions.astype(np.float64)).sum()))
    noise = float(np.sqrt(np.square(errors.astype(np.float64)).sum()))
    per_feature = [round_significant(float(e)) for e in errors] if errors.ndim == 1 else None
    relative = noise / total if total else 0.0
    return Spread(runs=int(getattr(params, "runs", 1)), relative_error=round_significant(relative),
                  standard_errors=per_feature)


def faithfulness(areas: NDArray[np.float64]) -> Faithfulness:
    """(deletion AUC, insertion AUC) as an answer shows them."""
    deletion, insertion = (round_significant(float(a)) for a in areas)
    return Faithfulness(deletion_auc=deletion, insertion_auc=insertion)


def target(labels: list[str] | None, regression: bool, scores: NDArray[np.float32], index: int) -> Target:
    if regression:
        return Target(index=0, label=None, score=None)
    return Target(index=index, label=labels[index] if labels else None,
                  score=round_significant(float(scores[index])))


def resolve_targets(labels: list[str] | None, classes: int, regression: bool,
                    requested: TargetValue | list[TargetValue], count: int) -> tuple[int | None, ...]:
    """Per instance: a class index, or None for the predicted class; 422 for one out of range."""
    per_instance = isinstance(requested, list)
    if isinstance(requested, list):
        if len(requested) != count:
            raise InvalidInput(f"target has {len(requested)} entries for {count} instances",
                               [ErrorItem(("target",), "one target per instance")])
        values: Sequence[TargetValue] = requested
    else:
        values = [requested] * count
    return tuple(_one_target(labels, classes, regression, v, ("target", i) if per_instance else ("target",))
                 for i, v in enumerate(values))


def _one_target(labels: list[str] | None, classes: int, regression: bool, value: TargetValue,
                loc: tuple[str | int, ...]) -> int | None:
    if value is None:
        return None
    if regression:
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
        raise InvalidInput(f"target {quoted(value)} is out of range 0..{classes - 1}", [ErrorItem(loc, "out of range")])
    return value
