"""The request flows behind the routes: decode off the loop, queue, compute, render, answer.

Routes call `predict` and `explain` with plain data; nothing here runs tensor code on the
event loop (decoding and rendering run in thread pools, compute on the model's workers).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.config import Settings
from app.context import request_id_var
from app.errors import ErrorItem, InvalidInput, NotAcceptable, PayloadTooLarge, quoted
from app.inference.engine import ExplainResult, ExplainWork, PredictResult, PredictWork
from app.inference.inputs import DecodedImage, decode_image, decode_image_bytes, decode_pixels, tabular_rows
from app.inference.methods import IG_FAMILY, METHODS, layer_path, model_overrides
from app.inference.params import GradCamParams, resolve_params
from app.metrics import Metrics
from app.render import COLORMAPS
from app.runtime import answers
from app.runtime.registry import ModelEntry, Registry
from app.runtime.rendering import ImageRender, render_image, render_tabular
from app.schemas import ExplainRequest


@dataclass(frozen=True)
class Inputs:
    array: np.ndarray[Any, Any]
    images: list[DecodedImage] | None
    raw_rows: np.ndarray[Any, Any] | None


@dataclass(frozen=True)
class ExplainAnswer:
    body: dict[str, Any]
    png: bytes | None
    """The first overlay as PNG bytes, when asked for `Accept: image/png`."""


class Service:
    def __init__(self, settings: Settings, registry: Registry, metrics: Metrics):
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        cpus = os.cpu_count() or 2
        self._decode = ThreadPoolExecutor(settings.decode_threads or cpus, thread_name_prefix="decode")
        self._render = ThreadPoolExecutor(settings.render_threads or cpus, thread_name_prefix="render")

    def close(self) -> None:
        self._decode.shutdown(wait=False, cancel_futures=True)
        self._render.shutdown(wait=False, cancel_futures=True)

    def deadline(self, header_timeout: float | None) -> float:
        timeout = self.settings.request_timeout_s
        if header_timeout is not None:
            timeout = min(timeout, header_timeout)
        return time.perf_counter() + timeout

    def _check_count(self, instances: Sequence[Any]) -> None:
        if len(instances) > self.settings.max_instances:
            raise PayloadTooLarge(
                f"{len(instances)} instances exceed MAX_INSTANCES={self.settings.max_instances}")

    async def decode(self, entry: ModelEntry, instances: Sequence[Any],
                     files: Sequence[bytes] = (), pixels: Sequence[NDArray[np.uint8]] = ()) -> Inputs:
        """Validate and decode in the decode pool; images may come as JSON instances, file parts,
        or (Open Inference Protocol) H x W x 3 uint8 pixels."""
        self._check_count([*instances, *files, *pixels])
        loop = asyncio.get_running_loop()
        spec = entry.spec
        if spec.kind == "tabular":
            if files or pixels:
                raise InvalidInput("file parts are for image models; send tabular rows as JSON")
            rows = tabular_rows(instances, spec.features or [])
            return Inputs(rows.astype(np.float32), None, rows)
        image_spec = spec.image_spec
        limit = self.settings.max_image_pixels
        jobs = [loop.run_in_executor(self._decode, decode_image, inst, i, image_spec, limit)
                for i, inst in enumerate(instances)]
        jobs += [loop.run_in_executor(self._decode, decode_image_bytes, data, i, image_spec, limit)
                 for i, data in enumerate(files, start=len(instances))]
        jobs += [loop.run_in_executor(self._decode, decode_pixels, array, i, image_spec, limit)
                 for i, array in enumerate(pixels, start=len(instances) + len(files))]
        images = list(await asyncio.gather(*jobs))
        array = images[0].pixels[None] if len(images) == 1 else np.stack([img.pixels for img in images])
        return Inputs(array, images, None)

    async def scores(self, entry: ModelEntry, inputs: Inputs, deadline: float,
                     route: str = "predict") -> NDArray[np.float32]:
        """Per row: class probabilities in label order, or the regression value (unrounded)."""
        name = entry.spec.name
        work = PredictWork(inputs.array, request_id_var.get())
        done = await entry.batcher.submit(work, ("predict",), inputs.array.shape[0], deadline)
        result: PredictResult = done.value
        self.metrics.latency.labels(route, name, "queue").observe(done.queue_s)
        self.metrics.latency.labels(route, name, "compute").observe(done.compute_s)
        return result.scores

    async def predict(self, name: str, instances: Sequence[Any], top_k: int | None,
                      deadline: float, files: Sequence[bytes] = ()) -> dict[str, Any]:
        entry = self.registry.get(name)
        inputs = await self.decode(entry, instances, files)
        scores = await self.scores(entry, inputs, deadline)
        labels = entry.primary.labels
        predictions = [answers.prediction(entry.spec, labels, s, top_k) for s in scores]
        return {"model": name, "predictions": predictions}

    def resolve_method(self, entry: ModelEntry, request: ExplainRequest) -> tuple[str, Any]:
        name = request.method or entry.info["default_method"]
        if name not in METHODS:
            raise InvalidInput(f"unknown method {quoted(name)} (known: {', '.join(METHODS)})",
                               [ErrorItem(("method",), "unknown method")])
        if name not in entry.methods:
            raise InvalidInput(
                f"method '{name}' is not offered for model '{entry.spec.name}' "
                f"(offered: {', '.join(entry.methods)})", [ErrorItem(("method",), "not offered")])
        params = resolve_params(METHODS[name].params, model_overrides(entry.spec, name), request.params)
        if isinstance(params, GradCamParams):
            layer_path(entry.primary, params)
        return name, params

    def _outputs(self, entry: ModelEntry, request: ExplainRequest) -> set[str]:
        allowed = {"overlay", "heatmap", "attributions"} if entry.spec.kind == "image" else {"chart", "summary"}
        asked = set(request.outputs if request.outputs is not None else
                    (["overlay"] if entry.spec.kind == "image" else []))
        wrong = asked - allowed
        if wrong:
            raise InvalidInput(
                f"outputs {sorted(wrong)} are not available for {entry.spec.kind} models "
                f"(choose from {sorted(allowed)})", [ErrorItem(("outputs",), "not available")])
        return asked

    async def explain(self, name: str, request: ExplainRequest, deadline: float,
                      files: Sequence[bytes] = (), want_png: bool = False) -> ExplainAnswer:
        started = time.perf_counter()
        entry = self.registry.get(name)
        method_name, params = self.resolve_method(entry, request)
        outputs = self._outputs(entry, request)
        if want_png:
            outputs |= {"overlay"}
        colormap = request.render.colormap
        if entry.spec.kind == "image" and colormap is not None and colormap not in COLORMAPS:
            raise InvalidInput(f"unknown colormap '{colormap}' (choose from {', '.join(COLORMAPS)})",
                               [ErrorItem(("render", "colormap"), "unknown colormap")])
        inputs = await self.decode(entry, request.instances, files)
        n = inputs.array.shape[0]
        if want_png and (inputs.images is None or n != 1):
            raise NotAcceptable("Accept: image/png needs exactly one image instance")
        labels = entry.primary.labels
        classes = len(labels) if labels else entry.primary.out_width
        targets = answers.resolve_targets(entry.spec, labels, classes, request.target, n)
        work = ExplainWork(inputs.array, targets, method_name, params, request_id_var.get())
        passes = METHODS[method_name].passes(params, inputs.array.shape[1:])
        done = await entry.batcher.submit(work, (method_name, params), n * passes, deadline)
        result: ExplainResult = done.value
        render_started = time.perf_counter()
        explanations, png = await self._assemble(entry, request, inputs, result, outputs,
                                                 method_name in IG_FAMILY, want_png)
        finished = time.perf_counter()
        timings = {
            "queue": round(done.queue_s * 1000, 3), "compute": round(done.compute_s * 1000, 3),
            "render": round((finished - render_started) * 1000, 3),
            "total": round((finished - started) * 1000, 3)}
        for phase in ("queue", "compute", "render", "total"):
            self.metrics.latency.labels("explain", name, phase).observe(timings[phase] / 1000)
        body = {"model": name, "method": method_name, "params": params.model_dump(mode="json"),
                "explanations": explanations, "timings_ms": timings}
        return ExplainAnswer(body, png)

    async def _assemble(self, entry: ModelEntry, request: ExplainRequest, inputs: Inputs,
                        result: ExplainResult, outputs: set[str], has_delta: bool,
                        want_png: bool) -> tuple[list[dict[str, Any]], bytes | None]:
        spec = entry.spec
        labels = entry.primary.labels
        loop = asyncio.get_running_loop()
        explanations: list[dict[str, Any]] = []
        jobs = []
        for i in range(result.scores.shape[0]):
            pred = answers.prediction(spec, labels, result.scores[i], request.top_k)
            delta = (answers.round_significant(float(result.deltas[i]))
                     if has_delta and result.deltas is not None else None)
            item: dict[str, Any] = {
                "prediction": pred,
                "target": answers.target(spec, labels, result.scores[i], int(result.targets[i])),
                "convergence_delta": delta}
            if inputs.images is not None:
                job = ImageRender(inputs.images[i], result.attributions[i], request.render, outputs)
                jobs.append(loop.run_in_executor(self._render, render_image, job))
            else:
                assert inputs.raw_rows is not None
                item["attributions"] = answers.tabular_attributions(
                    spec.features or [], inputs.raw_rows[i], result.attributions[i])
                if outputs:
                    jobs.append(loop.run_in_executor(
                        self._render, render_tabular, spec.features or [], inputs.raw_rows[i],
                        result.attributions[i], answers.headline(spec, pred), outputs))
            explanations.append(item)
        rendered = await asyncio.gather(*jobs)
        png: bytes | None = None
        if rendered:
            for item, extra in zip(explanations, rendered, strict=True):
                if want_png and png is None:
                    png = extra.pop("_png", None)
                extra.pop("_png", None)
                item.update(extra)
        return explanations, png
