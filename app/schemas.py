"""The pydantic models of the HTTP contract (docs/api.md): requests, answers and problems.

They are what OpenAPI publishes (`/openapi.json`, `/docs`); descriptions and examples live here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, WithJsonSchema

from app import examples
from app.types import KINDS, METHOD_NAMES, AttributionsFormat, Colormap, OutputName, Sign, Task

MethodName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(METHOD_NAMES)})]
"""A method of the table (app.inference.methods); the schema lists the shipped ones, and an unknown
name is refused by the table itself (422), so a method added as a plug-in needs no change here."""
KindName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(KINDS)})]
"""An input kind (app.kinds), likewise."""

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
"""Shape-checked here; validated against the model (features, finiteness, image bytes) by its kind."""
TargetValue = StrictInt | str | None

_INSTANCES = Field(min_length=1, description="1 to MAX_INSTANCES (default 64) inputs, all for one model")
_TOP_K = Field(None, ge=1, le=1000, description="How many classes each prediction's top_k lists (default up to 5)")
_MODEL = Field(None, max_length=200, description="Model name; required on POST /predict and /explain only")


def _omitted(value: object) -> bool:
    return value is None


def _optional(description: str) -> Any:
    """A field the answer leaves out when it does not apply (not asked for, not this kind of model)."""
    return Field(None, description=description, exclude_if=_omitted)


def _examples(*values: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(values)})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Feature(BaseModel):
    name: str = Field(description="The feature's name, as instances name it")


class ImageInput(BaseModel):
    """What an image model sees: submitted images are resized to this (catalog `[models.image]`)."""

    height: int
    width: int
    channels: int


class MethodInfo(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    name: MethodName
    params: dict[str, Any] = Field(description="The method's default parameters for this model, resolved")
    params_schema: dict[str, Any] = Field(
        alias="schema", description="JSON schema of the parameters: types, bounds, enums, this model's defaults")


class ModelInfo(BaseModel):
    """A served model, as the catalog declares it and as it is loaded."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "purchase", "kind": "tabular", "task": "classification", "labels": ["no_purchase", "purchase"],
        "features": [{"name": n} for n in examples.PURCHASE_ROW], "input": None, "device": "cpu",
        "ready": True, "default_method": "integrated_gradients",
        "methods": [{"name": "integrated_gradients",
                     "params": {"n_steps": 32, "baseline": "zeros", "method": "gausslegendre"}}]}]})

    name: str
    kind: KindName
    task: Task
    labels: list[str] | None = Field(description="Class labels in output order; null for regression")
    features: list[Feature] | None = Field(None, description="Tabular models: the features, in model order")
    input: ImageInput | None = Field(None, description="Image models: the size the model sees")
    device: str = Field(description='Where the model is resident: "cpu", "cuda:0", ...')
    ready: bool = Field(description="Loaded and warmed up (KServe's v1 protocol reads this)")
    default_method: MethodName
    methods: list[MethodInfo] = Field(description="The attribution methods offered, with default parameters")


class ModelList(BaseModel):
    models: list[ModelInfo]


class PredictRequest(_Strict):
    """Predictions for 1 to MAX_INSTANCES instances of one model."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [examples.PREDICT_REQUEST, examples.PREDICT_IMAGE_REQUEST]})

    instances: list[Instance] = _INSTANCES
    top_k: int | None = _TOP_K
    model: str | None = _MODEL


class RenderOptions(_Strict):
    """How image explanations are drawn (tabular models ignore it)."""

    colormap: Colormap | None = Field(None, description='Colour map; default "jet", or "bwr" for sign "all"')
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Opacity of the heat colours in the overlay")
    sign: Sign = Field("absolute", description="absolute: |a|; positive / negative: that side only; all: "
                                               "signed, on a diverging colour map")
    max_size: int = Field(1024, ge=16, le=8192, description="Longer side of overlay and heatmap, in pixels "
                                                            "(images are scaled down, never up)")
    smooth: float | None = Field(None, ge=0.0, le=64.0, description="Gaussian blur of the map before it is coloured: "
                                 "standard deviation in pixels of the model's input; default: 2.5% of the input's "
                                 "longer side for pixel-level methods (gradients), 0 for the others")


class ExplainRequest(_Strict):
    """Attributions (and overlays, charts, summaries) for 1 to MAX_INSTANCES instances of one model."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [examples.EXPLAIN_REQUEST, examples.EXPLAIN_IMAGE_REQUEST]})

    instances: list[Instance] = _INSTANCES
    method: MethodName | None = Field(None, max_length=100,
                                      description="Attribution method; default the model's default_method")
    target: TargetValue | list[TargetValue] = Field(
        None, description="Class to explain: null (the predicted class), an index, a label, or a list with "
                          "one of those per instance")
    params: dict[str, Any] = Field(default_factory=dict, description="Method parameters (see the model's "
                                   "methods); unknown or out-of-range keys are a 422")
    outputs: list[OutputName] | None = Field(
        None, description='Image models: any of "overlay" (default), "heatmap", "attributions"; tabular '
                          'models: "chart", "summary" (attributions are always there); both: "faithfulness" '
                          "(deletion and insertion AUC, at extra forward passes)")
    render: RenderOptions = Field(default_factory=RenderOptions)
    attributions_format: AttributionsFormat = Field(
        "list", description='Image attributions as "list" (H x W nested lists of numbers, 6 significant digits) '
                            'or "float32" (an EncodedArray: every value as computed, 5.3 characters a value)')
    top_k: int | None = _TOP_K
    model: str | None = _MODEL


