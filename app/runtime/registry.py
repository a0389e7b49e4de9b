"""The resident models: catalog -> replicas on devices -> one batcher and worker set per model."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from app.config import Settings
from app.errors import CatalogError, ModelNotFound, NotReady, did_you_mean, quoted
from app.inference.catalog import ModelSpec, load_catalog
from app.inference.chunking import activation_bytes_per_row, cpu_chunk_rows
from app.inference.engine import Result, Work, run_batch
from app.inference.loading import LoadedModel, describe, load_model, resolve_device
from app.inference.methods import METHODS, model_overrides, supported_methods
from app.inference.params import resolve_params
from app.metrics import Metrics
from app.runtime.batcher import Batcher, Limits
from app.runtime.pool import CpuThreads, RowBudget, Worker

logger = logging.getLogger(__name__)

State = Literal["starting", "ready", "draining"]


@dataclass
class ModelEntry:
    spec: ModelSpec
    replicas: list[LoadedModel]
    workers: list[Worker[Work, Result]]
    batcher: Batcher[Work]
    methods: list[str]
    chunk_rows: int
    """Work rows per Captum chunk (each replica halves its own on out-of-memory)."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> LoadedModel:
        return self.replicas[0]


def _method_info(spec: ModelSpec, name: str) -> dict[str, Any]:
    """A method as ModelInfo lists it: its resolved default params and their JSON schema (types,
    bounds, enums), whose defaults are this model's (catalog `method_params` included)."""
    method = METHODS[name]
    params = resolve_params(method.params, model_overrides(spec, name), {}).model_dump(mode="json")
    schema = method.params.model_json_schema()
    for key, prop in schema.get("properties", {}).items():
        if key in params:
            prop["default"] = params[key]
    return {"name": name, "params": params, "schema": schema}


def _model_info(spec: ModelSpec, model: LoadedModel, methods: list[str], default: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": spec.name, "kind": spec.kind, "task": spec.task, "labels": model.labels,
        "features": None, "input": None, "device": str(model.device), "ready": True, "default_method": default,
        "methods": [_method_info(spec, name) for name in methods],
    }
    info.update(describe(spec))
    return info


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
            raise ModelNotFound(f"unknown model {quoted(name)}{did_you_mean(name, list(self.models))}")
        if self.state == "draining":
            raise NotReady("the service is shutting down", headers={"Retry-After": "5"})
        return entry

    async def load(self) -> None:
        specs = load_catalog(self.settings.models)
        self._statuses = {spec.name: "loading" for spec in specs}
        for spec in specs:
            started = time.perf_counter()
            entry = await asyncio.to_thread(self._build, spec)
            entry.batcher.start()
            self.metrics.queue_changed(spec.name, 0)  # every model's queue gauge exists from the start
            self.models[spec.name] = entry
            self._statuses[spec.name] = "ready"
            logger.info("model %s ready in %.1f s", spec.name, time.perf_counter() - started)
        self.state = "ready"

    def _build(self, spec: ModelSpec) -> ModelEntry:
        methods = supported_methods(spec)
        default = spec.default_method or (methods[0] if methods else "")
        if default not in methods:
            raise CatalogError(
                f"catalog entry '{spec.name}': default_method: '{default}' is not offered "
                f"(offered: {', '.join(methods)})")
        for name in spec.methods or []:
            if name not in METHODS:
                raise CatalogError(f"catalog entry '{spec.name}': methods: unknown method '{name}'")
        for name, overrides in spec.method_params.items():
            if name not in METHODS:
                raise CatalogError(f"catalog entry '{spec.name}': method_params: unknown method '{name}'")
            try:
                resolve_params(METHODS[name].params, overrides, {})
            except Exception as exc:
                raise CatalogError(f"catalog entry '{spec.name}': method_params.{name}: {exc}") from exc
        device = resolve_device(spec.device or self.settings.device)
        first = load_model(spec, device)
        # Copies, not rebuilds: a model without weights (random init) serves one function everywhere.
        replicas = [first] + [replace(first, module=copy.deepcopy(first.module))
                              for _ in range(self.settings.workers_per_device - 1)]
        max_rows = spec.max_batch_rows or self.settings.max_batch_rows
        chunk_rows = self._chunk_rows(first, max_rows)
        workers: list[Worker[Work, Result]] = []
        for i, replica in enumerate(replicas):
            budget = RowBudget(spec.name, chunk_rows)
            threads = CpuThreads.for_replicas(len(replicas)) if device.type == "cpu" else None

            def run(work: list[Work], replica: LoadedModel = replica, budget: RowBudget = budget,
                    threads: CpuThreads | None = threads) -> list[Result]:
                if threads is not None:
                    threads.for_batch(len(work))
                return list(budget.run(lambda rows: run_batch(replica, work, rows)))

            workers.append(Worker(f"{spec.name}-{i}", run))
        limits = Limits(
            max_items=spec.max_batch_size or self.settings.max_batch_size,
            max_rows=max_rows,
            max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
            max_queue_rows=self.settings.max_queue,
        )
        batcher: Batcher[Work] = Batcher(spec.name, [w.handle for w in workers], limits, self.metrics)
        entry = ModelEntry(spec, replicas, workers, batcher, methods, chunk_rows)
        entry.info = _model_info(spec, replicas[0], methods, default)
        return entry

    def _chunk_rows(self, model: LoadedModel, max_rows: int) -> int:
        """Work rows per Captum chunk: on a CPU capped by the size of the largest activation."""
        if model.device.type != "cpu" or self.settings.cpu_chunk_mb <= 0:
            return max_rows
        per_row = activation_bytes_per_row(model)
        rows = cpu_chunk_rows(per_row, self.settings.cpu_chunk_mb << 20, max_rows)
        if rows < max_rows:
            logger.info("model %s: chunks of at most %d rows on the CPU (largest activation %.1f MiB "
                        "per row, CPU_CHUNK_MB=%d)", model.spec.name, rows, per_row / 2**20,
                        self.settings.cpu_chunk_mb)
        return rows

    async def drain(self) -> bool:
        """Refuse new work and finish queued and running work within the grace period."""
        self.state = "draining"
        grace = self.settings.shutdown_grace_s
        results = await asyncio.gather(*(e.batcher.drain(grace) for e in self.models.values()))
        for entry in self.models.values():
            for worker in entry.workers:
                await asyncio.to_thread(worker.close)
        return all(results)
