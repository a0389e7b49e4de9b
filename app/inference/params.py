"""Parameter schemas of the attribution methods: bounds, defaults, resolution.

A resolved parameter object is frozen and hashable: together with the method name it is the
batch key, so only requests with identical parameters share a Captum call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema

from app.errors import ErrorItem, InvalidInput, listing

FLOAT32_MAX = 3.4028234663852886e38


def _baseline_check(*choices: str) -> Callable[[object], str | float]:
    """A named baseline, or a number: finite and within float32's range (the model computes in it)."""

    def check(value: object) -> str | float:
        if isinstance(value, str) and value in choices:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number) and abs(number) <= FLOAT32_MAX:
                return number
            raise ValueError("a number must be finite and within float32's range (|x| <= 3.4e38)")
        raise ValueError(f"expected {', '.join(repr(c) for c in choices)} or a number")

    return check


def _baseline_schema(*choices: str) -> dict[str, Any]:
    return {"anyOf": [{"type": "string", "enum": list(choices)},
                      {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}]}


Baseline = Annotated[str | float, PlainValidator(_baseline_check("zeros", "mean", "blur")),
                     WithJsonSchema(_baseline_schema("zeros", "mean", "blur"))]
TabularBaseline = Annotated[str | float, PlainValidator(_baseline_check("zeros", "mean")),
                            WithJsonSchema(_baseline_schema("zeros", "mean"))]


class MethodParams(BaseModel):
    """Strict: `true` is not 1 and `"32"` is not 32."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NoParams(MethodParams):
    pass


class IntegratedGradientsParams(MethodParams):
    n_steps: int = Field(32, ge=1, le=1024)
    baseline: Baseline = "zeros"
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                    "riemann_middle"] = "gausslegendre"


class GradientShapParams(MethodParams):
    n_samples: int = Field(16, ge=1, le=1024)
    stdevs: float = Field(0.0, ge=0.0, le=1e6)
    baseline: Baseline = "zeros"
    seed: int = Field(0, ge=0, le=2**31 - 1)


class SaliencyParams(MethodParams):
    abs: bool = False


class SmoothGradParams(MethodParams):
    n_samples: int = Field(16, ge=1, le=1024)
    stdevs: float = Field(0.1, ge=0.0, le=1e6)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class GradCamParams(MethodParams):
    layer: str | None = Field(None, max_length=200)


class OcclusionParams(MethodParams):
    window: int = Field(16, ge=1, le=1024)
    stride: int = Field(8, ge=1, le=1024)


class FeatureAblationParams(MethodParams):
    baseline: TabularBaseline = "mean"


class KernelShapParams(MethodParams):
    n_samples: int = Field(200, ge=2, le=10000)
    baseline: TabularBaseline = "mean"
    seed: int = Field(0, ge=0, le=2**31 - 1)


def resolve_params(model_cls: type[MethodParams], overrides: dict[str, Any],
                   request: dict[str, Any]) -> MethodParams:
    """Schema defaults, then the model's catalog overrides, then the request's values."""
    merged = {**overrides, **request}
    try:
        return model_cls.model_validate(merged)
    except ValidationError as exc:
        items = [ErrorItem(("params", *(str(p) for p in e["loc"])), e["msg"]) for e in exc.errors()]
        raise listing(InvalidInput, [(f"{'.'.join(str(p) for p in item.loc)}: {item.msg}", item)
                                     for item in items]) from None
