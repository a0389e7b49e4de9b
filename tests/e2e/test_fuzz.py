"""Fuzzing: schemathesis against the live server's own /openapi.json, and hypothesis property
tests for the request codecs (they raise nothing but the domain errors, whatever the input).

Schemathesis generates requests from the schema (valid and invalid ones) and checks that no
response is a 5xx and that every response's status, content type and body are the ones the
schema documents. Model names are mostly drawn from the catalog, and the instances (or the
whole body) are often replaced by valid ones, so requests reach the models and the compute path
rather than stopping at 404 / 422.
"""

from __future__ import annotations

import base64
import io
import json
import string
import warnings
from collections import Counter
from typing import Any

import httpx
import hypothesis.strategies as st
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.datastructures import Headers
from starlette.requests import Request

from app.api.bodies import parse_json
from app.api.codecs import _form_value, header_timeout, wants_png
from app.errors import BadRequest, ServiceError
from app.inference.catalog import ImageSpec
from app.inference.inputs import decode_image_bytes, image_bytes, tabular_rows
from app.main import create_app
from tests.conftest import LiveServer, make_settings
from tests.conftest import image_bytes as encode_image

STATUSES: Counter[tuple[str, str, int]] = Counter()
MODES = ("valid request", "fuzzed", "valid request", "valid instances", "valid request")


def no_server_fault(ctx: Any, response: Any, case: Any) -> bool | None:
    """`not_a_server_error`, except a 504 for a deadline the client set itself (X-Request-Timeout:
    1e-59 is a valid request whose documented answer is 504)."""
    sent = {k.lower() for k in (case.headers or {})}
    if response.status_code == 504 and "x-request-timeout" in sent:
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_fault, response_schema_conformance, status_code_conformance, content_type_conformance,
          response_headers_conformance]
MODELS = ["breast-cancer", "purchase", "diabetes", "shapes"]
FUZZ_SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                         phases=[Phase.generate], suppress_health_check=list(HealthCheck))
EXAMPLE_SETTINGS = settings(deadline=None, database=None, phases=[Phase.explicit],
                            suppress_health_check=list(HealthCheck))


def _schema() -> Any:
    # The schema as the app builds it (no models needed); `test_fuzzed_schema_is_the_served_one`
    # checks it is exactly what the live server serves at /openapi.json.
    return create_app(make_settings()).openapi()


schema = schemathesis.openapi.from_dict(_schema())


def test_fuzzed_schema_is_the_served_one(client: httpx.Client) -> None:
    served = client.get("/openapi.json").json()
    assert served == _schema()
    for path in ("/v1/models/{model}/predict", "/v1/models/{model}:explain", "/predict", "/explain"):
        operation = served["paths"][path]["post"]
        assert "X-Request-Timeout" in [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        for status in ("429", "503"):
            assert "Retry-After" in operation["responses"][status]["headers"]


def _png(width: int, height: int, seed: int, mode: str, fmt: str) -> str:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    return base64.b64encode(encode_image(image, fmt)).decode()


IMAGES = [_png(w, h, i, mode, fmt) for i, (w, h, mode, fmt) in enumerate([
    (64, 64, "RGB", "PNG"), (200, 40, "L", "PNG"), (17, 93, "RGBA", "PNG"), (128, 128, "RGB", "JPEG"),
    (33, 33, "RGB", "WEBP"), (1, 1, "RGB", "PNG"), (300, 7, "P", "PNG")])]
TABULAR_FEATURES = {"breast-cancer": 30, "purchase": 6, "diabetes": 10}
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def valid_instances(model: str) -> st.SearchStrategy[list[Any]]:
    if model == "shapes":
        image = st.sampled_from(IMAGES).flatmap(
            lambda b64: st.sampled_from([{"b64": b64}, f"data:image/png;base64,{b64}"]))
        return st.lists(image, min_size=1, max_size=2)
    width = TABULAR_FEATURES[model]
    return st.lists(st.lists(finite, min_size=width, max_size=width), min_size=1, max_size=3)


def valid_tensor(model: str) -> st.SearchStrategy[dict[str, Any]]:
    """An Open Inference Protocol input the model accepts."""
    if model == "shapes":
        return st.lists(st.sampled_from(IMAGES), min_size=1, max_size=2).map(
            lambda images: {"name": "image", "shape": [len(images)], "datatype": "BYTES", "data": images})
    width = TABULAR_FEATURES[model]
    return st.lists(st.lists(finite, min_size=width, max_size=width), min_size=1, max_size=3).map(
        lambda rows: {"name": "input", "shape": [len(rows), width], "datatype": "FP32", "data": rows})


@schema.parametrize()
@EXAMPLE_SETTINGS
def test_schema_examples_conform(case: Any, live: LiveServer) -> None:
    """The request examples of the schema, sent as they are: documented answers, no server fault."""
    response = case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=120)
    STATUSES[(case.method, case.path, response.status_code)] += 1


