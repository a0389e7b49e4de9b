"""Explain over real HTTP (API.md "Explain"): every method on every demo model through the three
paths, method and parameter validation, targets, image outputs (overlay, heatmap, attributions,
`Accept: image/png`, multipart), tabular outputs (attributions by feature, chart, summary), and
batching of concurrent requests that leaves every answer as it would have been alone.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from models.shapes import draw_sample
from tests.conftest import ROOT, LiveServer, image_bytes, make_settings, png_b64
from tests.fixtures.compare import assert_close
from tests.fixtures.probes import batch_counts

EXAMPLES = ROOT / "models" / "shapes" / "examples"
TABULAR = ("breast-cancer", "purchase", "diabetes")
TABULAR_METHODS = ["integrated_gradients", "gradient_shap", "saliency", "input_x_gradient",
                   "smoothgrad", "feature_ablation", "kernel_shap", "lime", "deeplift", "deeplift_shap"]
IMAGE_METHODS = ["integrated_gradients", "gradient_shap", "saliency", "input_x_gradient",
                 "smoothgrad", "gradcam", "occlusion", "lime", "deeplift", "deeplift_shap"]
LIGHT = {  # light parameters for the CNN on a busy CPU; the routes and code paths are the same
    "integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 2},
    "smoothgrad": {"n_samples": 2}, "occlusion": {"window": 32, "stride": 32}, "lime": {"n_samples": 16},
    "deeplift_shap": {"n_baselines": 2},
}


def _path(kind: str, model: str) -> str:
    return {"rest": f"/v1/models/{model}/explain", "kserve": f"/v1/models/{model}:explain",
            "body": "/explain"}[kind]


def _post(client: httpx.Client, model: str, body: dict[str, Any], kind: str = "rest",
          **kwargs: Any) -> httpx.Response:
    if kind == "body":
        body = {**body, "model": model}
    return client.post(_path(kind, model), json=body, **kwargs)


def _tabular_instance(model: str, i: int = 0) -> dict[str, float]:
    """A realistic row: the model's example rows, or values around its training mean."""
    example = ROOT / "models" / model.replace("-", "_") / "example.json"
    if example.is_file():
        instances = json.loads(example.read_text())["instances"]
        return dict(instances[i % len(instances)])
    return dict(zip(DIABETES_FEATURES, [50.0 + i, 1.0 + i % 2, 26.0, 94.0, 188.0, 114.0, 49.0, 4.0, 4.6, 91.0],
                    strict=True))


DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def _shape_png(width: int = 128, height: int = 128, seed: int = 1, label: int | None = None) -> bytes:
    return image_bytes(draw_sample(np.random.default_rng(seed), width, height, label).image)


def _image_instance(width: int = 128, height: int = 128, seed: int = 1, label: int | None = None) -> dict[str, str]:
    return {"b64": base64.b64encode(_shape_png(width, height, seed, label)).decode()}


