"""The Open Inference Protocol (v2) routes over real HTTP against the demo catalog, with
hand-built JSON and binary bodies (the real client libraries are in tests/e2e/test_kserve_clients.py).

Scores are checked against the models run directly (`tests.api.test_predict.Reference`) and
against v1 predict for the same inputs (which rounds to 6 significant digits).
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.test_predict import Reference, encode, random_rows, shape_image
from tests.conftest import ROOT, LiveServer
from tests.fixtures.probes import total

TABULAR = ["breast-cancer", "purchase", "diabetes"]
EXAMPLES = ROOT / "models" / "shapes" / "examples"
FILES = [(EXAMPLES / name).read_bytes() for name in ("circle.png", "triangle.jpg", "star.webp")]


@pytest.fixture(scope="module")
def ref(live: LiveServer) -> Reference:
    return Reference(live.app.state.settings.models)


def error(response: httpx.Response, status: int) -> str:
    """The protocol's error answer: `{"error": "..."}` as application/json, with a request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert response.headers.get("x-request-id")
    return str(body["error"])


def tensor(name: str, shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def binary_body(inputs: list[tuple[str, list[int], str, bytes]],
                **request: Any) -> tuple[bytes, dict[str, str]]:
    """A request with every input as binary data after the JSON (the binary tensor extension)."""
    header = json.dumps({**request, "inputs": [
        {"name": n, "shape": s, "datatype": d, "parameters": {"binary_data_size": len(b)}}
        for n, s, d, b in inputs]}).encode()
    return header + b"".join(b for *_, b in inputs), {
        "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def length_prefixed(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def scores_of(response: httpx.Response) -> np.ndarray:
    """The `scores` output, JSON or binary, as float32 [N, classes]."""
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    header = json.loads(response.content[: int(length)] if length else response.content)
    (output,) = header["outputs"]
    assert output["name"] == "scores" and output["datatype"] == "FP32"
    if length is None:
        assert response.headers["content-type"] == "application/json"
        values = np.array(output["data"], dtype=np.float32)
    else:
        assert response.headers["content-type"] == "application/octet-stream"
        raw = response.content[int(length):]
        assert output["parameters"]["binary_data_size"] == len(raw)
        values = np.frombuffer(raw, dtype="<f4")
    return values.reshape(output["shape"])


def v1_scores(client: httpx.Client, model: str, classes: int, **request: Any) -> np.ndarray:
    """v1 predict's scores as [N, classes] (class order), or [N, 1] regression values."""
    if "files" not in request:
        request = {"json": {**request["json"], "top_k": classes}}
    else:
        request["data"] = {"top_k": str(classes)}
    response = client.post(f"/v1/models/{model}/predict", **request)
    assert response.status_code == 200, response.text
    rows = []
    for prediction in response.json()["predictions"]:
        if "value" in prediction and prediction["value"] is not None:
            rows.append([prediction["value"]])
        else:
            rows.append([s for _, s in sorted((c["index"], c["score"]) for c in prediction["top_k"])])
    return np.array(rows)


def test_server_metadata_health_and_models(client: httpx.Client, live: LiveServer) -> None:
    assert client.get("/v2").json() == {"name": "explainserve", "version": live.app.version,
                                        "extensions": ["binary_tensor_data", "classification"]}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models").json() == {"models": list(live.service.registry.models)}


@pytest.mark.parametrize("model", [*TABULAR, "shapes"])
def test_model_metadata_and_readiness(client: httpx.Client, ref: Reference, model: str) -> None:
    spec = ref.specs[model]
    metadata = client.get(f"/v2/models/{model}").json()
    assert metadata == client.get(f"/v2/models/{model}/versions/1").json()
    assert metadata["name"] == model and metadata["versions"] == ["1"] and metadata["platform"] == "pytorch"
    classes = 1 if spec.task == "regression" else len(spec.label_list or [])
    assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, classes]}]
    if spec.kind == "tabular":
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, len(spec.features or [])]}]
    else:
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
            ("image", "BYTES", [-1]), ("pixels", "UINT8", [-1, -1, -1, 3])]
    for path in (f"/v2/models/{model}/ready", f"/v2/models/{model}/versions/1/ready"):
        assert client.get(path).json() == {"name": model, "ready": True}
    for path in (f"/v2/models/{model}/versions/2", f"/v2/models/{model}/versions/2/ready"):
        assert error(client.get(path), 404) == f"model '{model}' has no version '2' (versions: 1)"


