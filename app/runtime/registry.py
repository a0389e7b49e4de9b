"""The resident models: the catalog loaded into one `ModelEntry` per model, looked up by name,
and drained on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

import torch

from app.config import Settings
from app.errors import ModelNotFound, NotReady, did_you_mean, quoted
from app.inference.catalog import load_catalog
from app.metrics import Metrics
from app.runtime.model_entry import ModelEntry, build_entry

logger = logging.getLogger(__name__)

State = Literal["starting", "ready", "draining"]


def memory_probe() -> dict[str, int]:
    if not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count())}


class Registry:
    """Loads every catalog model in the lifespan; serves lookups; drains on shutdown."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.state: State = "starting"
        self.models: dict[str, ModelEntry] = {}
        self._statuses: dict[str, str] = {}

    def statuses(self) -> dict[str, str]:
        return dict(self._statuses)

    def get(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            if name in self._statuses:
                raise NotReady(f"model '{name}' is still loading", headers={"Retry-After": "5"})
            raise ModelNotFound(f"unknown model {quoted(name)}{did_you_mean(name, list(self._statuses))}")
        if self.state == "draining":
            raise NotReady("the service is shutting down", headers={"Retry-After": "5"})
        return entry

    async def load(self) -> None:
        specs = load_catalog(self.settings.models)
        self._statuses = {spec.name: "loading" for spec in specs}
        for spec in specs:
            started = time.perf_counter()
            entry = await asyncio.to_thread(build_entry, spec, self.settings, self.metrics)
            entry.batcher.start()
            self.metrics.queue_changed(spec.name, 0)  # every model's queue gauge exists from the start
            self.models[spec.name] = entry
            self._statuses[spec.name] = "ready"
            logger.info("model %s ready in %.1f s", spec.name, time.perf_counter() - started)
        self.state = "ready"

    def refuse_new(self) -> None:
        """Draining: new requests get 503; what was accepted goes on."""
        self.state = "draining"
        for entry in self.models.values():
            entry.batcher.refuse_new()

    @property
    def idle(self) -> bool:
        return all(entry.batcher.idle for entry in self.models.values())

    async def drain(self, timeout: float, stop_grace: float = 2.0) -> bool:
        """Refuse new work and finish what was accepted within `timeout`; then stop the rest
        (answered 503) within `stop_grace`. True if everything finished in time."""
        self.refuse_new()
        results = await asyncio.gather(*(e.batcher.drain(timeout, stop_grace) for e in self.models.values()))
        for entry in self.models.values():
            for worker in entry.workers:
                await asyncio.to_thread(worker.close)
        return all(results)
