"""Limits and API keys on the Open Inference Protocol (v2) routes: the v1 routes' statuses, with
the protocol's `{"error": "..."}` body."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.test_v2 import binary_body, error, length_prefixed, scores_of, tensor
from tests.conftest import LiveServer, image_bytes, make_settings
from tests.fixtures.probes import total

MAX_BODY = 200_000
MAX_INSTANCES = 4
MAX_PIXELS = 10_000
KEY = "v2-secret"
BODY_TIMEOUT_S = 1.0
ROW = [1.0] * 30  # breast-cancer


@pytest.fixture(scope="module")
def small() -> Iterator[LiveServer]:
    settings = make_settings(max_body_bytes=MAX_BODY, max_instances=MAX_INSTANCES, max_image_pixels=MAX_PIXELS,
                             api_keys=KEY, body_timeout_s=BODY_TIMEOUT_S)
    with LiveServer(settings) as server:
        yield server


@pytest.fixture()
def http(small: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small.url, timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def rows_request(n: int) -> dict[str, Any]:
    return {"inputs": [tensor("input", [n, 30], "FP32", [ROW] * n)]}


def test_rows_up_to_max_instances_and_not_one_more(http: httpx.Client) -> None:
    assert scores_of(http.post("/v2/models/breast-cancer/infer", json=rows_request(MAX_INSTANCES))).shape == (4, 2)
    assert error(http.post("/v2/models/breast-cancer/infer", json=rows_request(MAX_INSTANCES + 1)), 413) == (
        f"{MAX_INSTANCES + 1} rows exceed MAX_INSTANCES={MAX_INSTANCES}")
    files = [image_bytes(Image.new("RGB", (8, 8)))] * (MAX_INSTANCES + 1)
    content, headers = binary_body([("image", [len(files)], "BYTES", length_prefixed(files))])
    assert "rows exceed MAX_INSTANCES" in error(http.post("/v2/models/shapes/infer", content=content,
                                                          headers=headers), 413)


def test_bodies_over_max_body_bytes_are_413(http: httpx.Client) -> None:
    rows = MAX_BODY // 120 + 1  # 30 float32 a row: binary data alone over the limit
    content, headers = binary_body([("input", [rows, 30], "FP32", bytes(rows * 120))])
    assert "MAX_BODY_BYTES" in error(http.post("/v2/models/breast-cancer/infer", content=content,
                                               headers=headers), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
        yield json.dumps(rows_request(1))[:-1].encode()
        for _ in range(MAX_BODY // 1000 + 1):
            yield b" " * 1000
        yield b"}"

    streamed = http.post("/v2/models/breast-cancer/infer", content=chunks(),
                         headers={"Content-Type": "application/json"})
    assert error(streamed, 413) == f"body exceeds MAX_BODY_BYTES={MAX_BODY}"


def test_images_over_max_image_pixels_are_413(http: httpx.Client) -> None:
    # pixels: refused from the declared shape, before any data is read
    declared = {"inputs": [{"name": "pixels", "shape": [1, 100, 101, 3], "datatype": "UINT8",
                            "parameters": {"binary_data_size": 0}}]}
    header = json.dumps(declared).encode()
    refused = http.post("/v2/models/shapes/infer", content=header,
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert error(refused, 413) == "input 'pixels': 101x100 = 10100 pixels exceeds MAX_IMAGE_PIXELS=10000"
    at_limit = np.zeros((1, 100, 100, 3), dtype=np.uint8)
    content, headers = binary_body([("pixels", list(at_limit.shape), "UINT8", at_limit.tobytes())])
    assert scores_of(http.post("/v2/models/shapes/infer", content=content, headers=headers)).shape == (1, 4)
    # a file: refused from its header, as on v1
    png = image_bytes(Image.new("RGB", (101, 100)))
    content, headers = binary_body([("image", [1], "BYTES", length_prefixed([png]))])
    assert "exceeds MAX_IMAGE_PIXELS=10000" in error(http.post("/v2/models/shapes/infer", content=content,
                                                               headers=headers), 413)


KEYED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v2/models", None),
    ("GET", "/v2/models/breast-cancer", None),
    ("GET", "/v2/models/breast-cancer/versions/1", None),
    ("GET", "/v2/models/breast-cancer/ready", None),
    ("GET", "/v2/models/breast-cancer/versions/1/ready", None),
    ("POST", "/v2/models/breast-cancer/infer", rows_request(1)),
    ("POST", "/v2/models/breast-cancer/versions/1/infer", rows_request(1)),
]


@pytest.mark.parametrize(("method", "path", "body"), KEYED, ids=[f"{m} {p}" for m, p, _ in KEYED])
def test_model_routes_need_a_key(small: LiveServer, method: str, path: str, body: dict[str, Any] | None) -> None:
    with httpx.Client(base_url=small.url, timeout=120) as anonymous:
        missing = anonymous.request(method, path, json=body)
        assert "an API key is required" in error(missing, 401)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert error(anonymous.request(method, path, json=body, headers={"X-API-Key": "wrong"}), 403) == (
            "the API key is not valid")
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
            assert anonymous.request(method, path, json=body, headers=headers).status_code == 200


def test_health_and_server_metadata_stay_open(small: LiveServer) -> None:
    with httpx.Client(base_url=small.url, timeout=120) as anonymous:
        for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
            assert anonymous.get(path).status_code == 200, path


def test_refused_requests_are_counted_under_the_v2_route(small: LiveServer, http: httpx.Client) -> None:
    def refused() -> float:
        return total(http.get("/metrics").text, "explainserve_requests_total", route="v2_infer",
                     model="breast-cancer", status="401")

    before = refused()
    with httpx.Client(base_url=small.url, timeout=120) as anonymous:
        error(anonymous.post("/v2/models/breast-cancer/infer", json=rows_request(1)), 401)
    assert refused() == before + 1


def test_a_body_that_stops_arriving_is_408(small: LiveServer) -> None:
    head = (f"POST /v2/models/breast-cancer/infer HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", small.port), timeout=60) as sock:
        sock.sendall(head.encode() + b'{"inputs": [')  # and nothing more: the server gives up
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 408"), answer
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower()
    assert json.loads(body) == {"error": f"the body was not received within BODY_TIMEOUT_S={BODY_TIMEOUT_S:g} s"}