@pytest.mark.parametrize("path", ["/v2/models/nope", "/v2/models/nope/ready", "/v2/models/nope/versions/1/ready"])
def test_unknown_models_are_404(client: httpx.Client, path: str) -> None:
    assert error(client.get(path), 404) == "unknown model 'nope'"


@pytest.mark.parametrize("model", TABULAR)
def test_tabular_scores_in_every_encoding_match_the_model_and_v1(client: httpx.Client, ref: Reference,
                                                                model: str) -> None:
    rows = random_rows(ref.specs[model], 5, seed=11)
    width = len(rows[0])
    flat = [v for row in rows for v in row]
    url = f"/v2/models/{model}/infer"
    by_json = scores_of(client.post(url, json={"inputs": [tensor("input", [5, width], "FP32", flat)]}))
    nested = scores_of(client.post(url, json={"inputs": [tensor("input", [5, width], "FP32", rows)]}))
    as_f32 = np.array(rows, dtype="<f4")
    content, headers = binary_body([("input", [5, width], "FP32", as_f32.tobytes())],
                                   parameters={"binary_data_output": True})
    by_binary = scores_of(client.post(url, content=content, headers=headers))
    assert np.array_equal(by_json, nested) and np.array_equal(by_json, by_binary)
    expected = ref.tabular(model, rows)
    assert by_json.shape == expected.shape
    np.testing.assert_allclose(by_json, expected, rtol=1e-5, atol=1e-6)
    v1 = v1_scores(client, model, by_json.shape[1], json={"instances": rows})
    np.testing.assert_allclose(by_json, v1, rtol=1e-5, atol=1e-9)


def test_binary_and_json_outputs_carry_the_same_float32_values(client: httpx.Client, ref: Reference) -> None:
    rows = random_rows(ref.specs["breast-cancer"], 3, seed=5)
    request = {"inputs": [tensor("input", [3, 30], "FP32", rows)]}
    as_json = client.post("/v2/models/breast-cancer/infer", json=request)
    as_binary = client.post("/v2/models/breast-cancer/infer", json={**request, "outputs": [
        {"name": "scores", "parameters": {"binary_data": True}}]})
    assert np.array_equal(scores_of(as_json), scores_of(as_binary))
    labels = json.loads(as_json.json()["outputs"][0]["parameters"]["labels"])
    assert labels == ref.specs["breast-cancer"].label_list
    header = json.loads(as_binary.content[: int(as_binary.headers["inference-header-content-length"])])
    assert json.loads(header["outputs"][0]["parameters"]["labels"]) == labels


def test_top_classes_follow_the_scores(client: httpx.Client) -> None:
    request = {"inputs": [tensor("image", [3], "BYTES", [base64.b64encode(f).decode() for f in FILES])]}
    scores = scores_of(client.post("/v2/models/shapes/infer", json=request))
    ranked = client.post("/v2/models/shapes/infer", json={**request, "outputs": [
        {"name": "scores", "parameters": {"classification": 2}}]}).json()["outputs"][0]
    assert ranked["datatype"] == "BYTES" and ranked["shape"] == [3, 2]
    labels = json.loads(ranked["parameters"]["labels"])
    for i, row in enumerate(scores):
        best = np.argsort(-row, kind="stable")[:2]
        assert ranked["data"][2 * i: 2 * i + 2] == [f"{row[j]:f}:{j}:{labels[j]}" for j in best]


