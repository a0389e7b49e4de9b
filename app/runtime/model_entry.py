"""One served model: its spec turned into replicas on a device, workers that own them (a replica
each, or several as lanes a batch is split across), and the batcher in front of them, behind one
narrow interface: `submit(work, rows, deadline)`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.errors import CatalogError
from app.inference.catalog import ModelSpec
from app.inference.chunking import cpu_chunk_rows
from app.inference.engine import Result, Work, run_batch, work_rows
from app.inference.facts import ModelFacts
from app.inference.loading import LoadedModel, load_model, resolve_device
from app.inference.methods import METHODS, Method, model_defaults, offered_methods, resolve
from app.inference.params import MethodParams, resolve_params
from app.kinds import InputKind
from app.metrics import Metrics
from app.runtime.batcher import Batcher, Completed, Limits
from app.runtime.heap import trim_after
from app.runtime.pool import Lanes, RowBudget, Worker
from app.runtime.threads import CpuThreads, Occupancy, cpu_layout
from app.schemas import MethodInfo, ModelInfo

logger = logging.getLogger(__name__)


@dataclass
class ModelEntry:
    spec: ModelSpec
    kind: InputKind
    replicas: list[LoadedModel]
    workers: list[Worker[Work, Result]]
    batcher: Batcher[Work]
    methods: list[str]
    """The methods offered, in the catalog's (or the table's) order."""
    default_method: str
    chunk_rows: int
    """Work rows per Captum chunk (each replica halves its own on out-of-memory)."""
    info: ModelInfo

    @property
    def primary(self) -> LoadedModel:
        return self.replicas[0]

    @property
    def facts(self) -> ModelFacts:
        return self.primary.facts

    @property
    def classes(self) -> int:
        labels = self.primary.labels
        return len(labels) if labels else self.primary.out_width

    def method(self, name: str | None, params: dict[str, Any]) -> tuple[Method, MethodParams]:
        """The method (default: the model's) and its resolved parameters, checked against the model."""
        return resolve(self.spec, self.facts, self.methods, name or self.default_method, params)

    async def submit(self, work: Work, rows: int, deadline: float) -> Completed:
        """Queue `work` (costing `rows` work rows) and wait for its result until `deadline`."""
        return await self.batcher.submit(work, work.key, rows, deadline)


def _method_info(spec: ModelSpec, facts: ModelFacts, name: str) -> MethodInfo:
    """A method as ModelInfo lists it: its resolved default params and their JSON schema (types,
    bounds, enums), whose defaults are this model's (catalog `method_params` included)."""
    method = METHODS[name]
    params = resolve_params(method.params, model_defaults(spec, facts, name), {}).model_dump(mode="json")
    schema = method.params.model_json_schema()
    for key, prop in schema.get("properties", {}).items():
        if key in params:
            prop["default"] = params[key]
    return MethodInfo(name=name, params=params, params_schema=schema)  # type: ignore[arg-type]


def _checked_methods(spec: ModelSpec, facts: ModelFacts) -> tuple[list[str], str]:
    for name in spec.methods or []:
        if name not in METHODS:
            raise CatalogError(f"catalog entry '{spec.name}': methods: unknown method '{name}'")
    offered = offered_methods(spec, facts)
    default = spec.default_method or (offered[0] if offered else "")
    if default not in offered:
        raise CatalogError(f"catalog entry '{spec.name}': default_method: '{default}' is not offered "
                           f"(offered: {', '.join(offered)})")
    for name, overrides in spec.method_params.items():
        if name not in METHODS:
            raise CatalogError(f"catalog entry '{spec.name}': method_params: unknown method '{name}'")
        try:
            resolve_params(METHODS[name].params, {**METHODS[name].defaults(facts), **overrides}, {})
        except Exception as exc:
            raise CatalogError(f"catalog entry '{spec.name}': method_params.{name}: {exc}") from exc
    return offered, default


def _chunk_rows(settings: Settings, model: LoadedModel, max_rows: int) -> int:
    """Work rows per Captum chunk: on a CPU capped by the size of the largest activation."""
    if model.device.type != "cpu" or settings.cpu_chunk_mb <= 0:
        return max_rows
    per_row = model.facts.bytes_per_row
    rows = cpu_chunk_rows(per_row, settings.cpu_chunk_mb << 20, max_rows)
    if rows < max_rows:
        logger.info("model %s: chunks of at most %d rows on the CPU (largest activation %.1f MiB per row, "
                    "CPU_CHUNK_MB=%d)", model.spec.name, rows, per_row / 2**20, settings.cpu_chunk_mb)
    return rows


def _lane(replica: LoadedModel, budget: RowBudget) -> Callable[[list[Work]], list[Any]]:
    def compute(work: list[Work]) -> list[Any]:
        try:
            return list(budget.run(lambda rows: run_batch(replica, work, rows)))
        finally:  # large chunks' activations go back to the system, not to the heap's free lists
            trim_after(budget.rows * replica.facts.bytes_per_row)

    return compute


def _layout(settings: Settings, first: LoadedModel) -> tuple[int, int]:
    """Workers, and lanes per worker: WORKERS_PER_DEVICE workers of one lane where it is set;
    else one worker of one lane on a GPU, and on a CPU by the size of the model's rows
    (app/runtime/threads.py)."""
    if settings.workers_per_device:
        return settings.workers_per_device, 1
    return cpu_layout(first.facts.flops_per_row) if first.device.type == "cpu" else (1, 1)


def build_entry(spec: ModelSpec, settings: Settings, metrics: Metrics) -> ModelEntry:
    """Load the model on its device, copy it into replicas, and put a worker and a batcher in front."""
    device = resolve_device(spec.device or settings.device)
    first = load_model(spec, device)
    methods, default = _checked_methods(spec, first.facts)
    # Copies, not rebuilds: a model without weights (random init) serves one function everywhere.
    count, lanes = _layout(settings, first)
    replicas = [first] + [first.replica() for _ in range(count * lanes - 1)]
    if len(replicas) > 1:
        logger.info("model %s: %d workers of %d lanes on %s", spec.name, count, lanes, device)
    max_rows = spec.max_batch_rows or settings.max_batch_rows
    chunk_rows = _chunk_rows(settings, first, max_rows)
    workers = []
    occupancy = Occupancy()
    for i in range(count):
        name = f"{spec.name}-{i}"
        policy = (CpuThreads.for_worker(count, lanes, first.facts.flops_per_row, occupancy=occupancy)
                  if device.type == "cpu" else None)
        own = Lanes(name, [_lane(r, RowBudget(spec.name, chunk_rows)) for r in replicas[i * lanes:(i + 1) * lanes]],
                    policy, work_rows)
        workers.append(Worker(name, own.run, own))
    limits = Limits(max_items=spec.max_batch_size or settings.max_batch_size, max_rows=max_rows,
                    max_delay_s=settings.max_batch_delay_ms / 1000.0, max_queue_rows=settings.max_queue,
                    shared=device.type == "cpu")
    batcher: Batcher[Work] = Batcher(spec.name, [w.handle for w in workers], limits, metrics)
    kind = spec.input_kind
    info = ModelInfo(name=spec.name, kind=spec.kind, task=spec.task, labels=first.labels,  # type: ignore[arg-type]
                     device=str(device), ready=True, default_method=default,  # type: ignore[arg-type]
                     methods=[_method_info(spec, first.facts, name) for name in methods], **kind.describe(spec))
    return ModelEntry(spec, kind, replicas, workers, batcher, methods, default, chunk_rows, info)
