"""bench/naive_server.py served in-process next to our service: the same request gets the same answer.

This is what bench/run.py's compare_outputs checks before every scenario; here it is checked both
through compare_outputs and value by value, plus one independent check of the IG numbers
(completeness: the attributions add up to F(x) - F(baseline) up to the reported delta).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from collections.abc import Iterator
from typing import Any, cast

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.inference.catalog import load_catalog
from app.inference.loading import load_model
from bench import naive_server
from bench.answers import overlays_agree
from bench.run import SCENARIOS, Server, compare_outputs, make_bodies
from tests.conftest import CATALOG, LiveServer
from tests.fixtures.threaded import ThreadedServer

HEADERS = {"content-type": "application/json"}
TABULAR = dataclasses.replace(SCENARIOS["tabular-ig"], params={"n_steps": 8})
SHAPES = SCENARIOS["shapes-gradcam"]


@pytest.fixture(scope="module")
def naive() -> Iterator[ThreadedServer]:
    app = naive_server.create_app(CATALOG, "cpu", ["breast-cancer", "shapes"])
    with ThreadedServer(app, "/healthz") as server:
        yield server


def post(url: str, model: str, body: bytes | dict[str, Any]) -> dict[str, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{url}/v1/models/{model}/explain", content=content, headers=HEADERS, timeout=120,
                          trust_env=False)
    assert response.status_code == 200, response.text[:500]
    answer: dict[str, Any] = response.json()
    return answer


def pixels(data_uri: str) -> np.ndarray:
    assert data_uri.startswith("data:image/png;base64,")
    data = base64.b64decode(data_uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def as_server(server: LiveServer | ThreadedServer) -> Server:
    """compare_outputs only reads `.url` of the servers it is given."""
    return cast(Server, server)


def test_only_the_requested_models_are_loaded(naive: ThreadedServer) -> None:
    assert sorted(naive_server.MODELS) == ["breast-cancer", "shapes"]


def test_tabular_ig_answers_like_our_service(live: LiveServer, naive: ThreadedServer) -> None:
    body = make_bodies(TABULAR)[0]
    instance = json.loads(body)["instances"][0]
    ours, theirs = post(live.url, "breast-cancer", body), post(naive.url, "breast-cancer", body)
    assert theirs["model"] == "breast-cancer" and theirs["method"] == "integrated_gradients"
    assert theirs["params"]["n_steps"] == 8
    a, b = ours["explanations"][0], theirs["explanations"][0]
    assert sorted(a) == sorted(b)
    assert a["prediction"]["index"] == b["prediction"]["index"]
    assert a["prediction"]["label"] == b["prediction"]["label"]
    assert a["prediction"]["score"] == pytest.approx(b["prediction"]["score"], abs=1e-5)
    assert [k["index"] for k in a["prediction"]["top_k"]] == [k["index"] for k in b["prediction"]["top_k"]]
    assert a["target"]["index"] == b["target"]["index"] == a["prediction"]["index"]
    assert a["target"]["score"] == pytest.approx(b["target"]["score"], abs=1e-5)

    features = [x["feature"] for x in b["attributions"]]
    assert features == [x["feature"] for x in a["attributions"]] == list(instance)
    assert [x["value"] for x in b["attributions"]] == pytest.approx(list(instance.values()))
    va = np.array([x["attribution"] for x in a["attributions"]])
    vb = np.array([x["attribution"] for x in b["attributions"]])
    scale = float(np.abs(va).max())
    assert scale > 0
    np.testing.assert_allclose(vb, va, rtol=0, atol=1e-3 * scale)
    assert b["convergence_delta"] == pytest.approx(a["convergence_delta"], abs=1e-4)

    # Independently: F(x)[t] - F(0)[t], from the catalog model loaded here, is what IG distributes.
    spec = next(s for s in load_catalog(CATALOG) if s.name == "breast-cancer")
    model = load_model(spec, torch.device("cpu"))
    x = torch.tensor([list(instance.values())], dtype=torch.float32)
    t = b["target"]["index"]
    with torch.no_grad():
        gain = float(model.module(x)[0, t] - model.module(torch.zeros_like(x))[0, t])
    assert float(vb.sum()) - gain == pytest.approx(b["convergence_delta"], abs=1e-3 * max(abs(gain), 1.0))

    match = compare_outputs(TABULAR, as_server(live), as_server(naive), body)
    assert match["ok"] is True
    assert match["same_prediction"] and match["same_target"] and match["same_keys"]
    assert match["attribution_max_abs_diff"] <= 1e-3 * match["attribution_scale"]


def test_a_requested_target_is_explained_by_both(live: LiveServer, naive: ThreadedServer) -> None:
    body = json.loads(make_bodies(TABULAR)[1])
    predicted = post(naive.url, "breast-cancer", body)["explanations"][0]["prediction"]["index"]
    body["target"] = 1 - predicted
    a = post(live.url, "breast-cancer", body)["explanations"][0]
    b = post(naive.url, "breast-cancer", body)["explanations"][0]
    assert a["target"]["index"] == b["target"]["index"] == 1 - predicted
    assert a["target"]["label"] == b["target"]["label"]
    va = np.array([x["attribution"] for x in a["attributions"]])
    vb = np.array([x["attribution"] for x in b["attributions"]])
    np.testing.assert_allclose(vb, va, rtol=0, atol=1e-3 * float(np.abs(va).max()))


def test_shapes_gradcam_overlay_has_our_pixels(live: LiveServer, naive: ThreadedServer) -> None:
    body = make_bodies(SHAPES)[0]
    submitted = pixels("data:image/png;base64," + json.loads(body)["instances"][0]["b64"])
    ours, theirs = post(live.url, "shapes", body), post(naive.url, "shapes", body)
    assert theirs["method"] == "gradcam"
    a, b = ours["explanations"][0], theirs["explanations"][0]
    assert sorted(a) == sorted(b)
    assert "overlay" in b and "attributions" not in b
    assert a["prediction"]["index"] == b["prediction"]["index"]
    assert a["prediction"]["label"] == b["prediction"]["label"]
    assert a["target"]["index"] == b["target"]["index"]
    assert a["target"]["score"] == pytest.approx(b["target"]["score"], abs=1e-5)
    assert b["convergence_delta"] is None
    pa, pb = pixels(a["overlay"]), pixels(b["overlay"])
    assert pa.shape == pb.shape == submitted.shape == (128, 128, 3)
    diff = np.abs(pa - pb)
    assert int(diff.max()) <= 2
    assert float((diff > 0).mean()) < 0.01
    # It is an overlay: the heatmap changed the submitted picture.
    assert float(np.abs(pb - submitted).mean()) > 1.0

    match = compare_outputs(SHAPES, as_server(live), as_server(naive), body)
    assert match["ok"] is True
    assert match["overlay_max_abs_diff"] == int(diff.max())
    assert match["overlay_pixels_differing"] == pytest.approx(float((diff > 0).mean()))
    assert match["overlays_agree"] is True


@pytest.mark.parametrize(("steps", "share", "agree"), [
    (0, 0.0, True),  # identical
    (3, 0.016, True),  # resnet50 IG, BatchNorm folded against unfolded: a rounding step here and there
    (4, 0.02, True),
    (5, 0.0001, False),  # one pixel far off
    (2, 0.3, False),  # a third of the picture moved: another map
])
def test_overlays_agree_within_float_rounding(steps: int, share: float, agree: bool) -> None:
    diff = np.zeros((100, 100, 3), dtype=np.int16)
    diff.reshape(-1)[: round(share * diff.size)] = steps
    assert overlays_agree(diff) is agree


def test_our_png_settings_give_identical_bytes(live: LiveServer, naive: ThreadedServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(naive_server.PNG_SETTINGS, "ours", True)
    body = make_bodies(SHAPES)[1]
    match = compare_outputs(SHAPES, as_server(live), as_server(naive), body)
    assert match["ok"] is True
    assert match["overlay_identical_bytes"] is True


def test_unknown_model_and_unsupported_method_are_refused(naive: ThreadedServer) -> None:
    body = json.loads(make_bodies(TABULAR)[0])
    unknown = httpx.post(f"{naive.url}/v1/models/nope/explain", json=body, trust_env=False, timeout=60)
    assert unknown.status_code == 404
    body["method"] = "saliency"
    refused = httpx.post(f"{naive.url}/v1/models/breast-cancer/explain", json=body, trust_env=False, timeout=60)
    assert refused.status_code == 422
    assert "saliency" in refused.text
