"""The benchmark scenarios (model, method, parameters, concurrency levels) and their request bodies."""

from __future__ import annotations

import base64
import io
import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import CATALOG

__all__ = ["SCENARIOS", "Scenario", "image_pngs", "make_bodies"]


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    method: str
    params: dict[str, Any]
    rows_per_instance: int
    """Attribution rows (fwd+bwd rows of useful work) per instance: n_steps for IG, 1 for GradCAM."""
    roofline_mode: str
    image_size: tuple[int, int] | None = None
    """(width, height) of the submitted images; None for tabular."""
    cpu_concurrency: tuple[int, ...] = (1, 16, 32, 64)
    gpu_concurrency: tuple[int, ...] = (1, 16, 64, 128, 256)
    cpu_duration_scale: float = 1.0
    cpu_max_requests: int | None = None
    note: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    """device type -> why some default concurrencies are not run there."""


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("tabular-ig", "breast-cancer", "integrated_gradients", {"n_steps": 32}, 32, "input"),
    Scenario("shapes-gradcam", "shapes", "gradcam", {}, 1, "layer", image_size=(128, 128)),
    Scenario("shapes-ig", "shapes", "integrated_gradients", {"n_steps": 16}, 16, "input", image_size=(128, 128)),
    Scenario("resnet50-gradcam", "resnet50", "gradcam", {}, 1, "layer", image_size=(224, 224),
             cpu_concurrency=(1, 16, 64), cpu_max_requests=160),
    Scenario("resnet50-ig", "resnet50", "integrated_gradients", {"n_steps": 32}, 32, "input",
             image_size=(224, 224), cpu_concurrency=(1,), cpu_duration_scale=1.5, cpu_max_requests=4,
             skipped={"cpu": "concurrency 16 and 64 are not run on CPU: one request is 32 resnet50 "
                             "fwd+bwd rows (seconds each on 2 cores), so a batch of 16 would take minutes "
                             "and tens of GB; time-bounded to a few requests at concurrency 1"}),
)}


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_pngs(size: tuple[int, int], count: int = 8, seed: int = 1234) -> list[bytes]:
    """Distinct, deterministic RGB PNGs of `size` (width, height), drawn by models.shapes."""
    from models.shapes import draw_sample

    rng = np.random.default_rng(seed)
    width, height = size
    return [_png(draw_sample(rng, width, height).image) for _ in range(count)]


def make_bodies(scenario: Scenario, count: int = 8) -> list[bytes]:
    """Distinct, deterministic request bodies (one instance each) for a scenario."""
    instances: list[Any] = []
    if scenario.image_size is None:
        rng = np.random.default_rng(1234)
        catalog = tomllib.loads(CATALOG.read_text(encoding="utf-8"))
        entry = next(m for m in catalog["models"] if m["name"] == scenario.model)
        mean = np.array(entry["tabular"]["mean"])
        std = np.array(entry["tabular"]["std"])
        for _ in range(count):
            row = np.maximum(mean + 0.7 * std * rng.standard_normal(mean.size), 0.0)
            instances.append({name: round(float(v), 6) for name, v in zip(entry["features"], row, strict=True)})
    else:
        instances = [{"b64": base64.b64encode(png).decode("ascii")}
                     for png in image_pngs(scenario.image_size, count)]
    bodies = []
    for instance in instances:
        body = {"instances": [instance], "method": scenario.method, "params": scenario.params}
        bodies.append(json.dumps(body).encode())
    return bodies