@schema.parametrize()
@schema.given(data=st.data())
@FUZZ_SETTINGS
def test_openapi_conformance(case: Any, data: st.DataObject, live: LiveServer) -> None:
    model = data.draw(st.one_of(st.sampled_from(MODELS), st.none()), label="model")
    if model is not None:
        if "model" in (case.path_parameters or {}):
            case.path_parameters["model"] = model
        if "version" in (case.path_parameters or {}) and data.draw(st.booleans(), label="declared version"):
            case.path_parameters["version"] = "1"
        if case.method == "POST" and case.media_type == "application/json":
            # instances the model accepts, so that fuzzed options reach the compute path; or a
            # request valid throughout (an offered method, default options)
            # mostly valid requests, so that each operation reaches the models (a draw, never outside
            # state: hypothesis replays its draws and must see the same ones)
            mode = data.draw(st.sampled_from(MODES), label="mode")
            if mode != "fuzzed" and case.path.startswith("/v2/"):
                body = case.body if isinstance(case.body, dict) and mode == "valid instances" else {}
                body["inputs"] = [data.draw(valid_tensor(model), label="tensor")]
                if mode == "valid request":
                    case.headers = {k: v for k, v in (case.headers or {}).items()
                                    if k.lower() not in ("x-request-timeout", "inference-header-content-length")}
                    if "version" in (case.path_parameters or {}):
                        case.path_parameters["version"] = "1"
                case.body = body
            elif mode != "fuzzed":
                body = case.body if isinstance(case.body, dict) else {}
                if mode == "valid request":
                    body = {}
                    case.headers = {k: v for k, v in (case.headers or {}).items()
                                    if k.lower() != "x-request-timeout"}
                    if "explain" in case.path:
                        body["method"] = data.draw(st.sampled_from(live.service.registry.models[model].methods))
                body["instances"] = data.draw(valid_instances(model), label="instances")
                if case.path in ("/predict", "/explain"):
                    body["model"] = model
                case.body = body
    response = case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=120)
    STATUSES[(case.method, case.path, response.status_code)] += 1


def test_fuzzing_reached_the_models() -> None:
    """Runs after the fuzz tests (file order): they must have produced answers, not only errors."""
    if not STATUSES:
        pytest.skip("the fuzz tests did not run in this session")
    answered = [(path, n) for (method, path, status), n in STATUSES.items() if status == 200 and method == "POST"]
    assert sum(n for path, n in answered if "predict" in path) >= 2, STATUSES
    assert sum(n for path, n in answered if "explain" in path) >= 2, STATUSES
    assert sum(n for path, n in answered if path.endswith("/infer")) >= 2, STATUSES
    assert not [key for key in STATUSES if key[2] >= 500 and key[2] != 504]
    print("fuzzed responses:", sum(STATUSES.values()), dict(sorted(STATUSES.items())))


# --- codecs ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 50_000)
@example(b"\xff\xfe")
@example(b"")
@example(b"NaN")
@example(b"1" * 5000)  # int() refuses more than 4300 digits with a ValueError
@example(b'{"instances": [' + b"9" * 4301 + b"]}")
def test_parse_json_raises_only_bad_request(raw: bytes) -> None:
    try:
        value = parse_json(raw)
    except BadRequest as exc:
        assert exc.detail.startswith(("malformed JSON", "empty body"))
        return
    assert raw.strip() and value is not ...


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["params", "render", "outputs", "top_k", "target", "method", "model", "other"]),
       st.text(max_size=40) | st.sampled_from(["[1, 2", "-", "--1", "-0", "null", "[", "{", "1e9", "٣", "²"]))
@example("top_k", "--0")
@example("target", "--1")
@example("top_k", "9" * 5000)
@example("target", "9" * 5000)
@example("target", "[" + "9" * 5000 + "]")
@example("params", "[" * 100_000)
@example("render", '{"alpha": ' + "1" * 5000 + "}")
def test_form_values_raise_only_bad_request(name: str, raw: str) -> None:
    try:
        value = _form_value(name, raw)
    except BadRequest:
        return
    if name == "outputs":
        assert isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "query_string": b""})


