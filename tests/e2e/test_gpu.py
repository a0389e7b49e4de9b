"""The CUDA path: models resident on the GPU, batched attribution equal to Captum alone.

Skipped without CUDA; run on a GPU machine with `pytest -m gpu`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

from app.inference.catalog import load_catalog
from app.inference.inputs import decode_image
from app.inference.loading import load_model
from models.shapes import generate
from tests.conftest import CATALOG, ROOT, LiveServer, make_settings, png_b64

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def gpu_server() -> Iterator[LiveServer]:
    with LiveServer(make_settings(device="cuda", max_batch_delay_ms=20)) as server:
        yield server


def _spec(name: str):  # type: ignore[no-untyped-def]
    return next(s for s in load_catalog(CATALOG) if s.name == name)


def test_models_are_resident_on_the_gpu(gpu_server: LiveServer) -> None:
    models = httpx.get(gpu_server.url + "/v1/models").json()["models"]
    assert {m["device"] for m in models} == {"cuda:0"}
    for entry in gpu_server.service.registry.models.values():
        assert next(entry.primary.module.parameters()).device.type == "cuda"


async def _explain_all(url: str, bodies: list[dict[str, object]], path: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        answers = await asyncio.gather(*(client.post(path, json=b) for b in bodies))
    for answer in answers:
        assert answer.status_code == 200, answer.text
    return [a.json() for a in answers]


def test_concurrent_image_explanations_are_batched_and_match_captum_alone(gpu_server: LiveServer) -> None:
    samples = generate(24, seed=7)
    bodies = [{"instances": [{"b64": png_b64(s.image)}], "method": method, "outputs": ["attributions"],
               "target": s.label if i % 2 else None}
              for i, s in enumerate(samples) for method in ("gradcam", "integrated_gradients")]
    batcher = gpu_server.service.registry.models["shapes"].batcher
    before = batcher.computed_items
    answers = asyncio.run(_explain_all(gpu_server.url, bodies, "/v1/models/shapes/explain"))
    assert batcher.computed_items - before == len(bodies)
    metrics = httpx.get(gpu_server.url + "/metrics").text
    sizes = [line for line in metrics.splitlines()
             if line.startswith('explainserve_batch_requests_bucket{le="1.0",model="shapes"}')]
    count = [line for line in metrics.splitlines()
             if line.startswith('explainserve_batch_requests_count{model="shapes"}')]
    assert sizes and count and float(sizes[0].split()[-1]) < float(count[0].split()[-1]), "no batch of > 1"

    spec = _spec("shapes")
    reference = load_model(spec, torch.device("cpu"))
    for body, answer in zip(bodies, answers, strict=True):
        decoded = decode_image(body["instances"][0], 0, spec.image_spec, 10**8)  # type: ignore[index]
        x = torch.from_numpy(decoded.pixels)[None]
        target = answer["explanations"][0]["target"]["index"]
        if body["method"] == "gradcam":
            layer = reference.module.get_submodule("net." + (reference.facts.gradcam_layer or ""))
            cam = LayerGradCam(reference.module, layer).attribute(x, target=target, relu_attributions=True)
            expected = LayerAttribution.interpolate(cam, (128, 128), "bilinear")[0].sum(0)
        else:
            expected = IntegratedGradients(reference.module).attribute(x, target=target, n_steps=32)[0].sum(0)
        expected = expected.detach()
        got = torch.tensor(answer["explanations"][0]["attributions"])
        scale = float(expected.abs().max()) + 1e-12
        # TF32 convolutions on the GPU against float32 on the CPU: compare relative to the map's peak.
        assert float((got - expected).abs().max()) / scale < 2e-2


def test_tabular_ig_on_gpu_equals_cpu_captum(gpu_server: LiveServer) -> None:
    body = json.loads((ROOT / "models" / "breast_cancer" / "example.json").read_text())
    answer = httpx.post(gpu_server.url + "/v1/models/breast-cancer/explain", json=body, timeout=60).json()
    spec = _spec("breast-cancer")
    reference = load_model(spec, torch.device("cpu"))
    features = spec.features or []
    for instance, explanation in zip(body["instances"], answer["explanations"], strict=True):
        x = torch.tensor([[float(instance[f]) for f in features]])
        target = explanation["target"]["index"]
        expected = IntegratedGradients(reference.module).attribute(x, target=target, n_steps=32)[0].detach()
        got = torch.tensor([a["attribution"] for a in explanation["attributions"]])
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
