"""The pydantic models of API.md: the HTTP contract in code."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, WithJsonSchema

Kind = Literal["tabular", "image"]
Task = Literal["classification", "regression"]
SignMode = Literal["absolute", "positive", "negative", "all"]
OutputName = Literal["overlay", "heatmap", "attributions", "chart", "summary"]

_INSTANCE_SCHEMA: dict[str, Any] = {
    "description": "A tabular row (object by feature name, or array of numbers in feature order) "
    'or an image: {"b64": "<base64 of PNG/JPEG/WebP bytes>"} or a "data:image/...;base64," URI.',
    "anyOf": [
        {"type": "object", "additionalProperties": {"type": "number"}},
        {"type": "array", "items": {"type": "number"}},
        {"type": "object", "properties": {"b64": {"type": "string"}}, "required": ["b64"]},
        {"type": "string"},
    ],
}
Instance = Annotated[dict[str, Any] | list[Any] | str, WithJsonSchema(_INSTANCE_SCHEMA)]
"""Shape-checked here; validated against the model (features, finiteness, image bytes) in inference."""
TargetValue = StrictInt | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Feature(BaseModel):
    name: str


class ImageInput(BaseModel):
    height: int
    width: int
    channels: int


class MethodInfo(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    params: dict[str, Any] = Field(description="The method's default parameters for this model, resolved")
    params_schema: dict[str, Any] = Field(
        alias="schema", description="JSON schema of the parameters: types, bounds, enums, this model's defaults")


class ModelInfo(BaseModel):
    name: str
    kind: Kind
    task: Task
    labels: list[str] | None
    features: list[Feature] | None = None
    input: ImageInput | None = None
    device: str
    ready: bool
    default_method: str
    methods: list[MethodInfo]


class ModelList(BaseModel):
    models: list[ModelInfo]


class PredictRequest(_Strict):
    instances: list[Instance] = Field(min_length=1)
    top_k: int | None = Field(None, ge=1, le=1000)
    model: str | None = Field(None, description="Model name; required on POST /predict only")


class RenderOptions(_Strict):
    colormap: str | None = Field(
        None, description="jet, viridis, inferno, ...; default jet, or bwr for sign=all")
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    sign: SignMode = "absolute"
    max_size: int = Field(1024, ge=16, le=8192)


class ExplainRequest(_Strict):
    instances: list[Instance] = Field(min_length=1)
    method: str | None = None
    target: TargetValue | list[TargetValue] = None
    params: dict[str, Any] = Field(default_factory=dict)
    outputs: list[OutputName] | None = None
    render: RenderOptions = Field(default_factory=RenderOptions)
    top_k: int | None = Field(None, ge=1, le=1000)
    model: str | None = Field(None, description="Model name; required on POST /explain only")


class ClassScore(BaseModel):
    index: int
    label: str | None
    score: float


class Prediction(BaseModel):
    """Classification: index/label/score/top_k. Regression: value."""

    index: int | None = None
    label: str | None = None
    score: float | None = None
    top_k: list[ClassScore] | None = None
    value: float | None = None


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class FeatureAttribution(BaseModel):
    feature: str
    value: float
    attribution: float


class Target(BaseModel):
    index: int
    label: str | None
    score: float | None


class Explanation(BaseModel):
    prediction: Prediction
    target: Target
    convergence_delta: float | None
    overlay: str | None = None
    heatmap: str | None = None
    attributions: list[list[float]] | list[FeatureAttribution] | None = None
    chart: str | None = None
    summary: str | None = None


class Timings(BaseModel):
    queue: float
    compute: float
    render: float
    total: float


class ExplainResponse(BaseModel):
    model: str
    method: str
    params: dict[str, Any]
    explanations: list[Explanation]
    timings_ms: Timings


class Alive(BaseModel):
    status: Literal["alive"]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "starting", "draining"]
    models: dict[str, str]


class ProblemItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemItem] | None = None