def test_image_files_in_json_binary_and_as_pixels_match_the_model_and_v1(client: httpx.Client,
                                                                         ref: Reference) -> None:
    url = "/v2/models/shapes/infer"
    b64 = [base64.b64encode(f).decode() for f in FILES]
    uris = [f"data:image/{kind};base64,{data}" for kind, data in zip(("png", "jpeg", "webp"), b64, strict=True)]
    by_b64 = scores_of(client.post(url, json={"inputs": [tensor("image", [3], "BYTES", b64)]}))
    by_uri = scores_of(client.post(url, json={"inputs": [tensor("image", [3, 1], "BYTES", [[u] for u in uris])]}))
    content, headers = binary_body([("image", [3], "BYTES", length_prefixed(FILES))])
    by_binary = scores_of(client.post(url, content=content, headers=headers))
    assert np.array_equal(by_b64, by_uri) and np.array_equal(by_b64, by_binary)
    np.testing.assert_allclose(by_b64, ref.images("shapes", FILES), rtol=1e-5, atol=1e-6)
    v1 = v1_scores(client, "shapes", 4, files=[("file", f) for f in FILES])
    np.testing.assert_allclose(by_b64, v1, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(("width", "height"), [(128, 128), (90, 61)])
def test_pixels_are_the_image_a_file_would_decode_to(client: httpx.Client, ref: Reference,
                                                     width: int, height: int) -> None:
    images = [shape_image(seed, width, height) for seed in (1, 2)]
    pixels = np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8) for img in images])
    pngs = [encode(Image.fromarray(p), "PNG") for p in pixels]  # lossless: the same pixels as a file
    shape = [2, height, width, 3]
    content, headers = binary_body([("pixels", shape, "UINT8", pixels.tobytes())])
    by_binary = scores_of(client.post("/v2/models/shapes/infer", content=content, headers=headers))
    by_json = scores_of(client.post("/v2/models/shapes/infer", json={
        "inputs": [tensor("pixels", shape, "UINT8", pixels.tolist())]}))
    assert np.array_equal(by_binary, by_json)
    np.testing.assert_allclose(by_binary, ref.images("shapes", pngs), rtol=1e-5, atol=1e-6)
    v1 = v1_scores(client, "shapes", 4, files=[("file", p) for p in pngs])
    np.testing.assert_allclose(by_binary, v1, rtol=1e-5, atol=1e-9)


def test_the_response_id_is_the_requests_or_the_request_id(client: httpx.Client) -> None:
    request = {"inputs": [tensor("input", [1, 10], "FP32", [1.0] * 10)]}
    given = client.post("/v2/models/diabetes/infer", json={**request, "id": "my-42"})
    assert given.json()["id"] == "my-42" and given.json()["model_name"] == "diabetes"
    assert given.json()["model_version"] == "1"
    traced = client.post("/v2/models/diabetes/versions/1/infer", json=request, headers={"X-Request-ID": "trace-9"})
    assert traced.json()["id"] == "trace-9" and traced.headers["x-request-id"] == "trace-9"
    assert scores_of(traced).shape == (1, 1)
    named = client.post("/v2/models/diabetes/infer", json={**request, "model_name": "diabetes"})
    assert np.array_equal(scores_of(named), scores_of(traced))


ROW6 = [31, 1047.7, 5, 7, 1, 0.444]
GIF = encode(Image.new("RGB", (8, 8)), "GIF")


def _bin(name: str, shape: list[int], datatype: str, data: bytes) -> dict[str, Any]:
    content, headers = binary_body([(name, shape, datatype, data)])
    return {"content": content, "headers": headers}


