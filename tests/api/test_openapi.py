"""The OpenAPI description says what the service does, and its pages work without internet."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from app import examples
from app.schemas import ExplainRequest, ExplainResponse, PredictRequest, PredictResponse, RenderOptions
from app.types import COLORMAPS, METHOD_NAMES, SIGNS
from tests.conftest import LiveServer, make_settings
from tests.fixtures.compare import assert_close, without_timings

_URL = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.fixture(scope="module")
def schema(live: LiveServer) -> dict[str, Any]:
    served: dict[str, Any] = httpx.get(live.url + "/openapi.json", timeout=60).json()
    return served


@pytest.mark.parametrize("page", ["/docs"])
def test_docs_pages_load_everything_from_the_service(client: httpx.Client, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", html.text), "the page references another host"
    assets = _URL.findall(html.text)
    assert any(a.endswith(".js") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), asset
        loaded = client.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 100, asset
    assert "/openapi.json" in html.text


def test_swagger_ui_is_version_5_which_reads_openapi_3_1(client: httpx.Client, schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.1")
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle
    assert "isOAS31" in bundle  # Swagger UI 4 shows "Unable to render this definition" for 3.1


def _properties(schema: dict[str, Any], name: str) -> dict[str, Any]:
    props: dict[str, Any] = schema["components"]["schemas"][name]["properties"]
    return props


def _enum(prop: dict[str, Any]) -> list[Any]:
    for option in prop.get("anyOf", [prop]):
        if "enum" in option:
            return list(option["enum"])
        if option.get("type") == "array":
            return _enum(option["items"])
    return []


def test_request_fields_are_described_and_closed_sets_are_enums(schema: dict[str, Any]) -> None:
    for model in (PredictRequest, ExplainRequest, RenderOptions):
        props = _properties(schema, model.__name__)
        assert set(props) == set(model.model_fields)
        for name, prop in props.items():
            described = prop.get("description") or schema["components"]["schemas"].get(
                prop.get("$ref", "").rsplit("/", 1)[-1], {}).get("description")
            assert described, f"{model.__name__}.{name} has no description"
    explain = _properties(schema, "ExplainRequest")
    assert _enum(explain["method"]) == list(METHOD_NAMES)
    assert set(_enum(explain["outputs"])) == {"overlay", "heatmap", "attributions", "chart", "summary",
                                               "faithfulness"}
    render = _properties(schema, "RenderOptions")
    assert _enum(render["colormap"]) == list(COLORMAPS)
    assert _enum(render["sign"]) == list(SIGNS)


def test_response_fields_are_described(schema: dict[str, Any]) -> None:
    for name in ("Explanation", "ExplainResponse", "PredictResponse", "Prediction", "ModelInfo", "Problem"):
        component = schema["components"]["schemas"][name]
        assert component.get("examples") or any(p.get("description") for p in component["properties"].values())


def test_multipart_bodies_document_every_form_field(schema: dict[str, Any]) -> None:
    body = schema["paths"]["/v1/models/{model}/explain"]["post"]["requestBody"]["content"]
    form = body["multipart/form-data"]["schema"]["properties"]
    assert {"file", "instances", "method", "target", "top_k", "params", "outputs", "render"} <= set(form)
    assert form["method"]["enum"] == list(METHOD_NAMES)
    assert set(body["application/json"]["examples"]) == {"tabular", "image"}


def test_every_error_is_documented_as_problem_json(schema: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:  # the Open Inference Protocol's routes: its own error body
                    expected = "application/json" if path.startswith("/v2") else "application/problem+json"
                    assert set(response["content"]) == {expected}, (path, method, status)


def test_no_security_scheme_without_keys(schema: dict[str, Any]) -> None:
    assert "securitySchemes" not in schema["components"] and "security" not in schema


def _abridged(got: Any, want: Any) -> Any:
    """`got` with data URIs cut where the example cuts them (`...`)."""
    if isinstance(want, str) and want.endswith("...") and isinstance(got, str) and got.startswith(want[:-3]):
        return want
    if isinstance(want, dict) and isinstance(got, dict):
        return {k: _abridged(v, want.get(k)) for k, v in got.items()}
    if isinstance(want, list) and isinstance(got, list):
        return [_abridged(g, w) for g, w in zip(got, want, strict=False)] + got[len(want):]
    return got


@pytest.mark.parametrize(("path", "request_example", "answer", "response_model"), [
    ("/v1/models/purchase/predict", examples.PREDICT_REQUEST, examples.PREDICT_ANSWER, PredictResponse),
    ("/v1/models/purchase/explain", examples.EXPLAIN_REQUEST, examples.EXPLAIN_ANSWER, ExplainResponse),
    ("/v1/models/shapes/explain", examples.EXPLAIN_IMAGE_REQUEST, examples.EXPLAIN_IMAGE_ANSWER, ExplainResponse),
], ids=["predict", "explain-tabular", "explain-image"])
def test_the_documented_answers_are_the_service_answers(client: httpx.Client, path: str,
                                                        request_example: dict[str, Any], answer: dict[str, Any],
                                                        response_model: Any) -> None:
    response_model.model_validate(answer)
    got = client.post(path, json=request_example)
    assert got.status_code == 200, got.text
    assert_close(without_timings(_abridged(got.json(), answer)), without_timings(answer), rel=1e-4)


def test_the_image_predict_example_is_a_star(client: httpx.Client) -> None:
    got = client.post("/v1/models/shapes/predict", json=examples.PREDICT_IMAGE_REQUEST).json()
    assert got["predictions"][0]["label"] == "star"


def test_the_problem_example_is_the_service_answer(client: httpx.Client) -> None:
    got = client.post("/v1/models/purchase/predict", json={"instances": [{"age": 31}]})
    assert got.status_code == 422
    assert got.json() == examples.PROBLEM_EXAMPLE


def test_keys_add_the_security_schemes_and_leave_probes_public() -> None:
    with LiveServer(make_settings(api_keys="k-1")) as server:
        schema = httpx.get(server.url + "/openapi.json", headers={"X-API-Key": "k-1"}, timeout=60).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"}
    assert schema["security"] == [{"bearer": []}, {"apiKey": []}, {"basic": []}]
    for path in ("/", "/healthz", "/readyz"):
        assert schema["paths"][path]["get"]["security"] == []
    assert "security" not in schema["paths"]["/v1/models"]["get"]
