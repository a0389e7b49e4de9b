"""The baseline: the explain server a user would write from a FastAPI + Captum tutorial.

Models are loaded at start-up; every request is handled on its own: decode the images with
PIL, predict, make ONE Captum call for that request's instances alone, render the overlay with
PIL, return JSON. No batching across requests, no queue, no worker threads of its own.

It is the same model, method, parameters and output as our service: models are built with
`app.inference.loading` (same weights, same normalisation inside the module, same warm-up), in
the contiguous memory format a tutorial's `model.eval()` leaves them in, where our service lays a
CPU convolutional net out channels-last (`--model-as ours` gives the naive server that too),
images are resized with the same policy (`app.inference.inputs.model_view`), and overlays are
composed by `app.render.overlay`, so the overlay pixels are the same. The PNG is written the
way a tutorial writes it, `image.save(buffer, "PNG")` with Pillow's defaults (`--png ours`
uses our encoder settings instead, for byte-identical answers). Only the serving differs.

The endpoint is a plain `def`, which FastAPI runs in its thread pool (its advice for blocking
code); GradCAM requests hold a lock over their model use (prediction and Captum call), because
Captum's hooks on one shared module catch every thread's forward pass. (Mixing GradCAM and IG
on one model at the same time is still unsafe here: one of the ways this server is naive.)
`--serial` makes the endpoint `async def` instead, so requests run one at a time on the event
loop (the other common tutorial shape).

    python -m bench.naive_server --catalog bench/catalog.toml --port 8001
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import uvicorn
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from fastapi import FastAPI, HTTPException
from PIL import Image
from pydantic import BaseModel

from app.inference.catalog import load_catalog
from app.inference.inputs import model_view
from app.inference.loading import LoadedModel, load_model, resolve_device
from app.inference.methods import METHODS
from app.kinds.image import default_smoothing
from app.render import Placement, RenderSpec, data_uri, encode_png, overlay
from app.runtime.answers import prediction

MODELS: dict[str, LoadedModel] = {}
HOOK_LOCK = threading.Lock()
PNG_SETTINGS = {"ours": False}


class ExplainBody(BaseModel):
    instances: list[Any]
    method: str | None = None
    target: int | None = None
    params: dict[str, Any] = {}
    outputs: list[str] | None = None


def _decode(instance: dict[str, str], model: LoadedModel) -> tuple[Image.Image, np.ndarray, Any]:
    img = Image.open(io.BytesIO(base64.b64decode(instance["b64"]))).convert("RGB")
    pixels, box = model_view(img, model.spec.image_spec)
    return img, pixels, box


def explain_sync(name: str, body: ExplainBody) -> dict[str, Any]:
    started = time.perf_counter()
    if name not in MODELS:
        raise HTTPException(404, f"unknown model {name}")
    model = MODELS[name]
    spec = model.spec
    method = body.method or spec.default_method or "integrated_gradients"
    decoded: list[tuple[Image.Image, np.ndarray, Any]] = []
    rows: list[list[float]] = []
    if spec.kind == "image":
        decoded = [_decode(inst, model) for inst in body.instances]
        x = torch.from_numpy(np.stack([d[1] for d in decoded])).to(model.device)
    else:
        rows = [[float(inst[f]) for f in spec.features or []] if isinstance(inst, dict) else inst
                for inst in body.instances]
        x = torch.tensor(rows, dtype=torch.float32, device=model.device)
    hooks = method == "gradcam"
    if method not in ("integrated_gradients", "gradcam"):
        raise HTTPException(422, f"the naive server only does integrated_gradients and gradcam, not {method}")
    with HOOK_LOCK if hooks else contextlib.nullcontext():
        with torch.no_grad():
            scores = torch.softmax(model.module(x), dim=1)
        targets = scores.argmax(dim=1) if body.target is None else torch.full_like(scores[:, 0], body.target).long()
        if method == "integrated_gradients":
            params: dict[str, Any] = {"n_steps": int(body.params.get("n_steps", 32)), "baseline": "zeros",
                                      "method": "gausslegendre"}
            ig = IntegratedGradients(model.module)
            attr, delta = ig.attribute(x, baselines=0.0, target=targets, n_steps=params["n_steps"],
                                       method="gausslegendre", return_convergence_delta=True)
            deltas: list[float | None] = [float(d) for d in delta.detach().cpu()]
        else:
            params = {"layer": None}
            layer = model.module.get_submodule("net." + (model.facts.gradcam_layer or ""))
            cam = LayerGradCam(model.module, layer).attribute(x, target=targets, relu_attributions=True)
            attr = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
            deltas = [None] * x.shape[0]
    attr_np = attr.detach().cpu().numpy()
    scores_np = scores.cpu().numpy()
    labels = model.labels
    explanations = []
    for i in range(x.shape[0]):
        t = int(targets[i])
        item: dict[str, Any] = {
            "prediction": prediction(labels, spec.task == "regression", scores_np[i], None).model_dump(
                mode="json", exclude_none=True),
            "target": {"index": t, "label": labels[t] if labels else None,
                       "score": float(f"{scores_np[i][t]:.6g}")},
            "convergence_delta": deltas[i],
        }
        if spec.kind == "image":
            img, _, box = decoded[i]
            heat = attr_np[i].sum(axis=0)
            # Our defaults for the method (its row in the method table): the same pixels as ours.
            row = METHODS[method]
            render = RenderSpec(floor=row.render_floor,
                                smooth=default_smoothing(spec.image_spec, row.pixel_level))
            picture = overlay(img, heat, Placement(img.size, box), render)
            if PNG_SETTINGS["ours"]:
                png = encode_png(picture)
            else:
                buffer = io.BytesIO()
                picture.save(buffer, "PNG")
                png = buffer.getvalue()
            item["overlay"] = data_uri(png)
        else:
            item["attributions"] = [
                {"feature": f, "value": float(v), "attribution": float(f"{a:.6g}")}
                for f, v, a in zip(spec.features or [], rows[i], attr_np[i].tolist(), strict=True)]
        explanations.append(item)
    total = (time.perf_counter() - started) * 1000
    return {"model": name, "method": method, "params": params, "explanations": explanations,
            "timings_ms": {"total": round(total, 3)}}


def create_app(catalog: Path, device: str, only: list[str] | None = None, serial: bool = False,
               model_as: str = "tutorial") -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for spec in load_catalog(catalog):
            if only is None or spec.name in only:
                if model_as == "tutorial":
                    spec = spec.model_copy(update={"memory_format": "contiguous", "fold_batchnorm": False})
                MODELS[spec.name] = load_model(spec, resolve_device(device))
        yield
        MODELS.clear()

    app = FastAPI(title="naive explain server", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if serial:
        @app.post("/v1/models/{name}/explain")
        async def explain_serial(name: str, body: ExplainBody) -> dict[str, Any]:
            return explain_sync(name, body)
    else:
        @app.post("/v1/models/{name}/explain")
        def explain(name: str, body: ExplainBody) -> dict[str, Any]:
            return explain_sync(name, body)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="naive FastAPI + Captum explain server (baseline)")
    parser.add_argument("--catalog", type=Path, default=Path("bench/catalog.toml"))
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default="", help="comma-separated subset of the catalog to load")
    parser.add_argument("--serial", action="store_true", help="async def endpoint: one request at a time")
    parser.add_argument("--png", choices=["default", "ours"], default="default",
                        help="PNG encoding: Pillow's defaults (a tutorial's) or our encoder settings")
    parser.add_argument("--model-as", choices=["tutorial", "ours"], default="tutorial",
                        help="the models in the memory format a tutorial leaves them in (contiguous) or in "
                             "our service's (channels-last for a convolutional net on the CPU)")
    args = parser.parse_args()
    PNG_SETTINGS["ours"] = args.png == "ours"
    only = [m for m in args.models.split(",") if m] or None
    app = create_app(args.catalog, args.device, only, args.serial, args.model_as)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