# (path, request kwargs, status, the error message or a part of it)
BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("purchase", {"content": b'{"inputs": [', "headers": {"Content-Type": "application/json"}}, 400, "malformed JSON"),
    ("purchase", {"content": b"", "headers": {"Content-Type": "application/json"}}, 400, "empty body"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)]},
                  "headers": {"Inference-Header-Content-Length": "ten"}}, 400, "Inference-Header-Content-Length"),
    ("purchase", {"content": _bin("input", [1, 6], "FP32", bytes(24))["content"][:-1],
                  "headers": _bin("input", [1, 6], "FP32", bytes(24))["headers"]}, 400, "runs past the end"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)]},
                  "headers": {"X-Request-Timeout": "soon"}}, 400, "X-Request-Timeout must be a number"),
    ("shapes", {"json": {"inputs": [tensor("image", [1], "BYTES", ["not base64!"])]}}, 400, "invalid base64"),
    ("shapes", _bin("image", [1], "BYTES", length_prefixed([FILES[0][:200]])), 400, "corrupt or truncated image"),
    ("nope", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)]}}, 404, "unknown model 'nope'"),
    ("purchase/versions/3", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)]}}, 404, "no version '3'"),
    ("purchase", {"content": b"inputs=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415,
     "unsupported content type 'application/x-www-form-urlencoded'"),
    ("purchase", {"content": gzip.compress(b'{"inputs": []}'),
                  "headers": {"Content-Type": "application/json", "Content-Encoding": "gzip"}}, 415,
     "unsupported content encoding 'gzip'"),
    ("shapes", _bin("image", [1], "BYTES", length_prefixed([GIF])), 415, "GIF images are not accepted"),
    ("shapes", _bin("image", [1], "BYTES", length_prefixed([b"hello"])), 415, "not a PNG, JPEG or WebP image"),
    ("purchase", {"json": {"inputs": [tensor("features", [1, 6], "FP32", ROW6)]}}, 422,
     "model 'purchase' takes one input, 'input' (FP32 [-1, 6]); got ['features']"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP64", ROW6)]}}, 422,
     "input 'input' is FP32, got 'FP64'"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 5], "FP32", ROW6[:5])]}}, 422,
     "input 'input' has shape [-1, 6], got [1, 5]"),
    ("purchase", {"json": {"inputs": [tensor("input", [2, 6], "FP32", ROW6)]}}, 422,
     "shape [2, 6] holds 12 elements, the data has 6"),
    ("purchase", {"content": json.dumps({"inputs": [tensor("input", [1, 6], "FP32", [*ROW6[:5], float("nan")])]}),
                  "headers": {"Content-Type": "application/json"}}, 422, "input 'input': element 5 is not finite"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", [*ROW6[:5], "1"])]}}, 422, "is not a number"),
    ("purchase", {"json": {"model_name": "diabetes", "inputs": [tensor("input", [1, 6], "FP32", ROW6)]}}, 422,
     "model_name 'diabetes' in the body is not the model of the path, 'purchase'"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)], "outputs": [{"name": "label"}]}}, 422,
     "has one output, 'scores'"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)], "parameters": {"timeout": -1}}}, 422,
     "timeout must be a whole number of microseconds"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)], "unknown": 1}}, 422,
     "unknown: Extra inputs are not permitted"),
    ("purchase", {"json": {"inputs": []}}, 422, "inputs: List should have at least 1 item"),
    ("shapes", {"json": {"inputs": [tensor("pixels", [1, 2, 2, 3], "UINT8", [300] * 12)]}}, 422, "outside 0..255"),
    ("purchase", {"json": {"inputs": [tensor("input", [1] * 33, "FP32", [1.0])]}}, 422,
     "inputs.0.shape: List should have at most 32 items"),
    ("purchase", {"content": b'{"id": "\\ud800", "inputs": []}', "headers": {"Content-Type": "application/json"}},
     422, "id: Value error, must be text that UTF-8 can encode"),
    ("purchase", {"content": b'{"inputs": [{"name": "\\ud800", "shape": [1], "datatype": "FP32", "data": [1]}]}',
                  "headers": {"Content-Type": "application/json"}}, 422, "got ['\\ud800']"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)], "outputs": [{"name": "x" * 5000}]}},
     422, "requested ['xxx"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", [0.0] * 20_000)]}}, 413,
     "the body holds more JSON values than a request of MAX_INSTANCES instances can"),
    ("purchase", {"json": {"inputs": [tensor("input", [1, 6], "FP32", ROW6)]}, "headers": {"Content-Encoding": "br"}},
     415, "unsupported content encoding 'br'"),
]


@pytest.mark.parametrize(("model", "kwargs", "status", "message"), BAD_REQUESTS,
                         ids=[f"{s}-{m[:30]}" for _, _, s, m in BAD_REQUESTS])
def test_bad_requests_get_the_protocols_error_body(client: httpx.Client, model: str, kwargs: dict[str, Any],
                                                   status: int, message: str) -> None:
    detail = error(client.post(f"/v2/models/{model}/infer", **kwargs), status)
    assert message in detail
    assert len(detail) < 1000  # client text is echoed bounded


