"""Our service against TorchServe on the same resnet18 (224 px, seeded random weights), same images,
same load generator, servers one at a time.

Each repetition starts every server in turn (our service, then each TorchServe variant; the
second repetition in the reverse order), runs the four cells against it (predict at concurrency 8
and 32, integrated gradients with n_steps 15 at 1 and 8) and stops it. The first time each server
is up, one image's prediction and explanation are kept, and TorchServe's are compared with ours.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.cells import Client, measure
from bench.common import log
from bench.servers import Server, start_ours
from bench.torchserve.server import Variant, start_torchserve

__all__ = ["CELLS", "Cell", "agreement", "answers", "request_bodies", "run_comparison"]

MODEL = "resnet18"
N_STEPS = 15
"""TorchServe's VisionHandler.get_insights: IntegratedGradients(...).attribute(x, target=target, n_steps=15)."""
TARGET = 0
"""TorchServe's BaseHandler.explain_handle explains the request's "target", default 0."""


@dataclass(frozen=True)
class Cell:
    kind: str
    """"predict" or "ig"."""
    concurrency: int
    duration_s: float

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.concurrency}"


CELLS = (Cell("predict", 8, 10.0), Cell("predict", 32, 10.0), Cell("ig", 1, 20.0), Cell("ig", 8, 30.0))


def request_bodies(pngs: list[bytes]) -> dict[str, dict[str, list[bytes]]]:
    """kind -> server ("ours", "torchserve") -> bodies, all of the same images. TorchServe takes the
    image bytes as the body; ours takes them base64 in JSON, asking for what TorchServe answers:
    the top 5 classes, and the attributions themselves (no overlay)."""
    def ours(png: bytes, **fields: Any) -> bytes:
        return json.dumps({"instances": [{"b64": base64.b64encode(png).decode("ascii")}], **fields}).encode()

    return {
        "predict": {"ours": [ours(p, top_k=5) for p in pngs], "torchserve": list(pngs)},
        "ig": {"ours": [ours(p, method="integrated_gradients", params={"n_steps": N_STEPS, "baseline": "zeros"},
                             target=TARGET, outputs=["attributions"]) for p in pngs],
               "torchserve": list(pngs)},
    }


def _route(side: str, kind: str) -> tuple[str, dict[str, str]]:
    if side == "ours":
        return f"/v1/models/{MODEL}/{'predict' if kind == 'predict' else 'explain'}", {}
    return f"/{'predictions' if kind == 'predict' else 'explanations'}/{MODEL}", {"content-type": "image/png"}


def answers(server: Server, side: str, bodies: dict[str, dict[str, list[bytes]]], image: int = 0) -> dict[str, Any]:
    """An image's top 5 (index, probability) and IG attributions (channels summed), from one server."""
    out: dict[str, Any] = {}
    for kind in ("predict", "ig"):
        path, headers = _route(side, kind)
        reply = httpx.post(server.url + path, content=bodies[kind][side][image], headers=headers or
                           {"content-type": "application/json"}, timeout=600, trust_env=False)
        reply.raise_for_status()
        data = reply.json()
        if kind == "predict" and side == "ours":
            out["top5"] = [(k["index"], k["score"]) for k in data["predictions"][0]["top_k"]]
        elif kind == "predict":
            out["top5"] = [(int(k), float(v)) for k, v in data.items()]
        elif side == "ours":
            out["attributions"] = np.asarray(data["explanations"][0]["attributions"], dtype=np.float64)
        else:
            out["attributions"] = np.asarray(data, dtype=np.float64).sum(axis=0)
    return out


