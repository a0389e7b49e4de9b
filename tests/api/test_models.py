"""Model discovery: /v1/models and /v1/models/{model} against the served catalog (API.md ModelInfo)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from app.inference.catalog import ModelSpec, load_catalog
from app.schemas import ModelInfo
from models.shapes import draw_sample
from tests.conftest import LiveServer, png_b64

PNG = png_b64(draw_sample(np.random.default_rng(7), 64, 64, 0).image)

MODEL_INFO_KEYS = {"name", "kind", "task", "labels", "features", "input", "device", "ready",
                   "default_method", "methods"}
COMMON_METHODS = {"integrated_gradients", "gradient_shap", "saliency", "input_x_gradient", "smoothgrad", "lime",
                  "deeplift", "deeplift_shap"}
TABULAR_METHODS = COMMON_METHODS | {"feature_ablation", "kernel_shap"}
IMAGE_METHODS = COMMON_METHODS | {"gradcam", "occlusion"}
DEMO_MODELS = ["breast-cancer", "purchase", "diabetes", "shapes"]


@pytest.fixture(scope="module")
def specs(live: LiveServer) -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_catalog(live.app.state.settings.models)}


def check_schema(schema: dict, params: dict) -> None:  # type: ignore[type-arg]
    """A method's parameter schema: an object of its params, whose defaults are the resolved ones.
    Parameters that apply only with another's value (tolerance and max_steps: n_steps "auto") are
    in the schema, with the default they take then, and in the params only where they apply."""
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(params) <= set(schema["properties"])
    assert set(schema["properties"]) - set(params) <= {"tolerance", "max_steps", "segments", "n_segments"}
    for name, prop in schema["properties"].items():
        default = params.get(name, prop["default"])
        assert prop["default"] == default, name
        options = prop.get("anyOf", [prop])
        for option in options:
            if option.get("type") in ("integer", "number") and isinstance(default, int | float):
                assert option.get("minimum", default) <= default <= option["maximum"], name
                assert option.get("exclusiveMinimum", default - 1) < default, name


def check_info(info: dict, spec: ModelSpec) -> None:  # type: ignore[type-arg]
    assert set(info) == MODEL_INFO_KEYS
    ModelInfo.model_validate(info)
    assert info["name"] == spec.name
    assert info["kind"] == spec.kind
    assert info["task"] == spec.task
    assert info["device"] == "cpu"
    assert info["ready"] is True
    assert info["labels"] == spec.label_list
    names = [m["name"] for m in info["methods"]]
    assert len(names) == len(set(names))
    assert info["default_method"] in names
    if spec.default_method:
        assert info["default_method"] == spec.default_method
    for method in info["methods"]:
        assert set(method) == {"name", "params", "schema"} and isinstance(method["params"], dict)
        check_schema(method["schema"], method["params"])
    params = {m["name"]: m["params"] for m in info["methods"]}
    # integrated gradients to a tolerance by default where a forward is cheap (tabular), 32 steps for images
    assert params["integrated_gradients"]["n_steps"] == (32 if spec.kind == "image" else "auto")
    assert params["integrated_gradients"]["baseline"] == "zeros"
    assert "n_samples" in params["gradient_shap"] and "stdevs" in params["gradient_shap"]
    if spec.kind == "tabular":
        assert info["input"] is None
        assert info["features"] == [{"name": f} for f in spec.features or []]
        assert set(names) == TABULAR_METHODS
        assert "gradcam" not in names and "occlusion" not in names
        assert "baseline" in params["feature_ablation"] and "n_samples" in params["kernel_shap"]
    else:
        assert info["features"] is None
        height, width = spec.image_spec.size
        assert info["input"] == {"height": height, "width": width, "channels": 3}
        assert set(names) == IMAGE_METHODS
        assert "feature_ablation" not in names and "kernel_shap" not in names
        assert {"window", "stride"} <= set(params["occlusion"])
        assert params["gradcam"]["layer"] == "features"  # shapes' last module with a spatial map
    if spec.task == "regression":
        assert info["labels"] is None


def test_list_models_has_every_catalog_model(client: httpx.Client, specs: dict[str, ModelSpec]) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"models"}
    assert [m["name"] for m in body["models"]] == list(specs)
    assert set(DEMO_MODELS) <= set(specs)
    for info in body["models"]:
        check_info(info, specs[info["name"]])


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_get_model(client: httpx.Client, specs: dict[str, ModelSpec], name: str) -> None:
    r = client.get(f"/v1/models/{name}")
    assert r.status_code == 200
    info = r.json()
    check_info(info, specs[name])
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert info == listed[name]


def test_demo_model_facts(client: httpx.Client) -> None:
    bc = client.get("/v1/models/breast-cancer").json()
    assert bc["labels"] == ["malignant", "benign"]
    assert bc["features"][0] == {"name": "mean radius"} and len(bc["features"]) == 30
    assert bc["features"][-1] == {"name": "worst fractal dimension"}
    purchase = client.get("/v1/models/purchase").json()
    assert [f["name"] for f in purchase["features"]] == [
        "age", "monthly_spend", "category_views", "cart_adds", "follows_brand", "return_rate"]
    diabetes = client.get("/v1/models/diabetes").json()
    assert diabetes["task"] == "regression" and diabetes["labels"] is None
    shapes = client.get("/v1/models/shapes").json()
    assert shapes["input"] == {"height": 128, "width": 128, "channels": 3}
    assert shapes["labels"] == ["circle", "square", "triangle", "star"]
    assert shapes["default_method"] == "gradcam"


def test_method_schemas_give_types_bounds_and_choices(client: httpx.Client) -> None:
    schemas = {m["name"]: m["schema"]["properties"] for m in client.get("/v1/models/shapes").json()["methods"]}
    steps = schemas["integrated_gradients"]["n_steps"]
    assert steps["anyOf"] == [{"type": "integer", "minimum": 1, "maximum": 1024}, {"type": "string", "enum": ["auto"]}]
    assert steps["default"] == 32
    ig = schemas["integrated_gradients"]
    assert (ig["tolerance"]["default"], ig["max_steps"]["default"]) == (0.01, 128)  # what n_steps "auto" takes
    assert "gausslegendre" in schemas["integrated_gradients"]["method"]["enum"]
    f32 = {"type": "number", "minimum": -3.4028234663852886e38, "maximum": 3.4028234663852886e38}
    assert schemas["integrated_gradients"]["baseline"]["anyOf"] == [
        {"enum": ["zeros", "mean", "blur"], "type": "string"}, f32,
        {"type": "array", "items": f32, "minItems": 3, "maxItems": 3}]
    assert schemas["saliency"]["abs"]["type"] == "boolean" and schemas["saliency"]["abs"]["default"] is False
    assert schemas["gradcam"]["layer"]["anyOf"][1] == {"type": "null"}
    assert schemas["gradcam"]["layer"]["default"] == "features"  # the model's last spatial layer
    assert schemas["input_x_gradient"] == {}
    assert (schemas["occlusion"]["window"]["minimum"], schemas["occlusion"]["stride"]["maximum"]) == (1, 1024)


@pytest.mark.parametrize("name", ["breast-cancer", "shapes"])
def test_the_schema_bounds_are_the_ones_the_service_enforces(client: httpx.Client, name: str) -> None:
    """Every numeric bound in the schemas: one step past it is refused with a 422 at ["params", key]."""
    info = client.get(f"/v1/models/{name}").json()
    instance = [1.0] * len(info["features"]) if info["features"] else {"b64": PNG}
    checked = 0
    for method in info["methods"]:
        for key, prop in method["schema"]["properties"].items():
            if prop.get("type") not in ("integer", "number"):
                continue
            step = 1 if prop["type"] == "integer" else 1e-3
            for value in (prop["minimum"] - step, prop["maximum"] + step):
                r = client.post(f"/v1/models/{name}/explain", json={
                    "instances": [instance], "method": method["name"], "params": {key: value}})
                assert r.status_code == 422, (method["name"], key, value, r.text)
                assert ["params", key] in [e["loc"] for e in r.json()["errors"]]
                checked += 1
    assert checked >= 8


@pytest.mark.parametrize("name", ["nope", "resnet50", "Breast-Cancer"])
def test_unknown_model_is_404_problem(client: httpx.Client, name: str) -> None:
    r = client.get(f"/v1/models/{name}")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 404 and problem["title"] == "Not Found"
    assert problem["type"] == "about:blank"
    assert name in problem["detail"]
    assert r.headers.get("x-request-id")