def test_unknown_v2_routes_and_methods_answer_in_the_protocols_body(client: httpx.Client) -> None:
    assert "no route GET /v2/models/purchase/config" in error(client.get("/v2/models/purchase/config"), 404)
    assert "no route POST /v2/repository/index" in error(client.post("/v2/repository/index"), 404)
    refused = client.get("/v2/models/purchase/infer")
    assert error(refused, 405) == "Method Not Allowed" and refused.headers["allow"] == "POST"
    # every other route keeps problem+json
    for response in (client.get("/v1/models/nope"), client.get("/v2x"), client.get("/nothing")):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


def test_v2_requests_are_counted_and_timed_under_their_routes(client: httpx.Client) -> None:
    def count(route: str, model: str, status: str) -> float:
        return total(client.get("/metrics").text, "explainserve_requests_total", route=route, model=model,
                     status=status)

    def timed(phase: str) -> float:
        return total(client.get("/metrics").text, "explainserve_request_seconds_count", route="v2_infer",
                     model="purchase", phase=phase)

    before = {k: count(*k) for k in [("v2_infer", "purchase", "200"), ("v2_infer", "purchase", "422"),
                                      ("v2_infer", "unknown", "404"), ("v2_model", "purchase", "200"),
                                      ("v2_health", "", "200")]}
    computed = timed("compute")
    request = {"inputs": [tensor("input", [1, 6], "FP32", ROW6)]}
    assert client.post("/v2/models/purchase/infer", json=request).status_code == 200
    assert client.post("/v2/models/purchase/infer", json={"inputs": [tensor("x", [1], "FP32", [1])]}).status_code == 422
    assert client.post("/v2/models/made-up/infer", json=request).status_code == 404
    assert client.get("/v2/models/purchase").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    for key, value in before.items():
        assert count(*key) == value + 1, key
    assert timed("compute") == computed + 1 and timed("queue") >= 1 and timed("request") >= 1


def test_the_v2_routes_are_in_the_openapi_schema(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    infer = schema["paths"]["/v2/models/{model}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceRequest"}
    assert "application/octet-stream" in infer["requestBody"]["content"]
    assert {p["name"] for p in infer["parameters"] if p["in"] == "header"} >= {
        "X-Request-Timeout", "Inference-Header-Content-Length"}
    error_schema = infer["responses"]["422"]["content"]["application/json"]["schema"]
    assert error_schema == {"$ref": "#/components/schemas/V2Error"}
    assert "Retry-After" in infer["responses"]["429"]["headers"]
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models", "/v2/models/{model}",
                 "/v2/models/{model}/versions/{version}", "/v2/models/{model}/ready",
                 "/v2/models/{model}/versions/{version}/ready", "/v2/models/{model}/versions/{version}/infer"):
        assert path in schema["paths"], path



def test_json_pixels_are_bounded_by_rows_of_the_models_input(client: httpx.Client, live: LiveServer) -> None:
    """JSON holding more values than MAX_INSTANCES images of the model's input size is refused
    before it is parsed (binary tensor data has no such bound); anything below it is parsed."""
    height, width = live.service.registry.models["shapes"].spec.image_spec.size
    allowed = live.service.settings.max_instances * (height * width * 3 + 1) + 10_000
    bigger = allowed + 10  # one image of at least that many values
    side = int((bigger / 3) ** 0.5) + 1
    body = (json.dumps({"inputs": [{"name": "pixels", "shape": [1, side, side, 3], "datatype": "UINT8"}]})[:-3]
            + ', "data": [' + "0," * (side * side * 3 - 1) + "0]}]}").encode()
    refused = client.post("/v2/models/shapes/infer", content=body, headers={"Content-Type": "application/json"})
    assert f"({allowed} commas at most)" in error(refused, 413)
    pixels = np.zeros((1, 2 * height, 2 * width, 3), dtype=np.uint8)  # larger than the model's input: fine
    request = {"inputs": [tensor("pixels", list(pixels.shape), "UINT8", pixels.reshape(-1).tolist())]}
    assert scores_of(client.post("/v2/models/shapes/infer", json=request)).shape == (1, 4)
