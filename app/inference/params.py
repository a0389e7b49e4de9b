"""What the methods' parameter schemas share, and how parameters are resolved.

Each method's schema is in its row's module (app.inference.methods). A resolved parameter object is
frozen and hashable: together with the method name it is the batch key, so only requests with
identical parameters share a Captum call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema

from app.errors import ErrorItem, InvalidInput, listing

FLOAT32_MAX = 3.4028234663852886e38


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and abs(number) <= FLOAT32_MAX:
            return number
        raise ValueError("a number must be finite and within float32's range (|x| <= 3.4e38)")
    raise ValueError(f"{value!r} is not a number")


def _baseline_check(*choices: str, channels: int = 0) -> Callable[[object], BaselineValue]:
    """A named baseline, a number (finite, within float32's range: the model computes in it), or,
    with `channels`, one number per channel."""

    def check(value: object) -> BaselineValue:
        if isinstance(value, str):
            if value in choices:
                return value
        elif channels and isinstance(value, list | tuple):
            if len(value) != channels:
                raise ValueError(f"a per-channel baseline has {channels} numbers, not {len(value)}")
            return tuple(_number(v) for v in value)
        else:
            return _number(value)
        extra = f", [{', '.join(['r', 'g', 'b'][:channels])}]" if channels else ""
        raise ValueError(f"expected {', '.join(repr(c) for c in choices)}, a number{extra}")

    return check


def _baseline_schema(*choices: str, channels: int = 0) -> dict[str, Any]:
    number = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    options: list[dict[str, Any]] = [{"type": "string", "enum": list(choices)}, number]
    if channels:
        options.append({"type": "array", "items": number, "minItems": channels, "maxItems": channels})
    return {"anyOf": options}


BaselineValue = str | float | tuple[float, ...]
Baseline = Annotated[BaselineValue, PlainValidator(_baseline_check("zeros", "mean", "blur", channels=3)),
                     WithJsonSchema(_baseline_schema("zeros", "mean", "blur", channels=3))]
"""Where attribution starts: `zeros`, `mean` (the model's mean input: the training mean of a
tabular model, the normalisation's mean colour of an image model), `blur` (images), a number, or
one number per colour channel (images)."""
TabularBaseline = Annotated[BaselineValue, PlainValidator(_baseline_check("zeros", "mean")),
                            WithJsonSchema(_baseline_schema("zeros", "mean"))]


class MethodParams(BaseModel):
    """Strict: `true` is not 1 and `"32"` is not 32."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NoParams(MethodParams):
    pass


P = TypeVar("P", bound=MethodParams)


Seed = Annotated[int, Field(ge=0, le=2**31 - 1, description="Draws the method's noise: same seed, same numbers")]
Runs = Annotated[int, Field(ge=1, le=32, description="Independent runs, from seeds seed, seed + 1, ...: with more "
                            "than one, the attributions are their mean and each explanation carries its spread")]


def resolve_params(model_cls: type[P], overrides: dict[str, Any], request: dict[str, Any]) -> P:
    """Schema defaults, then the model's defaults (catalog `method_params` over the method's own
    per-model defaults), then the request's values; 422 naming each bad parameter."""
    merged = {**overrides, **request}
    try:
        return model_cls.model_validate(merged)
    except ValidationError as exc:
        items = [ErrorItem(("params", *(str(p) for p in e["loc"])), e["msg"]) for e in exc.errors()]
        raise listing(InvalidInput, [(f"{'.'.join(str(p) for p in item.loc)}: {item.msg}", item)
                                     for item in items]) from None