def agreement(ours: dict[str, Any], theirs: dict[str, Any], tolerance: float = 5e-2,
              min_correlation: float = 0.9999) -> dict[str, Any]:
    """Same top 5 in the same order, probabilities within 1e-4, attributions within `tolerance` of
    the largest attribution and correlated at least `min_correlation` over the pixels. Float
    summation orders differ (batching, chunks), and so does the network: ours runs channels-last
    on the CPU with BatchNorm folded into the convolutions (weights rounded to float32 once more),
    TorchServe contiguous and unfolded. Through the 20 layers of a randomly initialised resnet18,
    where a ReLU near zero flips on a rounding, integrated gradients' pixels move by up to 1.1e-3
    of the largest from the layout alone and 3.4e-2 from the folding alone (correlation 0.99999;
    1.5e-3 with the same weights in float64 arithmetic), on the benchmark's first image; 1.5e-7
    between two contiguous runs (bench/results/history.md)."""
    same_top5 = [i for i, _ in ours["top5"]] == [i for i, _ in theirs["top5"]]
    prob_diff = max(abs(a - b) for (_, a), (_, b) in zip(ours["top5"], theirs["top5"], strict=True))
    a, b = ours["attributions"], theirs["attributions"]
    scale = float(np.abs(b).max()) if b.size else 0.0
    same_shape = a.shape == b.shape
    diff = float(np.abs(a - b).max()) / max(scale, 1e-12) if same_shape else None
    correlation = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if same_shape and a.size > 1 else None
    return {"same_top5": same_top5, "top5_max_prob_diff": prob_diff, "attribution_shape": list(a.shape),
            "attribution_max_rel_diff": diff, "attribution_correlation": correlation, "attribution_scale": scale,
            "tolerance": tolerance, "min_correlation": min_correlation,
            "ok": bool(same_top5 and prob_diff <= 1e-4 and diff is not None and diff <= tolerance
                       and correlation is not None and correlation >= min_correlation)}


def _run_cells(server: Server, side: str, bodies: dict[str, dict[str, list[bytes]]], cells: tuple[Cell, ...],
               client: Client, scale: float, drain: float) -> dict[str, Any]:
    out = {}
    for cell in cells:
        path, headers = _route(side, cell.kind)
        log(f"  {server.name} {cell.key}")
        res = measure(server, server.url + path, bodies[cell.kind][side], concurrency=cell.concurrency,
                      duration=cell.duration_s * scale, max_requests=1_000_000, drain=drain, client=client,
                      rows_per_request=N_STEPS if cell.kind == "ig" else 1, headers=headers or None)
        res["loadavg"] = list(os.getloadavg())
        out[cell.key] = res
        log(f"    {res['throughput_rps']:.2f} req/s, p50 {res['latency_ms'].get('p50', float('nan')):.0f} ms, "
            f"errors {res['errors'] or 0}, cores busy {res['server_cpu']['cores_busy'] or 0:.2f}")
    return out


def run_comparison(*, catalog: Path, weights_store: Path, folder: Path, variants: list[Variant], repetitions: int,
                   bodies: dict[str, dict[str, list[bytes]]], client: Client, service_env: dict[str, str],
                   cells: tuple[Cell, ...] = CELLS, scale: float = 1.0, drain: float = 120.0) -> dict[str, Any]:
    """Every server, one at a time, `repetitions` times (reversed order every other time)."""
    sides = [("ours", None), *[(v.name, v) for v in variants]]
    runs: list[dict[str, Any]] = []
    reference: dict[str, Any] | None = None
    same: dict[str, Any] = {}
    for rep in range(1, repetitions + 1):
        for name, variant in sides if rep % 2 else list(reversed(sides)):
            log(f"repetition {rep}: starting {name}")
            began = time.monotonic()
            server = (start_ours("cpu", catalog, service_env, folder) if variant is None
                      else start_torchserve(weights_store, MODEL, variant, folder / f"{name}-{rep}"))
            try:
                if variant is None:
                    server.wait_ready(600)
                start_s = time.monotonic() - began
                side = "ours" if variant is None else "torchserve"
                if variant is None and reference is None:
                    reference = answers(server, side, bodies)
                elif variant is not None and name not in same:
                    same[name] = answers(server, side, bodies)
                run = {"server": name, "repetition": rep, "start_s": round(start_s, 1),
                       "loadavg": list(os.getloadavg()),
                       "cells": _run_cells(server, side, bodies, cells, client, scale, drain)}
            finally:
                server.stop()
            runs.append(run)
    assert reference is not None
    return {"runs": runs, "same_answers": {name: agreement(reference, theirs) for name, theirs in same.items()}}
