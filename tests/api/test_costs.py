"""No request can cost more than the limits say, and no client input yields a 500.

Each test is one finding of an adversarial review (issue 11): a request that used to freeze the
event loop, occupy a worker for minutes, exhaust memory or answer 500, and what it gets now.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.test_limits import png_bomb
from tests.conftest import LiveServer, make_settings
from tests.fixtures import faulty
from tests.fixtures.probes import rss_bytes

PROBLEM = "application/problem+json"
ROW30 = [1.0] * 30


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def post_raw(client: httpx.Client, path: str, text: str) -> httpx.Response:
    """A JSON body exactly as written (escapes such as \\ud800 reach the server as they are)."""
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


# --------------------------------------------------------------------------- bounded validation


def test_millions_of_numbers_are_refused_before_they_are_parsed(client: httpx.Client) -> None:
    """2 million numbers (4 MB): 413 at once, a small answer (it was a 480 MB list of 6 million errors)."""
    body = '{"instances": [' + ",".join(["0"] * 2_000_000) + "]}"
    before = rss_bytes()
    response = post_raw(client, "/v1/models/breast-cancer/predict", body)
    detail = problem(response, 413)["detail"]
    assert "MAX_INSTANCES" in detail
    assert len(response.content) < 1000
    assert rss_bytes() - before < 200 * 2**20
    assert client.get("/healthz").status_code == 200


def test_too_many_instances_are_counted_before_any_is_validated(client: httpx.Client) -> None:
    body = {"instances": [{"wrong": i} for i in range(200)]}
    detail = problem(client.post("/v1/models/breast-cancer/predict", json=body), 413)["detail"]
    assert detail == "200 instances exceed MAX_INSTANCES=64"


def test_a_wide_invalid_instance_lists_at_most_twenty_errors(client: httpx.Client) -> None:
    instance = {f"f{i}": 0 for i in range(5000)}
    body = problem(client.post("/v1/models/purchase/predict", json={"instances": [instance]}), 422)
    assert len(body["errors"]) == 20
    assert body["detail"].endswith(f"(and {5000 + 6 - 1} more)")
    assert len(json.dumps(body)) < 5000


def test_echoed_client_text_is_bounded(client: httpx.Client) -> None:
    huge = "m" * 30_000_000
    response = client.post("/v1/models/breast-cancer/explain", json={"instances": [ROW30], "method": huge})
    assert len(problem(response, 422)["detail"]) < 1000
    response = client.post("/v1/models/breast-cancer/explain", json={"instances": [ROW30], "target": 10**4000})
    assert response.status_code in (400, 422) and len(response.content) < 2000
    label = "x" * 100_000
    response = client.post("/v1/models/breast-cancer/explain", json={"instances": [ROW30], "target": label})
    detail = problem(response, 422)["detail"]
    assert len(detail) < 300 and "(100000 characters)" in detail


# --------------------------------------------------------------------------- the cost model


def test_a_request_whose_compute_exceeds_the_limit_is_refused_whatever_the_queue(client: httpx.Client,
                                                                                 live: LiveServer) -> None:
    """occlusion with window 1, stride 1 on 64 images was admitted as 1,048,640 work rows (16x the
    queue) because the queue bound was only checked against a non-empty queue."""
    batcher = live.service.registry.models["shapes"].batcher
    computed = batcher.computed_items
    image = {"b64": _tiny_png()}
    body = {"instances": [image] * 64, "method": "occlusion", "params": {"window": 1, "stride": 1}}
    detail = problem(client.post("/v1/models/shapes/explain", json=body), 413)["detail"]
    assert "MAX_REQUEST_ROWS=16384" in detail and str(64 * (128 * 128 + 1)) in detail
    assert batcher.computed_items == computed and batcher.queued_rows == 0  # nothing was queued
    # the same request with a window that keeps its cost under the limit is served
    light = {"instances": [image], "method": "occlusion", "params": {"window": 32, "stride": 32}}
    assert client.post("/v1/models/shapes/explain", json=light).status_code == 200


def test_parameters_whose_cost_grows_without_bound_are_bounded_by_the_cost_model(client: httpx.Client) -> None:
    for params, method in (({"n_steps": 1024}, "integrated_gradients"), ({"n_samples": 1024}, "gradient_shap"),
                           ({"n_samples": 10000}, "kernel_shap")):
        body = {"instances": [ROW30] * 64, "method": method, "params": params}
        model = "purchase" if method == "kernel_shap" else "breast-cancer"
        if model == "purchase":
            body["instances"] = [[1.0] * 6] * 64
        detail = problem(client.post(f"/v1/models/{model}/explain", json=body), 413)["detail"]
        assert "MAX_REQUEST_ROWS" in detail, (method, detail)
        # one instance fits
        body["instances"] = body["instances"][:1]
        assert client.post(f"/v1/models/{model}/explain", json=body).status_code == 200, method


def _tiny_png() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def bombs() -> str:
    import base64

    return base64.b64encode(png_bomb(6000, 6000)).decode()  # 36 megapixels in about 40 KB


def test_large_images_cost_what_the_pixel_limits_allow(client: httpx.Client, bombs: str) -> None:
    """Sixteen 36-megapixel PNGs with max_size 8192 took 33 s and 3 GB: now 413 from their headers."""
    before = rss_bytes()
    many = {"instances": [{"b64": bombs}] * 16, "method": "saliency", "render": {"max_size": 8192}}
    detail = problem(client.post("/v1/models/shapes/explain", json=many), 413)["detail"]
    assert "MAX_REQUEST_PIXELS=64000000" in detail
    one = {"instances": [{"b64": bombs}], "method": "saliency", "outputs": ["overlay", "heatmap"],
           "render": {"max_size": 8192}}
    detail = problem(client.post("/v1/models/shapes/explain", json=one), 413)["detail"]
    assert "MAX_OUTPUT_PIXELS=16777216" in detail and "render.max_size=8192" in detail
    assert rss_bytes() - before < 100 * 2**20  # nothing was decoded


# --------------------------------------------------------------------------- no 500 from client input


SURROGATE = "\\ud800"


@pytest.mark.parametrize(("path", "body"), [
    ("/predict", f'{{"model": "{SURROGATE}", "instances": [[1]]}}'),
    ("/v1/models/purchase/predict", f'{{"instances": [{{"{SURROGATE}": 1}}]}}'),
    ("/v1/models/purchase/explain", f'{{"instances": [[1, 2, 3, 4, 5, 6]], "method": "{SURROGATE}"}}'),
    ("/v1/models/purchase/explain", f'{{"instances": [[1, 2, 3, 4, 5, 6]], "target": "{SURROGATE}"}}'),
    ("/v1/models/shapes/explain", f'{{"instances": [{{"b64": "AAAA"}}], "render": {{"colormap": "{SURROGATE}"}}}}'),
    ("/v1/models/shapes/explain", f'{{"instances": [{{"b64": "AAAA"}}], "method": "gradcam", '
                                  f'"params": {{"layer": "{SURROGATE}"}}}}'),
], ids=["model", "feature", "method", "target", "colormap", "layer"])
def test_a_lone_surrogate_anywhere_is_a_client_error(client: httpx.Client, path: str, body: str) -> None:
    response = post_raw(client, path, body)
    assert 400 <= response.status_code < 500, response.text
    json.loads(response.content)  # the problem body is valid JSON (the surrogate is escaped)


@pytest.mark.parametrize(("model", "method", "params", "where"), [
    ("shapes", "gradcam", {"layer": "classifier"}, "no spatial map"),
    ("shapes", "gradcam", {"layer": "nope"}, "no module 'nope'"),
    ("breast-cancer", "integrated_gradients", {"baseline": 1e308}, "float32"),
    ("breast-cancer", "gradient_shap", {"baseline": -1e308}, "float32"),
    ("breast-cancer", "integrated_gradients", {"baseline": "blur"}, "image models"),
    ("breast-cancer", "integrated_gradients", {"n_steps": True}, "not True"),
    ("breast-cancer", "integrated_gradients", {"baseline": [0.1, 0.2, 0.3]}, "image models"),
], ids=["layer-without-map", "unknown-layer", "baseline-1e308", "baseline-minus-1e308", "blur-on-rows",
        "true-is-not-1", "triple-on-rows"])
def test_parameters_that_do_not_fit_are_422_naming_the_parameter(client: httpx.Client, model: str, method: str,
                                                                   params: dict[str, Any], where: str) -> None:
    instance: Any = {"b64": _tiny_png()} if model == "shapes" else [1.0] * (6 if model == "purchase" else 30)
    response = client.post(f"/v1/models/{model}/explain", json={"instances": [instance], "method": method,
                                                               "params": params})
    body = problem(response, 422)
    assert where in body["detail"] and "params" in body["detail"], body


@pytest.mark.parametrize("token", ["1e309", "NaN", "-Infinity"])
def test_non_finite_baselines_are_422(client: httpx.Client, token: str) -> None:
    for method in ("integrated_gradients", "kernel_shap"):
        text = f'{{"instances": [[1, 2, 3, 4, 5, 6]], "method": "{method}", "params": {{"baseline": {token}}}}}'
        assert "float32" in problem(post_raw(client, "/v1/models/purchase/explain", text), 422)["detail"]


def test_inputs_whose_output_is_not_finite_are_422_never_null(client: httpx.Client) -> None:
    """Inputs near 3e38 on diabetes answered {"value": null}."""
    row = [3.0e38] * 10
    detail = problem(client.post("/v1/models/diabetes/predict", json={"instances": [row]}), 422)["detail"]
    assert "not a finite number" in detail
    body = problem(client.post("/v1/models/diabetes/explain", json={"instances": [[1.0] * 10, row]}), 422)
    assert "not a finite number" in body["detail"]


def test_duplicate_keys_in_an_instance_are_422(client: httpx.Client) -> None:
    text = '{"instances": [{"age": 1, "age": 2, "monthly_spend": 1, "category_views": 1, "cart_adds": 1, ' \
           '"follows_brand": 1, "return_rate": 0.1}]}'
    assert "duplicate key 'age'" in problem(post_raw(client, "/v1/models/purchase/predict", text), 422)["detail"]


def test_an_unterminated_multipart_body_is_400(client: httpx.Client) -> None:
    boundary = "xyz"
    cut = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
           "Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG\r\n\x1a\n"
    response = client.post("/v1/models/shapes/predict", content=cut,
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "closing boundary" in problem(response, 400)["detail"]


def test_the_mean_baseline_needs_a_mean_in_the_catalog(tmp_path_factory: pytest.TempPathFactory) -> None:
    catalog = faulty.catalog(tmp_path_factory.mktemp("nomean"), {"tiny": {}})
    with LiveServer(make_settings(models=catalog, log_level="CRITICAL")) as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        info = http.get("/v1/models/tiny").json()
        ablation = next(m for m in info["methods"] if m["name"] == "feature_ablation")
        assert ablation["params"]["baseline"] == "zeros"  # the default where there is no mean
        response = http.post("/v1/models/tiny/explain", json={"instances": [[1, 2, 3, 4]], "method": "feature_ablation",
                                                              "params": {"baseline": "mean"}})
        assert "no mean input" in problem(response, 422)["detail"]


# --------------------------------------------------------------------------- settings


@pytest.fixture(scope="module")
def small_rows() -> Iterator[LiveServer]:
    with LiveServer(make_settings(max_request_rows=40, log_level="CRITICAL")) as server:
        yield server


def test_the_row_limit_is_a_setting(small_rows: LiveServer) -> None:
    with httpx.Client(base_url=small_rows.url, timeout=60) as http:
        ok = http.post("/v1/models/breast-cancer/explain", json={"instances": [ROW30], "params": {"n_steps": 38}})
        assert ok.status_code == 200  # 40 rows: 38 steps + 2
        over = http.post("/v1/models/breast-cancer/explain", json={"instances": [ROW30], "params": {"n_steps": 39}})
        assert "costs 41 work rows" in problem(over, 413)["detail"]
