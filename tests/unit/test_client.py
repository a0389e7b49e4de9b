"""The Python client without a server: instance encoding, result types, errors, retries, auth.

The client against a real server is tested in tests/e2e/test_client_cli.py.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.client import (
    APIError,
    Client,
    ExplainResult,
    FeatureAttribution,
    ModelInfo,
    decode_data_uri,
    encode_instance,
    encode_instances,
)


def _png(size: tuple[int, int] = (6, 4), color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _decoded_image(instance: Any) -> Image.Image:
    assert set(instance) == {"b64"}
    return Image.open(io.BytesIO(base64.b64decode(instance["b64"])))


# --------------------------------------------------------------------------- encoding


def test_image_file_path_str_and_path(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png())
    expected = {"b64": base64.b64encode(_png()).decode()}
    assert encode_instance(str(path)) == expected
    assert encode_instance(path) == expected


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        encode_instance(str(tmp_path / "nope.png"))


def test_bytes_pil_and_uint8_array() -> None:
    raw = _png()
    assert encode_instance(raw) == {"b64": base64.b64encode(raw).decode()}
    assert encode_instance(bytearray(raw)) == encode_instance(raw)
    pil = Image.new("RGB", (5, 3), (1, 2, 3))
    decoded = _decoded_image(encode_instance(pil))
    assert decoded.format == "PNG" and decoded.size == (5, 3)
    assert decoded.getpixel((0, 0)) == (1, 2, 3)
    array = np.zeros((3, 5, 3), dtype=np.uint8)
    assert _decoded_image(encode_instance(array)).size == (5, 3)
    # modes PNG cannot hold are converted
    assert _decoded_image(encode_instance(Image.new("CMYK", (2, 2)))).mode == "RGB"


def test_data_uri_and_b64_dict_pass_through() -> None:
    uri = "data:image/png;base64," + base64.b64encode(_png()).decode()
    assert encode_instance(uri) == uri
    assert encode_instance({"b64": "abc"}) == {"b64": "abc"}


def test_tabular_rows() -> None:
    assert encode_instance({"a": 1, "b": np.float32(2.5), "c": np.int64(3), "d": True}) == {
        "a": 1, "b": 2.5, "c": 3, "d": 1}
    assert encode_instance([1, 2.5, np.float64(3)]) == [1, 2.5, 3.0]
    assert encode_instance(np.array([1.0, 2.0])) == [1.0, 2.0]
    json.dumps(encode_instance(np.array([1.0, 2.0])))  # plain JSON types
    with pytest.raises(TypeError, match="feature 'a'"):
        encode_instance({"a": "x"})
    with pytest.raises(TypeError):
        encode_instance(object())
    with pytest.raises(TypeError, match="shape"):
        encode_instance(np.zeros((2, 2, 2, 2)))


def test_encode_instances_single_or_many(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png())
    assert len(encode_instances(str(path))) == 1
    assert len(encode_instances([str(path), path, _png()])) == 3
    assert encode_instances({"a": 1}) == [{"a": 1}]
    assert encode_instances([1.0, 2.0]) == [[1.0, 2.0]]  # a flat list is one row
    assert encode_instances([[1.0, 2.0], [3.0, 4.0]]) == [[1.0, 2.0], [3.0, 4.0]]
    assert encode_instances(np.arange(6, dtype=np.float64).reshape(3, 2)) == [[0, 1], [2, 3], [4, 5]]
    assert encode_instances(np.arange(3.0)) == [[0.0, 1.0, 2.0]]
    assert len(encode_instances(np.zeros((2, 4, 4, 3), dtype=np.uint8))) == 2  # a batch of images
    assert len(encode_instances(np.zeros((4, 4, 3), dtype=np.uint8))) == 1  # one image
    assert encode_instances(r for r in ([1.0], [2.0])) == [[1.0], [2.0]]
    with pytest.raises(ValueError):
        encode_instances([])


def test_decode_data_uri() -> None:
    assert decode_data_uri("data:image/png;base64," + base64.b64encode(b"abc").decode()) == b"abc"
    for bad in ("abc", "data:image/png,abc", "data:image/png;base64,@@@"):
        with pytest.raises(ValueError):
            decode_data_uri(bad)


# --------------------------------------------------------------------------- results

_PNG_URI = "data:image/png;base64," + base64.b64encode(_png((7, 3))).decode()


def test_explain_result_image(tmp_path: Path) -> None:
    result = ExplainResult.from_json({
        "model": "shapes", "method": "gradcam", "params": {},
        "explanations": [{
            "prediction": {"index": 2, "label": "triangle", "score": 0.9,
                           "top_k": [{"index": 2, "label": "triangle", "score": 0.9}]},
            "target": {"index": 2, "label": "triangle", "score": 0.9},
            "convergence_delta": None, "overlay": _PNG_URI,
            "attributions": [[0.0, 1.0], [2.0, 3.0]],
        }],
        "timings_ms": {"queue": 1, "compute": 2, "render": 3, "total": 6},
    })
    expl = result[0]
    assert len(result) == 1 and result.timings["total"] == 6.0
    assert expl.prediction.label == "triangle" and expl.prediction.top_k is not None
    assert expl.prediction.describe() == "triangle 90.0%"
    assert isinstance(expl.attributions, np.ndarray) and expl.attributions.shape == (2, 2)
    path = expl.save_overlay(tmp_path / "deep" / "o.png")
    with Image.open(path) as img:
        assert img.size == (7, 3)
    with pytest.raises(ValueError, match="heatmap"):
        expl.save_heatmap(tmp_path / "h.png")
    with pytest.raises(ValueError):
        expl.ranked()


def test_explain_result_tabular() -> None:
    result = ExplainResult.from_json({
        "model": "m", "method": "saliency", "params": {"a": 1},
        "explanations": [{
            "prediction": {"value": 3.5}, "target": {"index": 0, "label": None, "score": None},
            "convergence_delta": None, "summary": "s",
            "attributions": [{"feature": "a", "value": 1, "attribution": 0.1},
                             {"feature": "b", "value": 2, "attribution": -0.5}],
        }],
        "timings_ms": {"queue": 0, "compute": 0, "render": 0, "total": 0},
    })
    expl = result.explanations[0]
    assert expl.prediction.describe() == "3.5" and expl.prediction.to_json() == {"value": 3.5}
    assert expl.attributions == [FeatureAttribution("a", 1.0, 0.1), FeatureAttribution("b", 2.0, -0.5)]
    assert [a.feature for a in expl.ranked()] == ["b", "a"]
    assert expl.summary == "s" and expl.overlay_png is None and expl.chart_png is None


def test_model_info() -> None:
    info = ModelInfo.from_json({
        "name": "m", "kind": "tabular", "task": "classification", "labels": ["x", "y"],
        "features": [{"name": "f1"}, {"name": "f2"}], "device": "cpu",
        "default_method": "saliency", "methods": [{"name": "saliency", "params": {}}],
    })
    assert info.features == ["f1", "f2"] and info.methods == {"saliency": {}} and info.input is None


# --------------------------------------------------------------------------- HTTP behaviour


def _problem(status: int, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": "T", "status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json",
                                                      "x-request-id": "rid"})


def test_api_error_from_problem_json() -> None:
    errors = [{"loc": ["instances", 0, "x"], "msg": "missing"}]

    def handler(request: httpx.Request) -> httpx.Response:
        return _problem(422, "instance 0: missing feature 'x'", errors=errors)

    with Client("http://test", transport=httpx.MockTransport(handler)) as client, \
            pytest.raises(APIError) as info:
        client.predict("m", [{"y": 1}])
    exc = info.value
    assert (exc.status, exc.title, exc.detail, exc.errors) == (422, "T", "instance 0: missing feature 'x'", errors)
    assert exc.request_id == "rid"
    assert "422" in str(exc) and "missing feature" in str(exc)


def test_api_error_from_plain_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="bad gateway from a proxy")

    with Client("http://test", transport=httpx.MockTransport(handler)) as client, \
            pytest.raises(APIError) as info:
        client.models()
    assert info.value.status == 502 and "proxy" in info.value.detail


def test_retries_429_then_succeeds_and_sends_key() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(429, json={"status": 429, "title": "Too Many Requests", "detail": "full"},
                                  headers={"Retry-After": "0"})
        return httpx.Response(200, json={"model": "m", "predictions": [{"value": 1.0}]})

    with Client("http://test/", api_key="sekret", transport=httpx.MockTransport(handler)) as client:
        preds = client.predict("m", [[1.0, 2.0]], top_k=2)
    assert preds[0].value == 1.0 and len(calls) == 3
    assert calls[0].headers["authorization"] == "Bearer sekret"
    assert calls[0].url.path == "/v1/models/m/predict"
    assert json.loads(calls[0].content) == {"instances": [[1.0, 2.0]], "top_k": 2}


def test_retries_exhausted_raise() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"status": 503, "title": "Service Unavailable", "detail": "starting"},
                              headers={"Retry-After": "0"})

    with Client("http://test", retries=1, transport=httpx.MockTransport(handler)) as client, \
            pytest.raises(APIError) as info:
        client.models()
    assert info.value.status == 503 and info.value.retry_after == 0.0


def test_explain_body_and_png() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=_png(), headers={"content-type": "image/png"})

    with Client("http://test", transport=httpx.MockTransport(handler)) as client:
        png = client.explain_png("my model", _png(), method="saliency", target=np.int64(2),
                                 params={"n": np.int32(3)}, render={"alpha": 0.3})
    assert png == _png()
    body = json.loads(seen[0].content)
    assert body["method"] == "saliency" and body["target"] == 2 and body["params"] == {"n": 3}
    assert body["render"] == {"alpha": 0.3} and "outputs" not in body
    assert seen[0].headers["accept"] == "image/png"
    assert seen[0].url.raw_path == b"/v1/models/my%20model/explain"


def test_client_module_does_not_import_torch() -> None:
    code = ("import sys, app.client, app.cli; "
            "bad = [m for m in ('torch', 'fastapi', 'captum') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