def _decode_uri(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    data = base64.b64decode(uri[len(prefix):], validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _problem(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def _locs(body: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in body.get("errors", [])]


# --------------------------------------------------------------------------- every method, every path


@pytest.mark.parametrize("kind", ["rest", "kserve", "body"])
@pytest.mark.parametrize("model", TABULAR)
def test_every_tabular_method_answers_on_every_path(client: httpx.Client, model: str, kind: str) -> None:
    instances = [_tabular_instance(model, 0), _tabular_instance(model, 1)]
    for method in TABULAR_METHODS:
        r = _post(client, model, {"instances": instances, "method": method}, kind)
        assert r.status_code == 200, (method, r.text)
        body = r.json()
        assert body["model"] == model and body["method"] == method
        assert len(body["explanations"]) == 2
        for item in body["explanations"]:
            assert len(item["attributions"]) == len(instances[0])
            assert all(np.isfinite(a["attribution"]) for a in item["attributions"])


@pytest.mark.parametrize("kind", ["rest", "kserve", "body"])
def test_every_image_method_answers_on_every_path(client: httpx.Client, kind: str) -> None:
    for method in IMAGE_METHODS:
        r = _post(client, "shapes", {"instances": [_image_instance(seed=3)], "method": method,
                                     "params": LIGHT.get(method, {}),
                                     "outputs": ["overlay", "heatmap", "attributions"]}, kind)
        assert r.status_code == 200, (method, r.text)
        body = r.json()
        assert body["method"] == method
        [item] = body["explanations"]
        assert _decode_uri(item["overlay"]).size == (128, 128)
        assert np.asarray(item["attributions"]).shape == (128, 128)


def test_image_methods_answer_at_their_default_parameters(client: httpx.Client) -> None:
    for method in IMAGE_METHODS:
        r = _post(client, "shapes", {"instances": [_image_instance(seed=4)], "method": method})
        assert r.status_code == 200, (method, r.text)
        assert r.json()["params"] == _info(client, "shapes")[method]


def test_default_method_is_the_models(client: httpx.Client) -> None:
    r = _post(client, "shapes", {"instances": [_image_instance()]})
    assert r.status_code == 200 and r.json()["method"] == "gradcam"
    r = _post(client, "purchase", {"instances": [_tabular_instance("purchase")]})
    assert r.status_code == 200 and r.json()["method"] == "integrated_gradients"


# --------------------------------------------------------------------------- what is offered


def _info(client: httpx.Client, model: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"/v1/models/{model}")
    assert r.status_code == 200
    return {m["name"]: m["params"] for m in r.json()["methods"]}


@pytest.mark.parametrize("model", [*TABULAR, "shapes"])
def test_model_info_lists_exactly_the_supported_methods(client: httpx.Client, model: str) -> None:
    info = client.get(f"/v1/models/{model}").json()
    methods = _info(client, model)
    assert list(methods) == (IMAGE_METHODS if model == "shapes" else TABULAR_METHODS)
    assert info["default_method"] in methods
    expected = ({"n_steps": 32} if model == "shapes" else {"n_steps": "auto", "tolerance": 0.01, "max_steps": 128})
    assert methods["integrated_gradients"] == {**expected, "baseline": "zeros", "method": "gausslegendre"}
    for stochastic in ("gradient_shap", "smoothgrad", "lime", "deeplift_shap",
                       *([] if model == "shapes" else ["kernel_shap"])):
        assert methods[stochastic]["seed"] == 0 and methods[stochastic]["runs"] == 1
    if model != "shapes":
        assert methods["feature_ablation"]["baseline"] == "mean"  # these models have a training mean
    not_offered = ["feature_ablation", "kernel_shap"] if model == "shapes" else ["gradcam", "occlusion"]
    for method in not_offered:
        body = {"instances": [_image_instance() if model == "shapes" else _tabular_instance(model)],
                "method": method}
        problem = _problem(_post(client, model, body))
        assert ["method"] in _locs(problem), problem
        assert "not offered" in problem["detail"]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("body", "loc"), [
    ({"method": "anchors"}, ["method"]),
    ({"method": "integrated_gradients", "params": {"steps": 8}}, ["params", "steps"]),
    ({"method": "integrated_gradients", "params": {"n_steps": 0}}, ["params", "n_steps"]),
    ({"method": "integrated_gradients", "params": {"n_steps": 10**6}}, ["params", "n_steps"]),
    ({"method": "integrated_gradients", "params": {"baseline": "blur"}}, None),  # image-only baseline
    ({"method": "kernel_shap", "params": {"n_samples": 1}}, ["params", "n_samples"]),
    ({"method": "gradient_shap", "params": {"stdevs": -0.5}}, ["params", "stdevs"]),
    ({"method": "saliency", "params": {"n_steps": 8}}, ["params", "n_steps"]),
    ({"method": "smoothgrad", "params": {"seed": -3}}, ["params", "seed"]),
    ({"outputs": ["overlay"]}, ["outputs"]),
])
def test_bad_method_or_params_are_422(client: httpx.Client, body: dict[str, Any], loc: list[Any] | None) -> None:
    problem = _problem(_post(client, "breast-cancer", {"instances": [_tabular_instance("breast-cancer")], **body}))
    if loc is not None:
        assert loc in _locs(problem), problem


@pytest.mark.parametrize(("params", "loc"), [
    ({"window": 0}, ["params", "window"]),
    ({"stride": 10**5}, ["params", "stride"]),
    ({"layer": "no.such.layer"}, None),
])
def test_bad_image_params_are_422(client: httpx.Client, params: dict[str, Any], loc: list[Any] | None) -> None:
    method = "gradcam" if "layer" in params else "occlusion"
    problem = _problem(_post(client, "shapes", {"instances": [_image_instance()], "method": method,
                                                "params": params}))
    if loc is not None:
        assert loc in _locs(problem), problem
    assert "params" in problem["detail"]


def test_unknown_output_or_colormap_is_422(client: httpx.Client) -> None:
    _problem(_post(client, "shapes", {"instances": [_image_instance()], "outputs": ["chart"]}))
    _problem(_post(client, "shapes", {"instances": [_image_instance()], "render": {"colormap": "nope"}}))
    _problem(_post(client, "shapes", {"instances": [_image_instance()], "render": {"alpha": 2}}))


# --------------------------------------------------------------------------- targets


def test_target_by_index_by_label_and_per_instance(client: httpx.Client) -> None:
    rows = [_tabular_instance("breast-cancer", 0), _tabular_instance("breast-cancer", 1)]
    by_index = _post(client, "breast-cancer", {"instances": rows, "target": 0}).json()
    assert [e["target"]["index"] for e in by_index["explanations"]] == [0, 0]
    assert [e["target"]["label"] for e in by_index["explanations"]] == ["malignant", "malignant"]
    by_label = _post(client, "breast-cancer", {"instances": rows, "target": "malignant"}).json()
    assert_close(by_label["explanations"], by_index["explanations"])
    listed = _post(client, "breast-cancer", {"instances": rows, "target": ["benign", 0]}).json()
    assert [e["target"]["index"] for e in listed["explanations"]] == [1, 0]
    predicted = _post(client, "breast-cancer", {"instances": rows, "target": [None, None]}).json()
    for e in predicted["explanations"]:
        assert e["target"]["index"] == e["prediction"]["index"]
        assert e["target"]["score"] == e["prediction"]["score"]
    # The per-instance answer for a row equals that row asked alone with the same target.
    # (to float tolerance: the batch of two sums its floats in another order than the batch of one)
    alone = _post(client, "breast-cancer", {"instances": rows[1:], "target": 0}).json()
    assert_close(alone["explanations"][0], listed["explanations"][1])


def test_single_output_models_explain_both_classes(client: httpx.Client) -> None:
    row = _tabular_instance("purchase")
    answers = {t: _post(client, "purchase", {"instances": [row], "target": t}).json()["explanations"][0]
               for t in (0, 1)}
    p = answers[1]["target"]["score"]
    assert answers[0]["target"] == {"index": 0, "label": "no_purchase", "score": pytest.approx(1 - p, abs=2e-6)}
    assert answers[1]["target"]["label"] == "purchase"
    # d(1 - p) = -dp: the attributions of the two targets are opposite.
    a0 = np.array([a["attribution"] for a in answers[0]["attributions"]])
    a1 = np.array([a["attribution"] for a in answers[1]["attributions"]])
    np.testing.assert_allclose(a0, -a1, rtol=1e-4, atol=1e-6 * np.abs(a1).max())
    regression = _post(client, "diabetes", {"instances": [_tabular_instance("diabetes")]}).json()
    assert regression["explanations"][0]["target"]["index"] == 0
    assert "value" in regression["explanations"][0]["prediction"]


@pytest.mark.parametrize(("target", "loc"), [
    ([0], ["target"]),             # one target for two instances
    ([0, 1, 1], ["target"]),
    (2, ["target"]),               # two classes: 0..1
    (-1, ["target"]),
    ([0, 5], ["target", 1]),
    ("cat", ["target"]),
    ([0, "cat"], ["target", 1]),
])
def test_bad_targets_are_422(client: httpx.Client, target: Any, loc: list[Any]) -> None:
    rows = [_tabular_instance("breast-cancer", 0), _tabular_instance("breast-cancer", 1)]
    problem = _problem(_post(client, "breast-cancer", {"instances": rows, "target": target}))
    assert loc in _locs(problem), problem


def test_regression_and_image_targets_are_checked(client: httpx.Client) -> None:
    _problem(_post(client, "diabetes", {"instances": [_tabular_instance("diabetes")], "target": 1}))
    _problem(_post(client, "shapes", {"instances": [_image_instance()], "target": 4}))
    ok = _post(client, "shapes", {"instances": [_image_instance()], "target": "star"})
    assert ok.status_code == 200 and ok.json()["explanations"][0]["target"]["index"] == 3


# --------------------------------------------------------------------------- image outputs


def test_overlay_has_the_submitted_size_and_heatmap_is_rgba(client: httpx.Client) -> None:
    instance = {"b64": base64.b64encode((EXAMPLES / "triangle.jpg").read_bytes()).decode()}
    r = _post(client, "shapes", {"instances": [instance], "outputs": ["overlay", "heatmap", "attributions"]})
    assert r.status_code == 200, r.text
    [item] = r.json()["explanations"]
    overlay = _decode_uri(item["overlay"])
    assert overlay.size == (160, 120)
    assert overlay.mode == "RGB"
    heatmap = _decode_uri(item["heatmap"])
    assert heatmap.size == (160, 120)
    assert heatmap.mode == "RGBA"
    alpha = np.asarray(heatmap)[..., 3]
    assert alpha.min() < alpha.max()  # transparent where attribution is ~0, opaque at the peak
    attributions = np.asarray(item["attributions"])
    assert attributions.shape == (128, 128)  # the model's input size
    assert np.isfinite(attributions).all()


def test_default_image_output_is_the_overlay_only(client: httpx.Client) -> None:
    r = _post(client, "shapes", {"instances": [_image_instance(90, 70)]})
    [item] = r.json()["explanations"]
    assert _decode_uri(item["overlay"]).size == (90, 70)
    assert item.get("heatmap") is None and item.get("attributions") is None
    assert item["convergence_delta"] is None  # gradcam is not IG-family


def test_overlay_is_scaled_down_to_max_size_keeping_aspect(client: httpx.Client) -> None:
    instance = _image_instance(333, 517, seed=8)
    r = _post(client, "shapes", {"instances": [instance], "outputs": ["overlay", "heatmap"],
                                 "render": {"max_size": 100}})
    assert r.status_code == 200, r.text
    [item] = r.json()["explanations"]
    assert _decode_uri(item["overlay"]).size == (64, 100)
    assert _decode_uri(item["heatmap"]).size == (64, 100)


def test_data_uri_instances_and_render_options(client: httpx.Client) -> None:
    uri = "data:image/png;base64," + png_b64(draw_sample(np.random.default_rng(5)).image)
    for sign, colormap in (("all", None), ("positive", "viridis"), ("negative", "inferno"), ("absolute", "jet")):
        r = _post(client, "shapes", {"instances": [uri], "method": "saliency", "outputs": ["overlay", "heatmap"],
                                     "render": {"sign": sign, "colormap": colormap, "alpha": 0.7}})
        assert r.status_code == 200, (sign, r.text)
        [item] = r.json()["explanations"]
        assert _decode_uri(item["overlay"]).size == (128, 128)
        assert _decode_uri(item["heatmap"]).mode == "RGBA"


def test_accept_png_returns_the_overlay_bytes(client: httpx.Client) -> None:
    body = {"instances": [_image_instance(200, 150, seed=6)]}
    r = _post(client, "shapes", body, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG" and img.size == (200, 150)
    json_answer = _post(client, "shapes", body).json()
    assert base64.b64decode(json_answer["explanations"][0]["overlay"].split(",", 1)[1]) == r.content
    two = _post(client, "shapes", {"instances": [_image_instance(), _image_instance(seed=2)]},
                headers={"Accept": "image/png"})
    _problem(two, 406)
    tabular = _post(client, "purchase", {"instances": [_tabular_instance("purchase")]},
                    headers={"Accept": "image/png"})
    _problem(tabular, 406)


def test_multipart_explain(client: httpx.Client) -> None:
    png = _shape_png(150, 110, seed=9, label=1)
    r = client.post("/v1/models/shapes/explain",
                    files=[("file", ("square.png", png, "image/png"))],
                    data={"method": "gradcam", "target": "square", "params": json.dumps({"layer": "features.8"}),
                          "outputs": "overlay,heatmap"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "gradcam" and body["params"] == {"layer": "features.8"}
    [item] = body["explanations"]
    assert item["target"]["index"] == 1
    assert _decode_uri(item["overlay"]).size == (150, 110)
    assert _decode_uri(item["heatmap"]).mode == "RGBA"
    # Several file parts, a target list and the PNG answer for one file.
    two = client.post("/v1/models/shapes:explain",
                      files=[("file", ("a.png", png, "image/png")),
                             ("file", ("b.webp", (EXAMPLES / "star.webp").read_bytes(), "image/webp"))],
                      data={"method": "saliency", "target": json.dumps([0, "star"]), "outputs": "attributions"})
    assert two.status_code == 200, two.text
    assert [e["target"]["index"] for e in two.json()["explanations"]] == [0, 3]
    one_png = client.post("/v1/models/shapes/explain", files=[("file", ("s.png", png, "image/png"))],
                          data={"method": "gradcam"}, headers={"Accept": "image/png"})
    assert one_png.status_code == 200 and one_png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(one_png.content)).size == (150, 110)
    bad = client.post("/v1/models/shapes/explain", files=[("file", ("s.png", png, "image/png"))],
                      data={"method": "occlusion", "params": json.dumps({"window": -1})})
    assert ["params", "window"] in _locs(_problem(bad))


# --------------------------------------------------------------------------- tabular outputs


def test_tabular_attributions_follow_declared_feature_order(client: httpx.Client) -> None:
    features = [f["name"] for f in client.get("/v1/models/breast-cancer").json()["features"]]
    row = _tabular_instance("breast-cancer")
    shuffled = dict(reversed(list(row.items())))  # object keys in another order than declared
    as_array = [row[f] for f in features]
    answers = [_post(client, "breast-cancer", {"instances": [inst]}).json()["explanations"][0]
               for inst in (shuffled, as_array)]
    for item in answers:
        assert [a["feature"] for a in item["attributions"]] == features
        assert [a["value"] for a in item["attributions"]] == [row[f] for f in features]
    assert answers[0] == answers[1]


def test_chart_and_summary(client: httpx.Client) -> None:
    row = _tabular_instance("purchase")
    r = _post(client, "purchase", {"instances": [row], "outputs": ["chart", "summary"]})
    assert r.status_code == 200, r.text
    [item] = r.json()["explanations"]
    chart = _decode_uri(item["chart"])
    assert chart.width > 200 and chart.height > 100
    summary = item["summary"]
    assert isinstance(summary, str) and "\n" not in summary
    assert summary.startswith(item["prediction"]["label"])
    assert f"{round(item['prediction']['score'] * 100)}%" in summary
    attrs = {a["feature"]: a["attribution"] for a in item["attributions"]}
    up = max(attrs, key=lambda f: attrs[f])
    down = min(attrs, key=lambda f: attrs[f])
    assert attrs[up] > 0 and up in summary
    assert attrs[down] < 0 and down in summary
    plain = _post(client, "purchase", {"instances": [row]}).json()["explanations"][0]
    assert "chart" not in plain or plain["chart"] is None
    assert "summary" not in plain or plain["summary"] is None
    regression = _post(client, "diabetes", {"instances": [_tabular_instance("diabetes")], "outputs": ["summary"]})
    assert regression.status_code == 200 and regression.json()["explanations"][0]["summary"]


def test_integrated_gradients_to_a_tolerance(client: httpx.Client) -> None:
    """Tabular models default to n_steps "auto": each explanation says the steps it used and whether
    |convergence_delta| met the tolerance; a fixed n_steps answer carries neither. Admission counts
    the worst case (every level: 16 + 32 + 64 + 128 steps + 2 forwards per instance), so the most
    instances a request may have (64) fit MAX_REQUEST_ROWS at the defaults, and a larger cap is
    refused with 413 before anything is queued."""
    rows = [_tabular_instance("breast-cancer", i) for i in range(3)]
    answer = _post(client, "breast-cancer", {"instances": rows, "method": "integrated_gradients",
                                             "params": {"tolerance": 0.02}}).json()
    assert answer["params"] == {"n_steps": "auto", "tolerance": 0.02, "max_steps": 128, "baseline": "zeros",
                                "method": "gausslegendre"}
    for item in answer["explanations"]:
        assert item["n_steps"] in (16, 32, 64, 128) and isinstance(item["converged"], bool)
        gap = sum(a["attribution"] for a in item["attributions"]) - item["convergence_delta"]
        if item["converged"]:
            assert abs(item["convergence_delta"]) <= 0.02 * abs(gap) * 1.001 + 1e-5
    fixed = _post(client, "breast-cancer", {"instances": rows[:1], "params": {"n_steps": 8, "tolerance": 0.5}}).json()
    assert fixed["params"] == {"n_steps": 8, "baseline": "zeros", "method": "gausslegendre"}
    assert "n_steps" not in fixed["explanations"][0] and "converged" not in fixed["explanations"][0]
    full = _post(client, "purchase", {"instances": [_tabular_instance("purchase", i) for i in range(64)]})
    assert full.status_code == 200 and len(full.json()["explanations"]) == 64
    capped = _post(client, "purchase", {"instances": [_tabular_instance("purchase", i) for i in range(64)],
                                        "params": {"max_steps": 256}})
    assert capped.status_code == 413 and "MAX_REQUEST_ROWS" in capped.json()["detail"]


def test_sampling_methods_say_how_sure_they_are(client: httpx.Client) -> None:
    """runs > 1: the attributions are the runs' mean and `spread` their standard errors (per feature
    for tabular rows, with the error relative to the answer); one run: no spread. Kernel SHAP's
    default samples grow with the features (50 each, at least 200)."""
    rows = [_tabular_instance("breast-cancer", i) for i in range(2)]
    spread = _post(client, "breast-cancer", {"instances": rows, "method": "kernel_shap",
                                             "params": {"n_samples": 100, "runs": 3}}).json()
    assert spread["params"]["runs"] == 3
    for item in spread["explanations"]:
        errors = item["spread"]["standard_errors"]
        assert item["spread"]["runs"] == 3 and len(errors) == 30 and all(e >= 0 for e in errors) and any(errors)
        norm = sum(a["attribution"] ** 2 for a in item["attributions"]) ** 0.5
        assert item["spread"]["relative_error"] == pytest.approx(sum(e * e for e in errors) ** 0.5 / norm, rel=1e-3)
    single = _post(client, "breast-cancer", {"instances": rows, "method": "kernel_shap"}).json()
    assert single["params"]["n_samples"] == 1500 and "spread" not in single["explanations"][0]
    assert _info(client, "purchase")["kernel_shap"]["n_samples"] == 300
    image = _post(client, "shapes", {"instances": [_image_instance()], "method": "smoothgrad",
                                     "params": {"n_samples": 2, "runs": 2}}).json()["explanations"][0]
    assert image["spread"]["runs"] == 2 and image["spread"]["relative_error"] > 0
    assert "standard_errors" not in image["spread"]
    bad = _post(client, "purchase", {"instances": [_tabular_instance("purchase")], "method": "lime",
                                     "params": {"segments": "grid"}})
    assert bad.status_code == 422 and "image models" in bad.json()["detail"]


def test_faithfulness_on_request(client: httpx.Client) -> None:
    """outputs "faithfulness": deletion and insertion AUC per explanation (target scores are
    probabilities, so both lie in [0, 1]); the extra forwards count in the request's cost."""
    row = _tabular_instance("purchase")
    tabular = _post(client, "purchase", {"instances": [row], "method": "saliency", "outputs": ["faithfulness"]}).json()
    item = tabular["explanations"][0]
    assert set(item["faithfulness"]) == {"deletion_auc", "insertion_auc"}
    assert all(0.0 <= v <= 1.0 for v in item["faithfulness"].values()) and "chart" not in item
    plain = _post(client, "purchase", {"instances": [row], "method": "saliency"}).json()["explanations"][0]
    assert "faithfulness" not in plain and plain["attributions"] == item["attributions"]
    image = _post(client, "shapes", {"instances": [_image_instance()], "method": "gradcam",
                                     "outputs": ["overlay", "faithfulness"]}).json()["explanations"][0]
    assert image["overlay"].startswith("data:image/png") and 0.0 <= image["faithfulness"]["insertion_auc"] <= 1.0
    # 64 images x (gradcam's 1 pass + 66 curve forwards) = 4288 rows; with occlusion's 226 passes over 16384
    many = [_image_instance(seed=i) for i in range(64)]
    costly = _post(client, "shapes", {"instances": many, "method": "occlusion", "outputs": ["faithfulness"]})
    assert costly.status_code == 413 and "MAX_REQUEST_ROWS" in costly.json()["detail"]


def test_maps_show_their_evidence(client: httpx.Client) -> None:
    """Pixel-level maps are blurred before colouring by default (render.smooth: 2.5% of the input's
    side), so more of the overlay shows them than unblurred; GradCAM is coloured from its floor (the
    least attributed pixels are transparent); the raw attributions are the same either way."""
    image = {"b64": base64.b64encode((EXAMPLES / "triangle.jpg").read_bytes()).decode()}

    def visible(method: str, render: dict[str, Any]) -> tuple[float, list[list[float]]]:
        body = {"instances": [image], "method": method, "params": LIGHT.get(method, {}),
                "outputs": ["heatmap", "attributions"], "render": render}
        item = _post(client, "shapes", body).json()["explanations"][0]
        alpha = np.asarray(_decode_uri(item["heatmap"]).getchannel("A"))
        return float((alpha >= 51).mean()), item["attributions"]

    sharp, raw = visible("integrated_gradients", {"smooth": 0})
    smooth, same = visible("integrated_gradients", {})
    assert same == raw and smooth > 3 * sharp, (sharp, smooth)
    assert visible("integrated_gradients", {"smooth": 8})[0] > smooth
    cam = _post(client, "shapes", {"instances": [image], "method": "gradcam", "outputs": ["heatmap"]}).json()
    assert np.asarray(_decode_uri(cam["explanations"][0]["heatmap"]).getchannel("A")).min() == 0
    bad = _post(client, "shapes", {"instances": [image], "render": {"smooth": 100}})
    assert bad.status_code == 422 and ["render", "smooth"] in _locs(bad.json())


def test_convergence_delta_and_timings(client: httpx.Client) -> None:
    row = _tabular_instance("breast-cancer")
    ig = _post(client, "breast-cancer", {"instances": [row], "method": "integrated_gradients"}).json()
    item = ig["explanations"][0]
    assert isinstance(item["convergence_delta"], float)
    gap = sum(a["attribution"] for a in item["attributions"]) - item["convergence_delta"]
    assert abs(item["convergence_delta"]) <= 0.05 * abs(gap)
    shap = _post(client, "breast-cancer", {"instances": [row], "method": "gradient_shap"}).json()
    assert isinstance(shap["explanations"][0]["convergence_delta"], float)
    for method in ("saliency", "feature_ablation", "kernel_shap"):
        other = _post(client, "breast-cancer", {"instances": [row], "method": method}).json()
        assert other["explanations"][0]["convergence_delta"] is None
    timings = ig["timings_ms"]
    assert set(timings) == {"queue", "compute", "render", "total"}
    assert all(isinstance(v, float | int) and v >= 0 for v in timings.values())
    assert timings["total"] >= timings["compute"]


def test_stochastic_answers_are_reproducible_and_echo_the_seed(client: httpx.Client) -> None:
    rows = [_tabular_instance("purchase", 0), _tabular_instance("purchase", 1)]
    for method in ("gradient_shap", "smoothgrad", "kernel_shap"):
        first = _post(client, "purchase", {"instances": rows, "method": method}).json()
        second = _post(client, "purchase", {"instances": rows, "method": method}).json()
        assert first["params"]["seed"] == 0
        assert_close(first["explanations"], second["explanations"])
        reseeded = _post(client, "purchase", {"instances": rows, "method": method, "params": {"seed": 99}}).json()
        assert reseeded["params"]["seed"] == 99
        with pytest.raises(AssertionError):  # another seed draws other noise: not within tolerance
            assert_close(reseeded["explanations"], first["explanations"])


# --------------------------------------------------------------------------- concurrency


@pytest.fixture(scope="module")
def batching_server() -> Iterator[LiveServer]:
    """Its own server: a 50 ms batching window makes concurrent requests share a batch."""
    with LiveServer(make_settings(max_batch_delay_ms=50)) as server:
        yield server




def test_concurrent_requests_are_batched_and_answer_as_alone(batching_server: LiveServer) -> None:
    url = batching_server.url
    rows = json.loads((ROOT / "models" / "breast_cancer" / "example.json").read_text())["instances"]
    rng = np.random.default_rng(12)
    bodies = []
    for i in range(12):
        row = {k: float(v) * float(rng.uniform(0.9, 1.1)) for k, v in rows[i % 2].items()}
        target: Any = [None, 0, 1, "benign"][i % 4]
        bodies.append({"instances": [row] * (1 + i % 3), "method": "integrated_gradients", "target": target})

    async def together() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            responses = await asyncio.gather(*(client.post("/v1/models/breast-cancer/explain", json=b)
                                               for b in bodies))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        return [r.json() for r in responses]

    total_before, single_before = batch_counts(httpx.get(url + "/metrics", timeout=30).text, "breast-cancer")
    concurrent = asyncio.run(together())
    total_after, single_after = batch_counts(httpx.get(url + "/metrics", timeout=30).text, "breast-cancer")
    batches = total_after - total_before
    assert single_after - single_before < batches, "no batch held more than one request"
    assert batches < len(bodies)
    with httpx.Client(base_url=url, timeout=120) as client:
        for body, shared in zip(bodies, concurrent, strict=True):
            alone = client.post("/v1/models/breast-cancer/explain", json=body).json()
            assert alone["params"] == shared["params"]
            for a, b in zip(alone["explanations"], shared["explanations"], strict=True):
                assert a["prediction"]["index"] == b["prediction"]["index"]
                assert a["target"]["index"] == b["target"]["index"]
                assert b["target"]["score"] == pytest.approx(a["target"]["score"], rel=1e-5)
                got = np.array([x["attribution"] for x in b["attributions"]])
                want = np.array([x["attribution"] for x in a["attributions"]])
                # Answers carry 6 significant digits: the floor allows one unit in the last digit.
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
                assert b["convergence_delta"] == pytest.approx(a["convergence_delta"], rel=1e-3,
                                                               abs=1e-6 * np.abs(want).sum())


# --------------------------------------------------------------------------- CPU chunk cap


@pytest.fixture(scope="module")
def small_chunks() -> Iterator[LiveServer]:
    with LiveServer(make_settings(cpu_chunk_mb=1)) as server:
        yield server


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_small_cpu_chunks_give_the_same_attributions(client: httpx.Client, live: LiveServer,
                                                     small_chunks: LiveServer, method: str) -> None:
    # shapes' largest activation is 256 KiB per image: under 1 MiB that is 3 rows per chunk, raised
    # to the floor of 8 (within 4 MiB); the default 8 MiB allows 31. 17 images (IG: x 4 steps) take
    # several chunks
    assert live.service.registry.models["shapes"].chunk_rows == 31
    assert small_chunks.service.registry.models["shapes"].chunk_rows == 8
    # breast-cancer's widest layer is 64 floats: 4,095 rows stay under 1 MiB, 4,096 would not
    assert small_chunks.service.registry.models["breast-cancer"].chunk_rows == 4095
    assert live.service.registry.models["breast-cancer"].chunk_rows == 4096
    body = {"instances": [_image_instance(seed=s) for s in range(17)], "method": method,
            "params": LIGHT.get(method, {}), "outputs": ["attributions"]}
    whole = _post(client, "shapes", body)
    with httpx.Client(base_url=small_chunks.url, timeout=120) as other:
        chunked = _post(other, "shapes", body)
    assert whole.status_code == chunked.status_code == 200, (whole.text, chunked.text)
    for a, b in zip(whole.json()["explanations"], chunked.json()["explanations"], strict=True):
        assert a["target"]["index"] == b["target"]["index"]
        assert a["target"]["score"] == pytest.approx(b["target"]["score"], rel=1e-4)
        if method == "integrated_gradients":
            assert a["convergence_delta"] == pytest.approx(b["convergence_delta"], rel=1e-3, abs=1e-5)
        np.testing.assert_allclose(np.asarray(b["attributions"]), np.asarray(a["attributions"]),
                                   rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- transparency


def _cut_out(hidden: tuple[int, int, int]) -> str:
    """A shapes star, transparent outside its box, with `hidden` as the colour under that."""
    sample = draw_sample(np.random.default_rng(13), 128, 128, 3)
    pixels = np.asarray(sample.image.convert("RGBA")).copy()
    left, top, right, bottom = (int(round(v)) for v in sample.box)
    outside = np.ones(pixels.shape[:2], dtype=bool)
    outside[top:bottom, left:right] = False
    pixels[outside] = (*hidden, 0)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_transparent_pixels_are_seen_as_the_background_and_the_overlay_keeps_them(client: httpx.Client) -> None:
    answers = [_post(client, "shapes", {"instances": [{"b64": _cut_out(hidden)}], "method": "saliency",
                                        "outputs": ["overlay", "attributions"]})
               for hidden in ((0, 0, 0), (255, 0, 255))]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    black, magenta = (a.json()["explanations"][0] for a in answers)
    # the colour under transparent pixels does not change what the model sees
    assert_close(black["prediction"], magenta["prediction"])
    assert_close(black["attributions"], magenta["attributions"])
    overlay = _decode_uri(black["overlay"])
    assert overlay.mode == "RGBA"
    alpha = np.asarray(overlay)[..., 3]
    assert alpha.max() == 255 and alpha.min() < 255  # the shape opaque, the background see-through


def test_lime_far_outside_the_data_still_answers(client: httpx.Client) -> None:
    """A row the fuzzer found: the Lasso stops at its iteration cap; the coefficients are the answer."""
    row = [785909.5458965916, -191709.73802676913, 999999.9999999999, -563874.9891204839, -532534.6063965831,
           -6.04604926268376e-103, -2.225073858507e-311, 5e-324, 250859.3311279344, -1.7046950902908024e-235]
    response = _post(client, "diabetes", {"instances": [row], "method": "lime"})
    assert response.status_code == 200, response.text
    attributions = response.json()["explanations"][0]["attributions"]
    assert [a["feature"] for a in attributions] == DIABETES_FEATURES
    assert all(np.isfinite(a["attribution"]) for a in attributions)
