"""Typed results of the API: predictions, explanations (with overlay helpers), model info."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str | None
    score: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClassScore:
        return cls(int(data["index"]), data.get("label"), float(data["score"]))


@dataclass(frozen=True)
class Prediction:
    """Classification: `index`, `label`, `score`, `top_k`. Regression: `value`."""

    index: int | None = None
    label: str | None = None
    score: float | None = None
    top_k: list[ClassScore] | None = None
    value: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        top_k = data.get("top_k")
        return cls(
            index=data.get("index"),
            label=data.get("label"),
            score=data.get("score"),
            top_k=[ClassScore.from_json(item) for item in top_k] if top_k is not None else None,
            value=data.get("value"),
        )

    def describe(self) -> str:
        """One short line: `benign 97.0%`, `class 2 41.3%` or `151.3` (regression)."""
        if self.value is not None:
            return f"{self.value:.4g}"
        name = self.label if self.label is not None else f"class {self.index}"
        return f"{name} {100 * (self.score or 0.0):.1f}%"

    def to_json(self) -> dict[str, Any]:
        if self.value is not None:
            return {"value": self.value}
        out: dict[str, Any] = {"index": self.index, "label": self.label, "score": self.score}
        if self.top_k is not None:
            out["top_k"] = [{"index": c.index, "label": c.label, "score": c.score} for c in self.top_k]
        return out


@dataclass(frozen=True)
class Target:
    """The class an explanation attributes (index, label, and its score when known)."""

    index: int
    label: str | None
    score: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        score = data.get("score")
        return cls(int(data["index"]), data.get("label"), float(score) if score is not None else None)


@dataclass(frozen=True)
class FeatureAttribution:
    """A tabular feature's submitted value and its signed contribution."""

    feature: str
    value: float
    attribution: float


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a `data:<type>;base64,<payload>` URI."""
    head, sep, payload = uri.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError("not a base64 data URI")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in data URI: {exc}") from None


def decode_array(data: Mapping[str, Any]) -> NDArray[np.float32]:
    """An EncodedArray (`{"dtype": "float32", "shape": [...], "b64": ...}`) as a numpy array."""
    if data.get("dtype") != "float32":
        raise ValueError(f"unsupported dtype {data.get('dtype')!r} (expected float32)")
    shape = tuple(int(n) for n in data["shape"])
    values = np.frombuffer(base64.b64decode(data["b64"], validate=True), dtype="<f4")
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{values.size} values for shape {list(shape)}")
    return values.reshape(shape).astype(np.float32)


@dataclass(frozen=True)
class Explanation:
    """One instance's explanation.

    `attributions` is a list of `FeatureAttribution` (tabular, in feature order) or an
    H x W float32 array (image, at the model's input size) when asked for with
    `outputs=["attributions"]` (sent as lists, or as bytes with `attributions_format="float32"`);
    None otherwise. `overlay`, `heatmap` and `chart` are the data
    URIs as sent (ready for `<img src>`); the `*_png` properties decode them to PNG bytes.
    `n_steps` and `converged` (integrated gradients with n_steps "auto"), `faithfulness`
    (`{"deletion_auc", "insertion_auc"}`, when asked for) and `spread` (sampling methods with
    runs > 1) are as the API answers them; None where they do not apply.
    """

    prediction: Prediction
    target: Target
    convergence_delta: float | None = None
    n_steps: int | None = None
    converged: bool | None = None
    faithfulness: dict[str, float] | None = None
    spread: dict[str, Any] | None = None
    attributions: list[FeatureAttribution] | NDArray[np.float32] | None = None
    overlay: str | None = None
    heatmap: str | None = None
    chart: str | None = None
    summary: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Explanation:
        raw_attr = data.get("attributions")
        attributions: list[FeatureAttribution] | NDArray[np.float32] | None = None
        if isinstance(raw_attr, Mapping):
            attributions = decode_array(raw_attr)
        elif raw_attr is not None:
            if raw_attr and isinstance(raw_attr[0], Mapping):
                attributions = [FeatureAttribution(str(a["feature"]), float(a["value"]),
                                                   float(a["attribution"])) for a in raw_attr]
            else:
                attributions = np.asarray(raw_attr, dtype=np.float32)
        return cls(
            prediction=Prediction.from_json(data.get("prediction") or {}),
            target=Target.from_json(data["target"]),
            convergence_delta=data.get("convergence_delta"),
            n_steps=data.get("n_steps"),
            converged=data.get("converged"),
            faithfulness=data.get("faithfulness"),
            spread=data.get("spread"),
            attributions=attributions,
            overlay=data.get("overlay"),
            heatmap=data.get("heatmap"),
            chart=data.get("chart"),
            summary=data.get("summary"),
            raw=dict(data),
        )

    @property
    def overlay_png(self) -> bytes | None:
        return decode_data_uri(self.overlay) if self.overlay else None

    @property
    def heatmap_png(self) -> bytes | None:
        return decode_data_uri(self.heatmap) if self.heatmap else None

    @property
    def chart_png(self) -> bytes | None:
        return decode_data_uri(self.chart) if self.chart else None

    def save_overlay(self, path: str | Path) -> Path:
        """Write the overlay PNG to `path` (parent folders created); returns the path."""
        return _save(self.overlay_png, path, "overlay", 'outputs=["overlay"] on an image model')

    def save_heatmap(self, path: str | Path) -> Path:
        return _save(self.heatmap_png, path, "heatmap", 'outputs=["heatmap"] on an image model')

    def save_chart(self, path: str | Path) -> Path:
        return _save(self.chart_png, path, "chart", 'outputs=["chart"] on a tabular model')

    def ranked(self) -> list[FeatureAttribution]:
        """Tabular attributions, strongest (by absolute value) first."""
        if not isinstance(self.attributions, list):
            raise ValueError("ranked() needs tabular attributions")
        return sorted(self.attributions, key=lambda a: abs(a.attribution), reverse=True)


def _save(data: bytes | None, path: str | Path, what: str, hint: str) -> Path:
    if data is None:
        raise ValueError(f"this explanation has no {what}: ask for it with {hint}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


@dataclass(frozen=True)
class ExplainResult:
    """The answer to one explain request: one `Explanation` per instance, in request order."""

    model: str
    method: str
    params: dict[str, Any]
    explanations: list[Explanation]
    timings: dict[str, float]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExplainResult:
        return cls(
            model=str(data["model"]),
            method=str(data["method"]),
            params=dict(data.get("params") or {}),
            explanations=[Explanation.from_json(e) for e in data["explanations"]],
            timings={k: float(v) for k, v in (data.get("timings_ms") or {}).items()},
        )

    def __len__(self) -> int:
        return len(self.explanations)

    def __getitem__(self, i: int) -> Explanation:
        return self.explanations[i]


@dataclass(frozen=True)
class ModelInfo:
    """A served model (`GET /v1/models/{name}`); `methods` maps a method to its default params."""

    name: str
    kind: str
    task: str
    labels: list[str] | None
    features: list[str] | None
    input: dict[str, int] | None
    device: str
    default_method: str
    methods: dict[str, dict[str, Any]]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        features = data.get("features")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            task=str(data["task"]),
            labels=data.get("labels"),
            features=[str(f["name"]) for f in features] if features is not None else None,
            input=data.get("input"),
            device=str(data.get("device", "")),
            default_method=str(data.get("default_method", "")),
            methods={str(m["name"]): dict(m.get("params") or {}) for m in data.get("methods") or []},
        )
