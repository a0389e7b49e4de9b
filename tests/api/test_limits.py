"""Input limits of API.md "Errors", over real HTTP against a server with small limits.

Memory is measured as this process's resident set (the live server runs in a thread of it):
a refused 200 MB body or a decompression bomb must not leave a footprint anywhere near its
expanded size.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from models.shapes import draw_sample
from tests.conftest import LiveServer, image_bytes, make_settings
from tests.fixtures.probes import rss_bytes

MAX_BODY = 1_000_000
MAX_INSTANCES = 8
MAX_PIXELS = 250_000
PROBLEM = "application/problem+json"
ROUTES = ["/v1/models/{m}/predict", "/v1/models/{m}:explain", "/predict", "/explain"]
FEATURES = 30  # breast-cancer
MB = 1024 * 1024


@pytest.fixture(scope="module")
def small() -> Iterator[LiveServer]:
    settings = make_settings(max_body_bytes=MAX_BODY, max_instances=MAX_INSTANCES, max_image_pixels=MAX_PIXELS)
    with LiveServer(settings) as server:
        yield server


@pytest.fixture()
def http(small: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small.url, timeout=120) as c:
        yield c


def url(route: str, model: str) -> str:
    return route.format(m=model)


def body(route: str, model: str, instances: list[Any], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"instances": instances, **extra}
    if "{m}" not in route:
        data["model"] = model
    if "explain" in route and model == "breast-cancer":
        data.setdefault("params", {"n_steps": 4})
    return data


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    data = response.json()
    assert data["status"] == status and data["type"] == "about:blank" and data["title"]
    assert response.headers.get("x-request-id")
    return data


def shape_png(size: int = 64, seed: int = 0, fmt: str = "PNG") -> bytes:
    import numpy as np

    sample = draw_sample(np.random.default_rng(seed), size, size, 1)
    return image_bytes(sample.image, fmt)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of zero rows: a few hundred KB that expand to width x height pixels."""
    row = b"\x00" + bytes((width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def stream(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    block = b" " * chunk
    sent = 0
    while sent < total:
        part = block[: min(chunk, total - sent)]
        sent += len(part)
        yield part


def test_body_limit_allows_a_body_just_under_it(http: httpx.Client) -> None:
    row = [1.0] * FEATURES
    raw = httpx.Request("POST", "/", json={"instances": [row]}).content
    padded = raw[:-1] + b" " * (MAX_BODY - len(raw)) + raw[-1:]  # JSON whitespace up to the limit
    assert len(padded) == MAX_BODY
    ok = http.post("/v1/models/breast-cancer/predict", content=padded, headers={"content-type": "application/json"})
    assert ok.status_code == 200, ok.text
    over = http.post("/v1/models/breast-cancer/predict", content=padded + b" ",
                     headers={"content-type": "application/json"})
    assert "MAX_BODY_BYTES" in problem(over, 413)["detail"]


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
@pytest.mark.parametrize("route", ["/v1/models/breast-cancer/predict", "/v1/models/shapes/explain"])
def test_200_mb_body_is_refused_while_streaming(http: httpx.Client, declared: bool, route: str) -> None:
    size = 200 * MB
    headers = {"content-type": "application/json"}
    if declared:
        headers["content-length"] = str(size)
    http.get("/healthz")
    before = rss_bytes()
    response = http.post(route, content=stream(size), headers=headers)
    grown = rss_bytes() - before
    assert "MAX_BODY_BYTES" in problem(response, 413)["detail"]
    assert grown < 40 * MB, f"resident memory grew by {grown / MB:.0f} MB"
    # the server is fine afterwards
    after = http.post("/v1/models/breast-cancer/predict", json={"instances": [[1.0] * FEATURES]})
    assert after.status_code == 200


def test_200_mb_multipart_body_is_refused_while_streaming(http: httpx.Client) -> None:
    boundary = "limit-test"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def parts() -> Iterator[bytes]:
        yield head
        yield from stream(200 * MB)
        yield f"\r\n--{boundary}--\r\n".encode()

    before = rss_bytes()
    response = http.post("/v1/models/shapes/predict", content=parts(),
                         headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    grown = rss_bytes() - before
    problem(response, 413)
    assert grown < 40 * MB, f"resident memory grew by {grown / MB:.0f} MB"


@pytest.mark.parametrize("how", ["b64", "multipart"])
def test_png_bomb_is_413_without_decoding(http: httpx.Client, how: str) -> None:
    bomb = png_bomb(30_000, 30_000)
    assert len(bomb) < 400_000  # a few hundred KB on the wire
    with Image.open(io.BytesIO(bomb)) as img:  # a real PNG of 900 million pixels
        assert img.size == (30_000, 30_000) and img.format == "PNG"
    http.post("/v1/models/shapes/predict", json={"instances": [{"b64": base64.b64encode(shape_png()).decode()}]})
    before = rss_bytes()
    for route in ("/v1/models/shapes/predict", "/v1/models/shapes/explain"):
        if how == "b64":
            response = http.post(route, json={"instances": [{"b64": base64.b64encode(bomb).decode()}]})
        else:
            response = http.post(route, files=[("file", ("bomb.png", bomb, "image/png"))])
        detail = problem(response, 413)["detail"]
        assert "30000x30000" in detail and "MAX_IMAGE_PIXELS" in detail
    grown = rss_bytes() - before
    assert grown < 40 * MB, f"resident memory grew by {grown / MB:.0f} MB"


def test_image_pixel_limit_is_exact(http: httpx.Client) -> None:
    side = int(MAX_PIXELS**0.5)  # 500 x 500 = MAX_PIXELS exactly
    at_limit = Image.new("RGB", (side, side), (10, 200, 30))
    over = Image.new("RGB", (side + 1, side), (10, 200, 30))
    ok = http.post("/v1/models/shapes/predict",
                   json={"instances": [{"b64": base64.b64encode(image_bytes(at_limit)).decode()}]})
    assert ok.status_code == 200, ok.text
    refused = http.post("/v1/models/shapes/predict",
                        json={"instances": [{"b64": base64.b64encode(image_bytes(over, "JPEG")).decode()}]})
    assert f"MAX_IMAGE_PIXELS={MAX_PIXELS}" in problem(refused, 413)["detail"]


@pytest.mark.parametrize("route", ROUTES)
def test_max_instances(http: httpx.Client, route: str) -> None:
    rows = [[1.0 + i] * FEATURES for i in range(MAX_INSTANCES + 1)]
    ok = http.post(url(route, "breast-cancer"), json=body(route, "breast-cancer", rows[:MAX_INSTANCES]))
    assert ok.status_code == 200, ok.text
    refused = http.post(url(route, "breast-cancer"), json=body(route, "breast-cancer", rows))
    detail = problem(refused, 413)["detail"]
    assert f"MAX_INSTANCES={MAX_INSTANCES}" in detail and str(MAX_INSTANCES + 1) in detail


def test_max_instances_counts_file_parts(http: httpx.Client) -> None:
    png = shape_png()
    files = [("file", (f"{i}.png", png, "image/png")) for i in range(MAX_INSTANCES + 1)]
    problem(http.post("/v1/models/shapes/predict", files=files), 413)
    ok = http.post("/v1/models/shapes/predict", files=files[:MAX_INSTANCES])
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == MAX_INSTANCES


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(buf, format="GIF")
    return buf.getvalue()


def _bmp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(buf, format="BMP")
    return buf.getvalue()


@pytest.mark.parametrize("route", ["/v1/models/shapes/predict", "/v1/models/shapes/explain"])
@pytest.mark.parametrize("instance", [
    {"b64": base64.b64encode(_gif()).decode()},
    {"b64": base64.b64encode(_bmp()).decode()},
    {"b64": base64.b64encode(b"just some text, not an image").decode()},
    "data:image/gif;base64," + base64.b64encode(_gif()).decode(),
    "data:text/plain;base64," + base64.b64encode(b"hello").decode(),
], ids=["gif", "bmp", "text-bytes", "gif-uri", "text-uri"])
def test_unsupported_formats_are_415(http: httpx.Client, route: str, instance: Any) -> None:
    problem(http.post(route, json={"instances": [instance]}), 415)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "image/png",
                                          "application/xml"])
@pytest.mark.parametrize("route", ROUTES)
def test_unsupported_content_types_are_415(http: httpx.Client, content_type: str, route: str) -> None:
    response = http.post(url(route, "breast-cancer"), content=b'{"instances": [[1]]}',
                         headers={"content-type": content_type})
    problem(response, 415)


def test_gif_file_part_is_415(http: httpx.Client) -> None:
    problem(http.post("/v1/models/shapes/predict", files=[("file", ("a.gif", _gif(), "image/gif"))]), 415)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_or_corrupt_images_are_400(http: httpx.Client, fmt: str) -> None:
    data = shape_png(96, fmt=fmt)
    truncated = data[: len(data) // 2]
    corrupt = data[:32] + bytes(range(256)) * 4  # the right header, then garbage
    for broken in (truncated, corrupt, data[:12]):
        response = http.post("/v1/models/shapes/predict",
                             json={"instances": [{"b64": base64.b64encode(broken).decode()}]})
        problem(response, 400)
        multipart = http.post("/v1/models/shapes/explain", files=[("file", ("x", broken, "image/png"))])
        problem(multipart, 400)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
@pytest.mark.parametrize("route", ROUTES)
def test_non_finite_numbers_are_422(http: httpx.Client, token: str, route: str) -> None:
    row = ", ".join(["1.0"] * (FEATURES - 1) + [token])
    raw = body(route, "breast-cancer", [])
    raw.pop("instances")
    extra = "".join(f', "{k}": {v}' for k, v in ((k, _json(v)) for k, v in raw.items()))
    content = ('{"instances": [[' + row + "]]" + extra + "}").encode()
    response = http.post(url(route, "breast-cancer"), content=content, headers={"content-type": "application/json"})
    data = problem(response, 422)
    assert data["errors"][0]["loc"] == ["instances", 0, FEATURES - 1]
    assert "finite" in data["errors"][0]["msg"]


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def test_non_finite_named_feature_is_422(http: httpx.Client, small: LiveServer) -> None:
    names = list(small.service.registry.models["breast-cancer"].spec.features or [])
    pairs = ", ".join(f'"{n}": {"NaN" if i == 3 else "1.5"}' for i, n in enumerate(names))
    response = http.post("/v1/models/breast-cancer/explain", content=('{"instances": [{' + pairs + "}]}").encode(),
                         headers={"content-type": "application/json"})
    data = problem(response, 422)
    assert data["errors"] == [{"loc": ["instances", 0, names[3]], "msg": "not a finite number"}]


@pytest.mark.parametrize("value", ["soon", "", "0", "-1", "nan", "inf", "1e999", "0x10", "1,5"])
@pytest.mark.parametrize("route", ["/v1/models/breast-cancer/predict", "/v1/models/breast-cancer/explain"])
def test_garbage_request_timeout_header_is_400(http: httpx.Client, value: str, route: str) -> None:
    response = http.post(route, json={"instances": [[1.0] * FEATURES]}, headers={"X-Request-Timeout": value})
    assert "X-Request-Timeout" in problem(response, 400)["detail"]


def test_valid_request_timeout_header_is_accepted(http: httpx.Client) -> None:
    for value in ("30", "2.5", "1e1"):
        response = http.post("/v1/models/breast-cancer/predict", json={"instances": [[1.0] * FEATURES]},
                             headers={"X-Request-Timeout": value})
        assert response.status_code == 200, (value, response.text)


@pytest.mark.parametrize("content", [b"", b"   ", b"{", b'{"instances": [1, 2', b"\xff\xfe\x00", b"[" * 100_000])
def test_malformed_bodies_are_400(http: httpx.Client, content: bytes) -> None:
    response = http.post("/v1/models/breast-cancer/predict", content=content,
                         headers={"content-type": "application/json"})
    problem(response, 400)


@pytest.mark.parametrize(("content", "content_type"), [
    (b"--x\r\nnot a part\r\n", "multipart/form-data; boundary=x"),
    (b"garbage", "multipart/form-data; boundary=x"),
    (b"--x\r\n", "multipart/form-data"),
], ids=["bad-part", "no-boundary-in-body", "no-boundary-parameter"])
def test_malformed_multipart_is_400(http: httpx.Client, content: bytes, content_type: str) -> None:
    response = http.post("/v1/models/shapes/predict", content=content, headers={"content-type": content_type})
    assert "multipart" in problem(response, 400)["detail"]


@pytest.mark.parametrize(("field", "value", "status"), [
    ("top_k", "--1", 422), ("top_k", "²", 422), ("top_k", "9" * 5000, 422), ("top_k", "٣", 422),
    ("target", "--1", 422), ("target", "²", 422), ("target", "[" + "9" * 5000 + "]", 400),
    ("params", "[" * 100_000, 400), ("params", '{"n_steps": ' + "1" * 5000 + "}", 400),
    ("render", "{", 400), ("outputs", ",,,", 200),
])
def test_odd_form_fields_are_client_errors(http: httpx.Client, field: str, value: str, status: int) -> None:
    files = [("file", ("a.png", shape_png(), "image/png"))]
    response = http.post("/v1/models/shapes/explain", data={field: value, "method": "saliency"}, files=files)
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        problem(response, status)
    assert http.get("/healthz").status_code == 200  # the connection was not dropped


def test_integers_too_long_for_python_are_400(http: httpx.Client) -> None:
    content = b'{"instances": [[' + b"9" * 5000 + b"]]}"
    response = http.post("/v1/models/breast-cancer/predict", content=content,
                         headers={"content-type": "application/json"})
    assert "malformed JSON" in problem(response, 400)["detail"]
