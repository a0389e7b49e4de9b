"""Predict over real HTTP on all three paths, checked against the models run directly.

The reference: each catalog model loaded here with `load_model` on its catalog spec, inputs
preprocessed with `app.inference.inputs`, and softmax / sigmoid computed in the test.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.inference.catalog import ModelSpec, load_catalog
from app.inference.inputs import decode_image, decode_image_bytes, tabular_rows
from app.inference.loading import LoadedModel, load_model
from models.shapes import draw_sample
from tests.conftest import ROOT, LiveServer, image_bytes, make_settings
from tests.fixtures.probes import batch_counts

PATHS = ["rest", "kserve", "body"]
BIG = 10**9


class Reference:
    """The catalog's models, loaded by the test itself, and what the API should answer for them."""

    def __init__(self, catalog: Path):
        self.specs: dict[str, ModelSpec] = {s.name: s for s in load_catalog(catalog)}
        self._models: dict[str, LoadedModel] = {}

    def model(self, name: str) -> LoadedModel:
        if name not in self._models:
            self._models[name] = load_model(self.specs[name], torch.device("cpu"))
        return self._models[name]

    def scores(self, name: str, x: np.ndarray) -> np.ndarray:
        """Client-visible scores: softmax of logits, sigmoid of one logit, probabilities as is."""
        spec = self.specs[name]
        module = self.model(name).module
        with torch.inference_mode():
            out = module(torch.from_numpy(x.astype(np.float32))).double().numpy()
        if spec.task == "regression":
            return out
        if out.shape[1] == 1:
            p = out[:, 0] if spec.output == "probabilities" else 1.0 / (1.0 + np.exp(-out[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        z = np.exp(out - out.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def tabular(self, name: str, instances: list[Any]) -> np.ndarray:
        return self.scores(name, tabular_rows(instances, self.specs[name].features or []))

    def images(self, name: str, files: list[bytes]) -> np.ndarray:
        spec = self.specs[name].image_spec
        x = np.stack([decode_image_bytes(f, i, spec, BIG).pixels for i, f in enumerate(files)])
        return self.scores(name, x)


@pytest.fixture(scope="module")
def ref(live: LiveServer) -> Reference:
    return Reference(live.app.state.settings.models)


def post(client: httpx.Client, model: str, body: dict[str, Any] | None = None, how: str = "rest",
         **kwargs: Any) -> httpx.Response:
    """POST a predict request on one of the three paths of API.md."""
    if how == "body":
        if body is not None:
            body = {**body, "model": model}
        if "data" in kwargs:
            kwargs["data"] = {**kwargs["data"], "model": model}
        url = "/predict"
    else:
        url = f"/v1/models/{model}:predict" if how == "kserve" else f"/v1/models/{model}/predict"
    if body is not None:
        kwargs["json"] = body
    return client.post(url, **kwargs)


def ok(r: httpx.Response, model: str, n: int) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")
    body = r.json()
    assert set(body) == {"model", "predictions"}
    assert body["model"] == model
    assert len(body["predictions"]) == n
    return list(body["predictions"])


def check_classification(pred: dict[str, Any], expected: np.ndarray, labels: list[str] | None,
                         top_k: int | None = None) -> None:
    assert set(pred) == {"index", "label", "score", "top_k"}
    best = int(np.argmax(expected))
    assert pred["index"] == best
    assert pred["label"] == (labels[best] if labels else None)
    assert pred["score"] == pytest.approx(expected[best], rel=1e-5, abs=1e-6)
    k = min(top_k or 5, len(expected))
    assert len(pred["top_k"]) == k
    assert pred["top_k"][0] == {"index": pred["index"], "label": pred["label"], "score": pred["score"]}
    order = np.argsort(-expected, kind="stable")[:k]
    assert [c["index"] for c in pred["top_k"]] == [int(i) for i in order]
    for c in pred["top_k"]:
        assert c["label"] == (labels[c["index"]] if labels else None)
        assert c["score"] == pytest.approx(expected[c["index"]], rel=1e-5, abs=1e-6)
    scores = [c["score"] for c in pred["top_k"]]
    assert scores == sorted(scores, reverse=True)


def example_rows(name: str) -> list[dict[str, float]]:
    folder = name.replace("-", "_")
    return list(json.loads((ROOT / "models" / folder / "example.json").read_text())["instances"])


def random_rows(spec: ModelSpec, n: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    assert spec.tabular is not None and spec.tabular.mean and spec.tabular.std
    mean, std = np.array(spec.tabular.mean), np.array(spec.tabular.std)
    rows = mean + rng.normal(size=(n, len(mean))) * std
    return [[float(v) for v in row] for row in rows]


def shape_image(seed: int, width: int = 128, height: int = 128, label: int | None = None) -> Image.Image:
    return draw_sample(np.random.default_rng(seed), width, height, label).image


def encode(img: Image.Image, fmt: str) -> bytes:
    return image_bytes(img, fmt)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- tabular


@pytest.mark.parametrize("how", PATHS)
def test_tabular_rows_as_objects(client: httpx.Client, ref: Reference, how: str) -> None:
    rows = example_rows("breast-cancer")
    preds = ok(post(client, "breast-cancer", {"instances": rows}, how), "breast-cancer", len(rows))
    expected = ref.tabular("breast-cancer", rows)
    for pred, exp in zip(preds, expected, strict=True):
        check_classification(pred, exp, ["malignant", "benign"])


@pytest.mark.parametrize("how", PATHS)
def test_tabular_rows_as_arrays(client: httpx.Client, ref: Reference, how: str) -> None:
    rows = random_rows(ref.specs["breast-cancer"], 7, seed=1)
    preds = ok(post(client, "breast-cancer", {"instances": rows}, how), "breast-cancer", 7)
    expected = ref.tabular("breast-cancer", rows)
    for pred, exp in zip(preds, expected, strict=True):
        check_classification(pred, exp, ["malignant", "benign"])


def test_objects_and_arrays_give_the_same_answer(client: httpx.Client, ref: Reference) -> None:
    features = ref.specs["breast-cancer"].features or []
    as_dicts = example_rows("breast-cancer")
    as_arrays = [[row[f] for f in features] for row in as_dicts]
    shuffled = [dict(reversed(list(row.items()))) for row in as_dicts]  # key order does not matter
    a = ok(post(client, "breast-cancer", {"instances": as_dicts}), "breast-cancer", len(as_dicts))
    b = ok(post(client, "breast-cancer", {"instances": as_arrays}), "breast-cancer", len(as_dicts))
    c = ok(post(client, "breast-cancer", {"instances": shuffled}), "breast-cancer", len(as_dicts))
    assert a == b == c


def test_predictions_keep_request_order(client: httpx.Client, ref: Reference) -> None:
    rows = random_rows(ref.specs["breast-cancer"], 20, seed=2)
    preds = ok(post(client, "breast-cancer", {"instances": rows}), "breast-cancer", 20)
    reverse = ok(post(client, "breast-cancer", {"instances": rows[::-1]}), "breast-cancer", 20)
    assert preds == reverse[::-1]


@pytest.mark.parametrize("how", PATHS)
def test_regression_answers_a_value(client: httpx.Client, ref: Reference, how: str) -> None:
    rows = random_rows(ref.specs["diabetes"], 5, seed=3)
    preds = ok(post(client, "diabetes", {"instances": rows}, how), "diabetes", 5)
    expected = ref.tabular("diabetes", rows)
    for pred, exp in zip(preds, expected, strict=True):
        assert set(pred) == {"value"}
        assert pred["value"] == pytest.approx(exp[0], rel=1e-5, abs=1e-4)
    assert len({p["value"] for p in preds}) > 1


def test_regression_ignores_top_k(client: httpx.Client, ref: Reference) -> None:
    rows = random_rows(ref.specs["diabetes"], 2, seed=4)
    preds = ok(post(client, "diabetes", {"instances": rows, "top_k": 3}), "diabetes", 2)
    assert all(set(p) == {"value"} for p in preds)


def test_probability_output_model_gets_no_second_sigmoid(client: httpx.Client, ref: Reference) -> None:
    spec = ref.specs["purchase"]
    assert spec.output == "probabilities" and ref.model("purchase").out_width == 1
    rows = example_rows("purchase") + [dict(zip(spec.features or [], r, strict=True))
                                       for r in random_rows(spec, 6, seed=5)]
    preds = ok(post(client, "purchase", {"instances": rows}), "purchase", len(rows))
    x = tabular_rows(rows, spec.features or []).astype(np.float32)
    module = ref.model("purchase").module
    with torch.inference_mode():
        module_out = module(torch.from_numpy(x)).double().numpy()[:, 0]
    assert ((module_out >= 0) & (module_out <= 1)).all(), "the purchase module ends in a sigmoid"
    for pred, p in zip(preds, module_out, strict=True):
        by_label = {c["label"]: c["score"] for c in pred["top_k"]}
        assert by_label["purchase"] == pytest.approx(p, rel=1e-5, abs=1e-6)
        assert by_label["no_purchase"] == pytest.approx(1 - p, rel=1e-5, abs=1e-6)
        assert pred["label"] == ("purchase" if p > 0.5 else "no_purchase")
        assert pred["index"] == (1 if p > 0.5 else 0)
    # a second sigmoid would squash every score into (0.5, 0.73]: the served ones are not
    confident = [(pred, p) for pred, p in zip(preds, module_out, strict=True) if abs(p - 0.5) > 0.25]
    assert confident, "some rows should be far from the decision boundary"
    for pred, p in confident:
        assert by_label_score(pred, "purchase") != pytest.approx(1 / (1 + np.exp(-p)), abs=1e-2)


def by_label_score(pred: dict[str, Any], label: str) -> float:
    return float(next(c["score"] for c in pred["top_k"] if c["label"] == label))


@pytest.mark.parametrize("how", PATHS)
def test_purchase_on_every_path(client: httpx.Client, ref: Reference, how: str) -> None:
    rows = example_rows("purchase")
    preds = ok(post(client, "purchase", {"instances": rows}, how), "purchase", len(rows))
    expected = ref.tabular("purchase", rows)
    for pred, exp in zip(preds, expected, strict=True):
        check_classification(pred, exp, ["no_purchase", "purchase"])


@pytest.mark.parametrize(("top_k", "expected"), [(None, 2), (1, 1), (2, 2), (50, 2)])
def test_top_k_tabular(client: httpx.Client, top_k: int | None, expected: int) -> None:
    body: dict[str, Any] = {"instances": example_rows("breast-cancer")[:1]}
    if top_k is not None:
        body["top_k"] = top_k
    (pred,) = ok(post(client, "breast-cancer", body), "breast-cancer", 1)
    assert len(pred["top_k"]) == expected


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("how", PATHS)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_images_as_b64(client: httpx.Client, ref: Reference, how: str, fmt: str) -> None:
    files = [encode(shape_image(seed, label=seed % 4), fmt) for seed in range(4)]
    body = {"instances": [{"b64": b64(f)} for f in files]}
    preds = ok(post(client, "shapes", body, how), "shapes", 4)
    expected = ref.images("shapes", files)
    labels = ref.specs["shapes"].label_list
    for pred, exp in zip(preds, expected, strict=True):
        check_classification(pred, exp, labels)


@pytest.mark.parametrize("how", PATHS)
def test_images_as_data_uris(client: httpx.Client, ref: Reference, how: str) -> None:
    png = encode(shape_image(10), "PNG")
    jpeg = encode(shape_image(11, 200, 120), "JPEG")
    webp = encode(shape_image(12, 96, 160), "WEBP")
    uris = [f"data:image/png;base64,{b64(png)}", f"data:image/jpeg;base64,{b64(jpeg)}",
            f"data:image/webp;base64,{b64(webp)}"]
    preds = ok(post(client, "shapes", {"instances": uris, "top_k": 2}, how), "shapes", 3)
    spec = ref.specs["shapes"]
    x = np.stack([decode_image(u, i, spec.image_spec, BIG).pixels for i, u in enumerate(uris)])
    expected = ref.scores("shapes", x)
    for pred, exp in zip(preds, expected, strict=True):
        check_classification(pred, exp, spec.label_list, top_k=2)


def test_b64_and_data_uri_of_the_same_file_agree(client: httpx.Client) -> None:
    png = encode(shape_image(20), "PNG")
    body = {"instances": [{"b64": b64(png)}, f"data:image/png;base64,{b64(png)}"]}
    a, b = ok(post(client, "shapes", body), "shapes", 2)
    assert a == b


@pytest.mark.parametrize("how", PATHS)
def test_multipart_one_file(client: httpx.Client, ref: Reference, how: str) -> None:
    png = encode(shape_image(30, label=2), "PNG")
    r = post(client, "shapes", None, how, files=[("file", ("shape.png", png, "image/png"))],
             data={"top_k": "3"})
    (pred,) = ok(r, "shapes", 1)
    check_classification(pred, ref.images("shapes", [png])[0], ref.specs["shapes"].label_list, top_k=3)


@pytest.mark.parametrize("how", PATHS)
def test_multipart_several_files(client: httpx.Client, ref: Reference, how: str) -> None:
    files = [encode(shape_image(40 + i, label=i), fmt) for i, fmt in enumerate(["PNG", "JPEG", "WEBP", "PNG"])]
    parts = [("file", (f"img{i}", f, "application/octet-stream")) for i, f in enumerate(files)]
    r = post(client, "shapes", None, how, files=parts, data={})
    preds = ok(r, "shapes", len(files))
    expected = ref.images("shapes", files)
    for pred, exp in zip(preds, expected, strict=True):
        check_classification(pred, exp, ref.specs["shapes"].label_list)


def test_multipart_matches_json(client: httpx.Client) -> None:
    files = [encode(shape_image(50 + i), "PNG") for i in range(3)]
    parts = [("file", (f"img{i}.png", f, "image/png")) for i, f in enumerate(files)]
    multipart = ok(post(client, "shapes", None, files=parts, data={}), "shapes", 3)
    as_json = ok(post(client, "shapes", {"instances": [{"b64": b64(f)} for f in files]}), "shapes", 3)
    assert multipart == as_json


@pytest.mark.parametrize(("top_k", "expected"), [(None, 4), (1, 1), (3, 3), (1000, 4)])
def test_top_k_image(client: httpx.Client, top_k: int | None, expected: int) -> None:
    body: dict[str, Any] = {"instances": [{"b64": b64(encode(shape_image(60), "PNG"))}]}
    if top_k is not None:
        body["top_k"] = top_k
    (pred,) = ok(post(client, "shapes", body), "shapes", 1)
    assert len(pred["top_k"]) == expected


def test_grey_alpha_and_palette_images_are_read_as_rgb(client: httpx.Client, ref: Reference) -> None:
    img = shape_image(70)
    variants = [encode(img.convert("L"), "PNG"), encode(img.convert("RGBA"), "PNG"),
                encode(img.convert("P"), "PNG")]
    preds = ok(post(client, "shapes", {"instances": [{"b64": b64(v)} for v in variants]}), "shapes", 3)
    expected = ref.images("shapes", variants)
    for pred, exp in zip(preds, expected, strict=True):
        check_classification(pred, exp, ref.specs["shapes"].label_list)


# --------------------------------------------------------------------------- bad input


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers.get("x-request-id")
    body = r.json()
    assert body["status"] == status and body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    return dict(body)


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    shape_image(80).save(buf, format="GIF")
    return buf.getvalue()


def truncated_png() -> bytes:
    png = encode(shape_image(81), "PNG")
    return png[: len(png) // 2]


def test_malformed_json_is_400(client: httpx.Client) -> None:
    for raw in (b'{"instances": [', b"{'instances': []}", b"not json", b"\xff\xfe{}"):
        r = client.post("/v1/models/breast-cancer/predict", content=raw,
                        headers={"content-type": "application/json"})
        body = problem(r, 400)
        assert "JSON" in body["detail"]


@pytest.mark.parametrize("raw", [b"", b"  ", b"[1, 2]", b'"instances"', b"null"])
def test_a_body_that_is_not_an_object_is_400(client: httpx.Client, raw: bytes) -> None:
    r = client.post("/v1/models/breast-cancer/predict", content=raw,
                    headers={"content-type": "application/json"})
    problem(r, 400)


@pytest.mark.parametrize("encoded", ["!!!not*base64***", "%%%%", "aGVsbG8$$"])
def test_bad_base64_is_400(client: httpx.Client, encoded: str) -> None:
    for instance in ({"b64": encoded}, f"data:image/png;base64,{encoded}"):
        body = problem(post(client, "shapes", {"instances": [instance]}), 400)
        assert "base64" in body["detail"]


def test_truncated_image_is_400(client: httpx.Client) -> None:
    body = problem(post(client, "shapes", {"instances": [{"b64": b64(truncated_png())}]}), 400)
    assert "instance 0" in body["detail"]
    jpeg = encode(shape_image(82), "JPEG")
    problem(post(client, "shapes", {"instances": [{"b64": b64(jpeg[:40])}]}), 400)
    r = post(client, "shapes", None, files=[("file", ("t.png", truncated_png(), "image/png"))], data={})
    problem(r, 400)


def test_gif_is_415(client: httpx.Client) -> None:
    gif = gif_bytes()
    body = problem(post(client, "shapes", {"instances": [{"b64": b64(gif)}]}), 415)
    assert "GIF" in body["detail"]
    problem(post(client, "shapes", {"instances": [f"data:image/gif;base64,{b64(gif)}"]}), 415)
    r = post(client, "shapes", None, files=[("file", ("a.gif", gif, "image/gif"))], data={})
    problem(r, 415)


def test_non_image_bytes_are_415(client: httpx.Client) -> None:
    problem(post(client, "shapes", {"instances": [{"b64": b64(b"%PDF-1.7 not an image")}]}), 415)
    problem(post(client, "shapes", {"instances": [f"data:text/plain;base64,{b64(b'hello')}"]}), 415)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "image/png",
                                          "application/x-www-form-urlencoded"])
def test_unsupported_content_type_is_415(client: httpx.Client, content_type: str) -> None:
    raw = json.dumps({"instances": example_rows("breast-cancer")[:1]}).encode()
    r = client.post("/v1/models/breast-cancer/predict", content=raw, headers={"content-type": content_type})
    problem(r, 415)


def test_missing_feature_is_422_with_loc(client: httpx.Client) -> None:
    row = dict(example_rows("breast-cancer")[0])
    del row["mean radius"]
    body = problem(post(client, "breast-cancer", {"instances": [row]}), 422)
    assert body["errors"] == [{"loc": ["instances", 0, "mean radius"], "msg": "missing"}]
    assert "mean radius" in body["detail"]


def test_every_problem_is_reported_at_once(client: httpx.Client) -> None:
    good = example_rows("breast-cancer")[0]
    second = dict(good)
    del second["worst radius"]
    second["colour"] = 3
    body = problem(post(client, "breast-cancer", {"instances": [good, second]}), 422)
    locs = {tuple(e["loc"]): e["msg"] for e in body["errors"]}
    assert locs == {("instances", 1, "worst radius"): "missing", ("instances", 1, "colour"): "unknown feature"}


@pytest.mark.parametrize(("sent", "detail"), [
    (" age ", "instance 0: unknown feature ' age ' (did you mean 'age'?) (and 1 more)"),
    ("Age", "instance 0: unknown feature 'Age' (did you mean 'age'?) (and 1 more)"),
    ("agee", "instance 0: unknown feature 'agee' (did you mean 'age'?) (and 1 more)"),
    ("birth_year", "instance 0: unknown feature 'birth_year' (and 1 more)"),
])
def test_a_misnamed_feature_names_the_one_probably_meant(client: httpx.Client, sent: str, detail: str) -> None:
    """Names must match exactly (surrounding spaces and case included); the hint says which was meant."""
    row = dict(example_rows("purchase")[0])
    row[sent] = row.pop("age")
    body = problem(post(client, "purchase", {"instances": [row]}), 422)
    assert body["detail"] == detail
    hint = detail.split("feature ", 1)[1].split(" (and")[0].removeprefix(repr(sent))
    assert body["errors"] == [{"loc": ["instances", 0, sent], "msg": f"unknown feature{hint}"},
                              {"loc": ["instances", 0, "age"], "msg": "missing"}]


def test_errors_of_a_large_body_are_counted_not_all_listed(client: httpx.Client) -> None:
    rows = [{"nope": 1}] * 64
    body = problem(post(client, "purchase", {"instances": rows}), 422)
    assert len(body["errors"]) == 20
    assert body["detail"].endswith(f"(and {64 * 7 - 1} more)")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_number_is_422(client: httpx.Client, token: str) -> None:
    features = ["age", "monthly_spend", "category_views", "cart_adds", "follows_brand", "return_rate"]
    row = ", ".join(f'"{f}": {token if f == "cart_adds" else 1}' for f in features)
    raw = f'{{"instances": [{{{row}}}]}}'.encode()
    r = client.post("/v1/models/purchase/predict", content=raw, headers={"content-type": "application/json"})
    body = problem(r, 422)
    assert body["errors"] == [{"loc": ["instances", 0, "cart_adds"], "msg": "not a finite number"}]
    arr = f'{{"instances": [[1, 2, {token}, 4, 0, 0.1]]}}'.encode()
    r = client.post("/v1/models/purchase/predict", content=arr, headers={"content-type": "application/json"})
    assert problem(r, 422)["errors"][0]["loc"] == ["instances", 0, 2]


@pytest.mark.parametrize("instance", [
    [1, 2, 3],                           # wrong length
    [1, 2, 3, 4, 5, "6"],                # not a number
    [1, 2, 3, 4, 5, True],               # booleans are not numbers
    [1, 2, 3, 4, 5, None],
    {"b64": "aGVsbG8="},                 # an image instance for a tabular model
    "data:image/png;base64,aGVsbG8=",
    [1, 2, 3, 4, 5, 1e39],               # out of float32 range
])
def test_bad_tabular_instance_is_422(client: httpx.Client, instance: Any) -> None:
    body = problem(post(client, "purchase", {"instances": [instance]}), 422)
    assert body["errors"] and body["errors"][0]["loc"][:2] == ["instances", 0]


@pytest.mark.parametrize("body", [
    {"instances": []},
    {},
    {"instances": "rows"},
    {"instances": [[1, 2, 3, 4, 5, 6]], "top_k": 0},
    {"instances": [[1, 2, 3, 4, 5, 6]], "top_k": "two"},
    {"instances": [[1, 2, 3, 4, 5, 6]], "unexpected": 1},
])
def test_schema_violations_are_422(client: httpx.Client, body: dict[str, Any]) -> None:
    result = problem(post(client, "purchase", body), 422)
    assert result["errors"]


def test_tabular_row_for_an_image_model_is_422(client: httpx.Client) -> None:
    problem(post(client, "shapes", {"instances": [[0.1, 0.2, 0.3]]}), 422)
    problem(post(client, "shapes", {"instances": ["just a string"]}), 422)


def test_file_parts_for_a_tabular_model_are_422(client: httpx.Client) -> None:
    png = encode(shape_image(90), "PNG")
    problem(post(client, "purchase", None, files=[("file", ("a.png", png, "image/png"))], data={}), 422)


def test_predict_without_model_in_body_is_422(client: httpx.Client) -> None:
    body = problem(client.post("/predict", json={"instances": [[1, 2, 3, 4, 5, 6]]}), 422)
    assert "model" in body["detail"]


@pytest.mark.parametrize("how", PATHS)
def test_too_many_instances_is_413(client: httpx.Client, live: LiveServer, how: str) -> None:
    limit = live.app.state.settings.max_instances
    rows = [[1, 2, 3, 4, 0, 0.1]] * (limit + 1)
    body = problem(post(client, "purchase", {"instances": rows}, how), 413)
    assert str(limit) in body["detail"]
    ok(post(client, "purchase", {"instances": rows[:limit]}, how), "purchase", limit)


def test_too_many_file_parts_is_413(client: httpx.Client, live: LiveServer) -> None:
    limit = live.app.state.settings.max_instances
    png = encode(Image.new("RGB", (16, 16)), "PNG")
    parts = [("file", (f"{i}.png", png, "image/png")) for i in range(limit + 1)]
    problem(post(client, "shapes", None, files=parts, data={}), 413)


def test_image_over_max_pixels_is_413(client: httpx.Client, live: LiveServer) -> None:
    side = int(live.app.state.settings.max_image_pixels ** 0.5) + 8
    huge = encode(Image.new("L", (side, side)), "PNG")
    body = problem(post(client, "shapes", {"instances": [{"b64": b64(huge)}]}), 413)
    assert "MAX_IMAGE_PIXELS" in body["detail"]


@pytest.mark.parametrize("how", PATHS)
def test_unknown_model_is_404(client: httpx.Client, how: str) -> None:
    body = problem(post(client, "no-such-model", {"instances": [[1.0]]}, how), 404)
    assert "no-such-model" in body["detail"]


def test_bad_request_timeout_header_is_400(client: httpx.Client) -> None:
    for value in ("soon", "-1", "0", "nan"):
        r = post(client, "purchase", {"instances": [[1, 2, 3, 4, 0, 0.1]]},
                 headers={"X-Request-Timeout": value})
        problem(r, 400)


def test_bad_input_never_answers_500(client: httpx.Client) -> None:
    weird: list[tuple[str, bytes, str]] = [
        ("/v1/models/shapes/predict", b'{"instances": [{"b64": 5}]}', "application/json"),
        ("/v1/models/shapes/predict", b'{"instances": [{"b64": "x", "extra": 1}]}', "application/json"),
        ("/v1/models/shapes/predict", b'{"instances": [[[[1]]]]}', "application/json"),
        ("/v1/models/shapes/predict", b"[" * 100000, "application/json"),
        ("/v1/models/purchase/predict", b'{"instances": [{"age": {"nested": 1}}]}', "application/json"),
        ("/v1/models/purchase/predict", b'{"instances": [[1e308, 1, 1, 1, 1, 1]]}', "application/json"),
        ("/v1/models/purchase/predict", b'{"instances": null}', "application/json"),
        ("/v1/models/purchase/predict", b"--x\r\n\r\n", "multipart/form-data; boundary=x"),
        ("/v1/models/purchase/predict", b"garbage", "multipart/form-data"),
        ("/predict", b'{"model": 5, "instances": [[1]]}', "application/json"),
        ("/predict", b'{"model": "../../etc", "instances": [[1]]}', "application/json"),
    ]
    for url, raw, content_type in weird:
        r = client.post(url, content=raw, headers={"content-type": content_type})
        assert 400 <= r.status_code < 500, f"{url} {raw[:60]!r}: {r.status_code} {r.text[:200]}"
        assert r.headers["content-type"] == "application/problem+json"


# --------------------------------------------------------------------------- batching


def batch_histogram(client: httpx.Client, model: str) -> tuple[float, float]:
    """(batches computed, batches of exactly one request) for `model`, from /metrics."""
    return batch_counts(client.get("/metrics").text, model)


@pytest.fixture()
def held_worker(live: LiveServer) -> Iterator[threading.Event]:
    """Keeps breast-cancer's only worker thread busy until the event is set."""
    entry = live.service.registry.models["breast-cancer"]
    assert len(entry.workers) == 1
    release = threading.Event()
    blocker = entry.workers[0]._executor.submit(release.wait, 60)
    try:
        yield release
    finally:
        release.set()
        blocker.result(timeout=60)


def test_concurrent_requests_share_a_batch(client: httpx.Client, live: LiveServer, ref: Reference,
                                           held_worker: threading.Event) -> None:
    """16 concurrent requests while the worker is busy: the first batch is taken and held, the
    rest queue up behind it and are computed together; the batch-size histogram in /metrics
    shows a batch of more than one request."""
    n = 16
    rows = random_rows(ref.specs["breast-cancer"], n, seed=7)
    batcher = live.service.registry.models["breast-cancer"].batcher
    count_before, single_before = batch_histogram(client, "breast-cancer")
    computed_before = batcher.computed_items

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
            tasks = [asyncio.create_task(http.post("/v1/models/breast-cancer/predict",
                                                   json={"instances": [row]})) for row in rows]
            # wait until every request is either queued or in the first batch (which the busy
            # worker holds back); how many the first batch took depends on arrival order
            for _ in range(1000):
                if batcher.computed_items - computed_before + batcher.queued_rows >= n:
                    break
                await asyncio.sleep(0.01)
            assert batcher.computed_items - computed_before + batcher.queued_rows == n
            held_worker.set()
            return await asyncio.gather(*tasks)

    responses = asyncio.run(fire())
    expected = ref.tabular("breast-cancer", rows)
    for r, exp in zip(responses, expected, strict=True):
        (pred,) = ok(r, "breast-cancer", 1)
        check_classification(pred, exp, ["malignant", "benign"])
    count_after, single_after = batch_histogram(client, "breast-cancer")
    batches = count_after - count_before
    multi = batches - (single_after - single_before)
    assert batcher.computed_items - computed_before == n
    assert multi >= 1, "no batch held more than one request"
    assert 1 <= batches <= 2  # the batch held at the busy worker, then everything queued behind it


def test_batching_with_a_batch_delay(ref: Reference) -> None:
    """MAX_BATCH_DELAY_MS makes a consumer wait for more work before running a batch."""
    rows = random_rows(ref.specs["breast-cancer"], 8, seed=8)
    with LiveServer(make_settings(max_batch_delay_ms=300)) as server:
        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                return await asyncio.gather(*(http.post("/v1/models/breast-cancer/predict",
                                                        json={"instances": [row]}) for row in rows))

        responses = asyncio.run(fire())
        with httpx.Client(base_url=server.url) as http:
            count, single = batch_histogram(http, "breast-cancer")
    for r, exp in zip(responses, ref.tabular("breast-cancer", rows), strict=True):
        (pred,) = ok(r, "breast-cancer", 1)
        check_classification(pred, exp, ["malignant", "benign"])
    assert count - single >= 1, "no batch held more than one request"
    assert count < len(rows)


def test_the_demo_examples_show_the_model_at_its_best(client: httpx.Client) -> None:
    """Each example image is classified as its label with probability >= 0.9 (models/train.py picks
    the first seed that draws such an image), as recorded in the model's metrics.json."""
    recorded = json.loads((ROOT / "models" / "shapes" / "metrics.json").read_text())["examples"]
    assert set(recorded) == {p.name for p in (ROOT / "models" / "shapes" / "examples").iterdir()}
    for name, expected in recorded.items():
        path = ROOT / "models" / "shapes" / "examples" / name
        r = client.post("/v1/models/shapes/predict", files={"file": (name, path.read_bytes())})
        (pred,) = ok(r, "shapes", 1)
        assert pred["label"] == expected["label"] == name.split(".")[0]
        assert pred["score"] >= 0.9
        assert pred["score"] == pytest.approx(expected["score"], abs=1e-3)