header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60)


@settings(max_examples=300, deadline=None)
@given(header_text | st.sampled_from(["image/png", "image/png, application/json", "IMAGE/PNG;q=0.9", "*/*"]))
def test_wants_png_never_raises(accept: str) -> None:
    answer = wants_png(_request({"accept": accept}))
    assert isinstance(answer, bool)
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    assert answer == ("image/png" in types and "application/json" not in types)
    assert Headers({"accept": accept})  # the header itself was representable


@settings(max_examples=300, deadline=None)
@given(header_text | st.sampled_from(["nan", "inf", "-0", "1e-320", "1_0", "0x1p3", "  2  "]))
def test_header_timeout_is_positive_finite_or_bad_request(raw: str) -> None:
    try:
        value = header_timeout(_request({"x-request-timeout": raw}))
    except BadRequest:
        return
    assert value is not None and 0 < value < float("inf")


b64_alphabet = string.ascii_letters + string.digits + "+/=-_ \n"


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    json_values,
    st.fixed_dictionaries({"b64": st.text(alphabet=b64_alphabet, max_size=40) | st.text(max_size=20)}),
    st.builds(lambda mime, data: f"data:{mime};base64,{data}",
              st.sampled_from(["image/png", "text/plain", "", "image/x;y=z", "application/json"]),
              st.text(alphabet=b64_alphabet, max_size=40)),
), st.integers(0, 63))
def test_image_bytes_raise_only_domain_errors(instance: Any, index: int) -> None:
    try:
        data = image_bytes(instance, index)
    except ServiceError as exc:
        assert exc.status in (400, 415, 422)
        assert str(index) in exc.detail
        return
    assert isinstance(data, bytes)


def _file(fmt: str, mode: str = "RGB", exif: bool = False) -> bytes:
    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (24, 40, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    if exif:
        info = Image.Exif()
        info[0x0112] = 6  # orientation: rotate
        image.save(buffer, format=fmt, exif=info)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


FILES = [_file("PNG"), _file("PNG", "P"), _file("PNG", "LA"), _file("JPEG"), _file("JPEG", exif=True),
         _file("WEBP"), _file("WEBP", "RGBA"), _file("GIF"), _file("BMP"), _file("TIFF")]


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    mutable = bytearray(data)
    for position, value in edits:
        mutable[position % len(mutable)] = value
    return bytes(mutable[: max(1, len(mutable) - cut)])


mutated_files = st.builds(_mutate, st.sampled_from(FILES),
                          st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
                          st.sampled_from([0, 0, 0, 1, 7, 50, 400]))


@settings(max_examples=400, deadline=None)
@given(mutated_files | st.binary(max_size=200)
       | st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)
       | st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff" + b)
       | st.binary(max_size=200).map(lambda b: b"RIFF\x00\x00\x00\x00WEBPVP8 " + b))
def test_image_decoding_raises_only_domain_errors(data: bytes) -> None:
    try:
        with warnings.catch_warnings():
            # PIL warns about corrupt metadata (EXIF) it skips; outside pytest that is not an error
            warnings.simplefilter("ignore", UserWarning)
            decoded = decode_image_bytes(data, 0, ImageSpec(size=(16, 16)), 1_000_000)
    except ServiceError as exc:
        assert exc.status in (400, 413, 415)
        return
    assert decoded.pixels.shape == (3, 16, 16)
    assert decoded.image.mode in ("RGB", "RGBA")


FEATURES = ["a", "b", "c"]


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values | st.lists(st.integers() | st.floats(), min_size=3, max_size=3)
                | st.fixed_dictionaries({f: st.integers() | st.floats() | json_values for f in FEATURES}),
                max_size=4))
@example([[10**400, 1, 2]])
@example([[True, 1.0, 2.0]])
@example([{"a": 1, "b": 2, "c": float("nan")}])
def test_tabular_rows_raise_only_invalid_input(instances: list[Any]) -> None:
    try:
        rows = tabular_rows(instances, FEATURES)
    except ServiceError as exc:
        assert exc.status == 422 and exc.errors
        for item in exc.errors:
            assert item.loc[0] == "instances" and isinstance(item.loc[1], int)
        return
    assert rows.shape == (len(instances), len(FEATURES))
    assert bool((abs(rows) <= 3.0e38).all())

