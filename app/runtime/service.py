"""The request flows behind the routes, top to bottom: resolve the model and the method, check
what the request may cost, decode (the model's kind), submit, and assemble the answer.

Everything a request can be refused for is refused before its work is queued. Nothing here
branches on the input kind (the kind modules do what differs), and nothing runs tensor code on
the event loop (decoding and rendering run in the host pool, compute on the model's workers).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.config import Settings
from app.context import request_id_var
from app.errors import NotAcceptable, PayloadTooLarge
from app.inference import faithfulness
from app.inference.engine import ExplainResult, ExplainWork, PredictResult, PredictWork
from app.kinds import ExplainOptions, RequestLimits, checked_format, checked_outputs
from app.metrics import Metrics
from app.runtime import answers
from app.runtime.heap import trim_after, worth_trimming
from app.runtime.host import HostPool
from app.runtime.model_entry import ModelEntry
from app.runtime.registry import Registry
from app.schemas import ExplainRequest, ExplainResponse, Explanation, PredictResponse, Timings


@dataclass(frozen=True)
class ExplainAnswer:
    response: ExplainResponse
    png: bytes | None
    """The overlay PNG bytes, when the client asked for the image itself (`Accept: image/png`)."""


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class Service:
    def __init__(self, settings: Settings, registry: Registry, metrics: Metrics):
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.host = HostPool(settings)
        self.limits = RequestLimits(settings.max_instances, settings.max_image_pixels,
                                    settings.max_request_pixels, settings.max_output_pixels)

    async def start(self) -> None:
        await self.host.start()

    def close(self) -> None:
        self.host.close()

    def deadline(self, header_timeout: float | None) -> float:
        timeout = self.settings.request_timeout_s
        if header_timeout is not None:
            timeout = min(timeout, header_timeout)
        return time.perf_counter() + timeout

    def _check_count(self, count: int) -> None:
        if count > self.settings.max_instances:
            raise PayloadTooLarge(f"{count} instances exceed MAX_INSTANCES={self.settings.max_instances}")

    def _check_rows(self, entry: ModelEntry, rows: int, what: str) -> None:
        """The request's compute, in work rows, within what one request may cost."""
        limit = min(self.settings.max_request_rows, self.settings.max_queue)
        if rows > limit:
            name = "MAX_REQUEST_ROWS" if limit == self.settings.max_request_rows else "MAX_QUEUE"
            raise PayloadTooLarge(f"{what} costs {rows} work rows (instances x passes), over {name}={limit}: send "
                                  "fewer instances or lighter parameters")

    async def _trim_after(self, held: int) -> None:
        """Where the request's images held more than LARGE_BYTES, a trim in the host work pool (a
        hop to another process only then: most requests hold far less)."""
        if worth_trimming(held):
            await self.host.run(trim_after, held)

    async def scores(self, entry: ModelEntry, deadline: float, route: str, instances: Sequence[Any] = (),
                     files: Sequence[bytes] = (), pixels: Sequence[NDArray[np.uint8]] = ()) -> NDArray[np.float32]:
        """Per instance, the class probabilities in label order (or the regression value), unrounded."""
        count = len(instances) + len(files) + len(pixels)
        self._check_count(count)
        self._check_rows(entry, count, "this request")
        decoded = await entry.kind.decode(entry.spec, instances, files, self.limits, self.host, None, pixels)
        array, held = decoded.array, decoded.held_bytes
        del decoded
        await self._trim_after(held)
        done = await entry.submit(PredictWork(array, request_id_var.get()), count, deadline)
        result: PredictResult = done.value
        self.metrics.latency.labels(route, entry.spec.name, "queue").observe(done.queue_s)
        self.metrics.latency.labels(route, entry.spec.name, "compute").observe(done.compute_s)
        return result.scores

    async def predict(self, name: str, instances: Sequence[Any], top_k: int | None,
                      deadline: float, files: Sequence[bytes] = ()) -> PredictResponse:
        entry = self.registry.get(name)
        scores = await self.scores(entry, deadline, "predict", instances, files)
        regression = entry.spec.task == "regression"
        return PredictResponse(model=name, predictions=[
            answers.prediction(entry.primary.labels, regression, row, top_k) for row in scores])

    async def explain(self, name: str, request: ExplainRequest, deadline: float,
                      files: Sequence[bytes] = (), want_png: bool = False) -> ExplainAnswer:
        started = time.perf_counter()
        entry = self.registry.get(name)
        method, params = entry.method(request.method, request.params)
        options = ExplainOptions(checked_outputs(entry.kind, request.outputs), request.render, want_png,
                                 floor=method.render_floor, pixel_level=method.pixel_level,
                                 attributions_format=checked_format(entry.kind, request.attributions_format))
        count = len(request.instances) + len(files)
        self._check_count(count)
        if want_png and (count != 1 or "overlay" not in entry.kind.outputs):
            raise NotAcceptable("Accept: image/png needs exactly one image instance")
        faithful = "faithfulness" in options.outputs
        per_instance = method.cost(params, entry.spec.input_shape)
        rows = count * (per_instance + (faithfulness.passes(entry.spec.input_shape) if faithful else 0))
        self._check_rows(entry, rows, f"{method.name} with these parameters on {count} instance(s)")
        labels, regression = entry.primary.labels, entry.spec.task == "regression"
        targets = answers.resolve_targets(labels, entry.classes, regression, request.target, count)
        decoded = await entry.kind.decode(entry.spec, request.instances, files, self.limits, self.host, options)
        work = ExplainWork(decoded.array, targets, method.name, params, request_id_var.get(), faithful)
        done = await entry.submit(work, rows, deadline)
        result: ExplainResult = done.value
        render_started = time.perf_counter()
        predictions = [answers.prediction(labels, regression, s, request.top_k) for s in result.scores]
        parts = await entry.kind.answer(entry.spec, decoded, result.attributions, predictions, options, self.host)
        explanations = [
            Explanation(prediction=prediction,
                        target=answers.target(labels, regression, scores, int(target)),
                        convergence_delta=(answers.round_significant(float(result.deltas[i]))
                                           if method.reports_delta and result.deltas is not None else None),
                        n_steps=int(result.steps[i]) if result.steps is not None else None,
                        converged=bool(result.converged[i]) if result.converged is not None else None,
                        spread=answers.spread(result.attributions[i], result.spread[i], params)
                        if result.spread is not None else None,
                        faithfulness=answers.faithfulness(result.faithfulness[i])
                        if result.faithfulness is not None else None,
                        **part.fields)
            for i, (prediction, scores, target, part) in enumerate(
                zip(predictions, result.scores, result.targets, parts, strict=True))]
        finished = time.perf_counter()
        timings = Timings(queue=_ms(done.queue_s), compute=_ms(done.compute_s),
                          render=_ms(finished - render_started), total=_ms(finished - started))
        for phase in ("queue", "compute", "render", "total"):
            self.metrics.latency.labels("explain", name, phase).observe(getattr(timings, phase) / 1000)
        response = ExplainResponse(model=name, method=method.name, params=params.model_dump(mode="json"),  # type: ignore[arg-type]
                                   explanations=explanations, timings_ms=timings)
        held = decoded.held_bytes
        del decoded, parts[1:]  # the images are no longer needed: let a trim return their memory
        await self._trim_after(held)
        return ExplainAnswer(response, parts[0].png if want_png and parts else None)
