"""`create_app(settings)`: lifespan (load, warm, drain), routers, error handlers, middleware."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import docs, explain, fast, health, models, openapi, predict, problems, ui, v2, v2_errors
from app.api.middleware import CrossOriginGuard, ProblemCORS, RequestContext
from app.config import Settings, get_settings
from app.context import InFlight
from app.metrics import Metrics
from app.runtime import heap
from app.runtime.drain import Drain
from app.runtime.registry import Registry, memory_probe
from app.runtime.service import Service
from app.types import METHOD_NAMES

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Resident PyTorch models with batched Captum attribution: JSON scores, per-feature "
    "contributions, and base64 PNG heatmap overlays ready for `<img src>`."
)


GC_YOUNG_THRESHOLD = 10_000
"""Container objects allocated, net of those freed, that start a young collection (CPython's
default: 700). With 32-64 requests in flight, each holding its coroutines, dicts and models until
answered, 700 was reached every few requests: 400-500 collections in 8 s of shapes GradCAM at 64
concurrent and 3,700-4,100 of tabular IG at 32 (a full one every 30), 3-6% of the wall time with
every thread stopped. The requests' live objects stay below 10,000, so a collection is rare, and
cyclic garbage waits at most that many allocations (bench/results/history.md)."""


def settle_heap() -> None:
    """Move everything start-up made (modules, models, tensors' Python objects: some 400,000
    objects) out of the garbage collector's view: a full collection then scans only what requests
    create, instead of pausing every thread that needs the interpreter for 0.2-0.4 s (the
    latency tail of tabular IG at 32 concurrent, bench/results/history.md); and collect the young
    generation only after GC_YOUNG_THRESHOLD allocations."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics(memory_probe)
    registry = Registry(settings, metrics)
    service = Service(settings, registry, metrics)
    in_flight = InFlight()

    drain = Drain(settings, registry, in_flight)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # for code on other threads (tests, Ray's replica)
        if settings.malloc_retain:
            heap.retain_freed()
        await service.start()
        try:
            await registry.load()
        except BaseException:
            service.close()
            raise
        settle_heap()
        logger.info("ready: %s", ", ".join(registry.models))
        try:
            yield
        finally:
            await drain.run()  # at once if the server drained already (SIGTERM)
            service.close()

    app = FastAPI(title="explainserve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)  # served by app.api.docs
    app.state.settings = settings
    app.state.service = service
    app.state.shutdown = drain.run
    problems.install(app)
    v2_errors.install(app)
    # The hot routes first, as plain Starlette routes (app/api/fast.py): a request is matched
    # against each route in turn, and FastAPI's matching of one route is a dozen Python calls.
    fast.install(app, (explain.router, predict.router))
    for router in (explain.router, predict.router, health.router, models.router, ui.router, v2.router):
        app.include_router(router)
    docs.install(app)
    openapi.install(app, settings)
    if not settings.api_keys:
        app.add_middleware(CrossOriginGuard, allowed=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(ProblemCORS, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(RequestContext, metrics=metrics, in_flight=in_flight,
                       models=lambda: registry.models, methods=frozenset(METHOD_NAMES))
    return app
