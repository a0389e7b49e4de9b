"""Tabular rows: named features in, signed contributions by feature out (with an optional ranked
chart and a one-sentence summary)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from app.errors import InvalidInput
from app.inference.inputs import tabular_rows
from app.kinds.base import Decoded, ExplainOptions, HostWork, Rendered, RequestLimits
from app.render import contribution_chart, data_uri, summary_sentence

if TYPE_CHECKING:
    from app.inference.catalog import ModelSpec
    from app.schemas import Prediction


def headline(model: str, prediction: Prediction) -> str:
    """`purchase 92%` or `diabetes 151.3`: the start of a plain-language summary."""
    if prediction.value is not None:
        return f"{model} {prediction.value:.4g}"
    label = prediction.label if prediction.label is not None else f"class {prediction.index}"
    return f"{label} {(prediction.score or 0.0) * 100:.0f}%"


def _render(features: Sequence[str], values: list[float], attributions: list[float], title: str,
            outputs: frozenset[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "chart" in outputs:
        fields["chart"] = data_uri(contribution_chart(features, values, attributions, title=title))
    if "summary" in outputs:
        fields["summary"] = summary_sentence(title, features, attributions)
    return fields


_PICTURED = frozenset({"chart", "summary"})
"""The outputs this kind renders itself."""


class TabularKind:
    name = "tabular"
    outputs: frozenset[str] = frozenset({"chart", "summary", "faithfulness"})
    example_suffixes: tuple[str, ...] = (".json",)
    """What a model's demo `examples` may be: JSON files of `{"instances": [...]}`."""
    attributions_formats: frozenset[str] = frozenset({"list"})
    method_kinds: frozenset[str] = frozenset({"tabular"})
    """The methods for these kinds apply to it (a method row names the kinds it is for)."""
    shape_key = "features"
    """The catalog key that decides what one instance is."""
    default_outputs: frozenset[str] = frozenset()

    def check_spec(self, spec: ModelSpec) -> None:
        if not spec.features:
            raise ValueError("tabular models need 'features'")
        if len(set(spec.features)) != len(spec.features):
            raise ValueError("features must be unique")
        if spec.image is not None:
            raise ValueError("tabular models take no [models.image] table")
        for key in ("mean", "std"):
            values = getattr(spec.tabular, key, None) if spec.tabular else None
            if values is not None and len(values) != len(spec.features):
                raise ValueError(f"tabular.{key} has {len(values)} values for {len(spec.features)} features")

    def input_shape(self, spec: ModelSpec) -> tuple[int, ...]:
        return (len(spec.features or []),)

    def normalisation(self, spec: ModelSpec) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        n = len(spec.features or [])
        table = spec.tabular
        mean = table.mean if table and table.mean else [0.0] * n
        std = table.std if table and table.std else [1.0] * n
        return np.asarray(mean, np.float32).reshape(1, n), np.asarray(std, np.float32).reshape(1, n)

    def mean_input(self, spec: ModelSpec) -> NDArray[np.float32] | None:
        if spec.tabular is None or spec.tabular.mean is None:
            return None
        return np.asarray(spec.tabular.mean, np.float32)

    def tensor_inputs(self, spec: ModelSpec) -> dict[str, tuple[str, list[int]]]:
        """Open Inference Protocol: one FP32 row of the features per instance."""
        return {"input": ("FP32", [-1, len(spec.features or [])])}

    def describe(self, spec: ModelSpec) -> dict[str, Any]:
        return {"features": [{"name": f} for f in spec.features or []], "input": None}

    async def decode(self, spec: ModelSpec, instances: Sequence[Any], files: Sequence[bytes],
                     limits: RequestLimits, host: HostWork, options: ExplainOptions | None,
                     pixels: Sequence[NDArray[np.uint8]] = ()) -> Decoded:
        if files or len(pixels):
            raise InvalidInput("file parts and pixels are for image models; send tabular rows as JSON instances")
        rows = tabular_rows(instances, spec.features or [])  # at most MAX_INSTANCES x features: in place
        return Decoded(rows.astype(np.float32), list(rows))

    async def answer(self, spec: ModelSpec, decoded: Decoded, attributions: NDArray[np.float32],
                     predictions: Sequence[Prediction], options: ExplainOptions,
                     host: HostWork) -> list[Rendered]:
        features = spec.features or []
        fields: list[dict[str, Any]] = []
        jobs = []
        for raw, attr, prediction in zip(decoded.items, attributions, predictions, strict=True):
            values = [float(v) for v in raw]
            attrs = [float(a) for a in attr]
            fields.append({"attributions": [  # FeatureAttribution fields: validated in one pass with the answer
                {"feature": f, "value": v, "attribution": float(f"{a:.6g}")}
                for f, v, a in zip(features, values, attrs, strict=True)]})
            if options.outputs & _PICTURED:
                jobs.append(host.run(_render, features, values, attrs, headline(spec.name, prediction),
                                     options.outputs))
        for item, extra in zip(fields, await asyncio.gather(*jobs), strict=False):
            item |= extra
        return [Rendered(item) for item in fields]


TABULAR = TabularKind()