class EncodedArray(BaseModel):
    """An array as bytes: the base64 of its values in row-major order, little-endian."""

    dtype: Literal["float32"]
    shape: list[int] = Field(description="Its dimensions, e.g. [H, W]")
    b64: str = Field(description="Base64 of the values (4 bytes each, little-endian)")


class ClassScore(BaseModel):
    index: int
    label: str | None
    score: float = Field(description="Probability (softmax, or sigmoid for a single-output binary model)")


class Prediction(BaseModel):
    """Classification: index, label, score and top_k. Regression: value."""

    index: int | None = _optional("Classification: the predicted class")
    label: str | None = _optional("Its label (classification models always have labels)")
    score: float | None = _optional("Its probability")
    top_k: list[ClassScore] | None = _optional("The best classes, best first")
    value: float | None = _optional("Regression: the predicted value")


class PredictResponse(BaseModel):
    model_config = _examples(examples.PREDICT_ANSWER)

    model: str
    predictions: list[Prediction] = Field(description="One per instance, in request order")


class FeatureAttribution(BaseModel):
    feature: str
    value: float = Field(description="The submitted value")
    attribution: float = Field(description="Signed contribution to the target's output")


class Target(BaseModel):
    """The class the attributions explain."""

    index: int
    label: str | None
    score: float | None = Field(description="Its probability; null for regression")


class Faithfulness(BaseModel):
    """How faithful an explanation is to the model (the RISE paper's metrics): the area under the
    target's score as the features (or pixels) are removed, resp. inserted, most important first."""

    deletion_auc: float = Field(description="Lower is more faithful: the score falls fast as the evidence goes")
    insertion_auc: float = Field(description="Higher is more faithful: the score rises fast as the evidence comes")


class Spread(BaseModel):
    """How sure a sampling method's answer is: the attributions are the mean of `runs` independent
    runs (seeds seed, seed + 1, ...), and these are their standard errors."""

    runs: int
    relative_error: float = Field(description="sqrt(sum of squared standard errors) / sqrt(sum of squared "
                                              "attributions): the noise left, relative to the answer")
    standard_errors: list[float] | None = _optional("Tabular: each attribution's standard error, in declared "
                                                    "feature order")


class Explanation(BaseModel):
    prediction: Prediction
    target: Target
    convergence_delta: float | None = Field(
        description="IG-family methods: sum(attributions) - (F(x) - F(baseline)); null for other methods")
    n_steps: int | None = _optional('Integrated gradients with n_steps "auto": the steps this explanation used')
    converged: bool | None = _optional('Integrated gradients with n_steps "auto": whether |convergence_delta| met '
                                       "the tolerance (false: max_steps were not enough)")
    spread: Spread | None = _optional("Sampling methods with runs > 1: the standard error of the attributions")
    faithfulness: Faithfulness | None = _optional('On request (outputs "faithfulness"): deletion and insertion AUC')
    overlay: str | None = _optional("Image: PNG data URI, the heatmap blended over the submitted image, at its "
                                    "aspect ratio")
    heatmap: str | None = _optional("Image: PNG data URI, RGBA colour map alone, transparent where attribution "
                                    "is about zero")
    attributions: list[list[float]] | list[FeatureAttribution] | EncodedArray | None = _optional(
        "Tabular: per feature, in declared order. Image (when asked for): H x W floats at the model's input "
        'size, channels summed; an EncodedArray with attributions_format "float32"')
    chart: str | None = _optional("Tabular: PNG data URI of the ranked contributions")
    summary: str | None = _optional("Tabular: one sentence naming the strongest drivers")


class Timings(BaseModel):
    """Milliseconds spent queued, computing (the whole batch), rendering, and in all."""

    queue: float
    compute: float
    render: float
    total: float


class ExplainResponse(BaseModel):
    model_config = _examples(examples.EXPLAIN_ANSWER, examples.EXPLAIN_IMAGE_ANSWER)

    model: str
    method: MethodName
    params: dict[str, Any] = Field(description="The parameters used, defaults filled in")
    explanations: list[Explanation] = Field(description="One per instance, in request order")
    timings_ms: Timings


class Alive(BaseModel):
    status: Literal["alive"]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "starting", "draining"]
    models: dict[str, str] | None = Field(
        None, description='Each model\'s state, "loading" or "ready" (left out for callers without a key '
                          'when API keys are configured)')


class ProblemItem(BaseModel):
    loc: list[str | int] = Field(description="Where: e.g. [\"instances\", 0, \"age\"] or [\"params\", \"n_steps\"]")
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    model_config = _examples(examples.PROBLEM_EXAMPLE)

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemItem] | None = Field(None, description="Every located problem (the first 20)")
