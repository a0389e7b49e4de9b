"""bench/scenarios.py: the scenarios' request bodies."""

from __future__ import annotations

import base64
import io
import json
import tomllib
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.inference.catalog import load_catalog
from bench.common import CATALOG
from bench.scenarios import SCENARIOS, make_bodies
from tests.conftest import CATALOG as DEMO_CATALOG
from tests.conftest import LiveServer


def bench_entry(name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(m for m in tomllib.loads(CATALOG.read_text())["models"] if m["name"] == name)
    return entry


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_make_bodies_are_deterministic_distinct_single_instances(name: str) -> None:
    scenario = SCENARIOS[name]
    bodies = make_bodies(scenario)
    assert bodies == make_bodies(scenario)
    assert len(bodies) == 8 == len(set(bodies))
    assert len(make_bodies(scenario, 3)) == 3
    for body in bodies:
        data = json.loads(body)
        assert set(data) == {"instances", "method", "params"}
        assert data["method"] == scenario.method and data["params"] == scenario.params
        assert len(data["instances"]) == 1


def test_tabular_bodies_are_rows_by_feature_name() -> None:
    entry = bench_entry("breast-cancer")
    demo = next(s for s in load_catalog(DEMO_CATALOG) if s.name == "breast-cancer")
    assert entry["features"] == demo.features
    mean, std = np.array(entry["tabular"]["mean"]), np.array(entry["tabular"]["std"])
    rows = []
    for body in make_bodies(SCENARIOS["tabular-ig"]):
        (instance,) = json.loads(body)["instances"]
        assert list(instance) == entry["features"]
        rows.append([instance[f] for f in entry["features"]])
    values = np.array(rows)
    assert (values >= 0).all()
    assert (values <= mean + 6 * std).all()
    # Around the training distribution: not constant, not all clipped.
    assert (values.std(axis=0) > 0).all()
    assert (np.abs(values.mean(axis=0) - mean) < 2 * std).all()


@pytest.mark.parametrize("name", ["shapes-gradcam", "resnet50-gradcam"])
def test_image_bodies_are_pngs_of_the_model_size(name: str) -> None:
    scenario = SCENARIOS[name]
    for body in make_bodies(scenario):
        (instance,) = json.loads(body)["instances"]
        image = Image.open(io.BytesIO(base64.b64decode(instance["b64"])))
        assert image.format == "PNG"
        assert image.size == scenario.image_size
        assert image.mode == "RGB"
        assert np.asarray(image).std() > 0


@pytest.mark.parametrize(("name", "model"), [("tabular-ig", "breast-cancer"), ("shapes-gradcam", "shapes")])
def test_our_service_takes_every_body(live: LiveServer, name: str, model: str) -> None:
    for body in make_bodies(SCENARIOS[name]):
        response = httpx.post(f"{live.url}/v1/models/{model}/explain", content=body, trust_env=False,
                              headers={"content-type": "application/json"}, timeout=120)
        assert response.status_code == 200, response.text[:300]
        answer = response.json()
        assert answer["method"] == SCENARIOS[name].method
        assert len(answer["explanations"]) == 1


