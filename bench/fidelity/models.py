"""The demo models as the service loads them, and what the benchmark runs them with."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from app.config import Settings
from app.inference.catalog import load_catalog
from app.inference.chunking import cpu_chunk_rows
from app.inference.engine import ExplainResult, ExplainWork, run_batch
from app.inference.loading import LoadedModel, load_model
from app.inference.methods import METHODS, model_defaults
from app.inference.params import MethodParams, resolve_params
from bench.common import ROOT

CATALOG = ROOT / "models" / "catalog.toml"


@functools.cache
def loaded(name: str) -> LoadedModel:
    specs = {spec.name: spec for spec in load_catalog(CATALOG)}
    return load_model(specs[name], torch.device("cpu"))


def chunk_rows(model: LoadedModel) -> int:
    """The service's default rows per forward on the CPU (CPU_CHUNK_MB, MAX_BATCH_ROWS at their defaults)."""
    fields = Settings.model_fields
    return cpu_chunk_rows(model.facts.bytes_per_row, fields["cpu_chunk_mb"].default << 20,
                          fields["max_batch_rows"].default)


def params(model: LoadedModel, method: str, request: dict[str, Any] | None = None) -> MethodParams:
    return resolve_params(METHODS[method].params, model_defaults(model.spec, model.facts, method), request or {})


def explain(model: LoadedModel, x: np.ndarray, targets: tuple[int | None, ...], method: str,
            prm: MethodParams, batch: int = 25) -> ExplainResult:
    """The engine's answer for every row, `batch` instances per call (as concurrent requests would be)."""
    parts = []
    for start in range(0, len(x), batch):
        rows = np.ascontiguousarray(x[start : start + batch], dtype=np.float32)
        [result] = run_batch(model, [ExplainWork(rows, targets[start : start + batch], method, prm)], chunk_rows(model))
        if not isinstance(result, ExplainResult):
            raise RuntimeError(f"{method}: {result}")
        parts.append(result)
    first = parts[0]

    def joined(name: str) -> Any:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate(values)

    return ExplainResult(np.concatenate([p.scores for p in parts]), np.concatenate([p.targets for p in parts]),
                         np.concatenate([p.attributions for p in parts]), joined("deltas"), joined("steps"),
                         joined("converged"), joined("spread") if first.spread is not None else None)
