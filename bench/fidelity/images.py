"""Every image method on generated `shapes` images: does the map point at the shape, does it hold
the evidence (deletion / insertion AUC), does it depend on the model (randomisation), at what cost."""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from app.inference import faithfulness
from app.inference.loading import LoadedModel
from app.inference.methods import METHODS
from bench.common import log
from bench.fidelity.models import chunk_rows, explain, loaded, params
from models.shapes import ShapeSample, generate

SEED = 5150  # not a training (100-102), test (999) or unit-test seed


def _pixels(samples: list[ShapeSample]) -> np.ndarray:
    return np.stack([np.asarray(s.image, dtype=np.float32).transpose(2, 0, 1) / 255.0 for s in samples])


def _maps(attributions: np.ndarray) -> np.ndarray:
    """|channels summed|: what the overlay shows (with sign "absolute"), per image."""
    return np.abs(attributions.sum(axis=1))


def pointing(maps: np.ndarray, samples: list[ShapeSample]) -> float:
    """Share of images whose map's peak (the first in raster order among equal values) is in the box."""
    hits = []
    for m, sample in zip(maps, samples, strict=True):
        row, col = np.unravel_index(int(np.argmax(m)), m.shape)
        x0, y0, x1, y1 = sample.box
        hits.append(x0 <= col < x1 and y0 <= row < y1)
    return float(np.mean(hits))


def randomized(model: LoadedModel, everything: bool) -> LoadedModel:
    """A copy with re-initialised weights: the last conv block and the classifier (`everything`:
    every layer), as in the sanity check of Adebayo et al."""
    module = copy.deepcopy(model.module)
    net = module.net
    torch.manual_seed(1234)
    layers = list(net.features) if everything else list(net.features)[8:]
    for layer in [*layers, net.classifier]:
        if isinstance(layer, nn.Conv2d | nn.BatchNorm2d | nn.Linear):
            layer.reset_parameters()
        if isinstance(layer, nn.BatchNorm2d):
            layer.reset_running_stats()
    return dataclasses.replace(model, module=module)


def rank_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Spearman correlation of two sets of maps (a constant map: 0)."""
    values = []
    for x, y in zip(a, b, strict=True):
        x, y = x.ravel(), y.ravel()
        values.append(0.0 if np.ptp(x) == 0 or np.ptp(y) == 0 else float(spearmanr(x, y).statistic))
    return float(np.mean(values))


def _areas(model: LoadedModel, x: np.ndarray, maps: np.ndarray, targets: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(x), 25):
        rows = slice(start, start + 25)
        curves = faithfulness.curves(model, torch.from_numpy(x[rows]), torch.from_numpy(maps[rows][:, None]),
                                     torch.from_numpy(targets[rows]), chunk_rows(model))
        out.append(faithfulness.areas(curves))
    return np.concatenate(out)


def _row(name: str, model: LoadedModel, x: np.ndarray, samples: list[ShapeSample], maps: np.ndarray,
         targets: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
    areas = _areas(model, x, maps, targets)
    return {"method": name, "pointing": pointing(maps, samples), "deletion_auc": float(areas[:, 0].mean()),
            "insertion_auc": float(areas[:, 1].mean()), **extra}


def shapes_table(n_images: int) -> dict[str, Any]:
    """One row per image method (at the `shapes` model's defaults), then two reference maps."""
    model = loaded("shapes")
    samples = generate(n_images, SEED)
    x = _pixels(samples)
    truth = tuple(s.label for s in samples)
    scrambled = {"top": randomized(model, everything=False), "all": randomized(model, everything=True)}
    rows = []
    for name, method in METHODS.items():
        if not method.offered_for("image", model.facts):
            continue
        prm = params(model, name)
        log(f"fidelity: {name} on {n_images} shapes images")
        started = time.perf_counter()
        result = explain(model, x, truth, name, prm)
        seconds = (time.perf_counter() - started) / n_images
        maps = _maps(result.attributions)
        sanity = {}
        for which, other in scrambled.items():
            again = explain(other, x, truth, name, prm)
            sanity[f"randomised_{which}"] = rank_similarity(maps, _maps(again.attributions))
        rows.append(_row(name, model, x, samples, maps, result.targets, {
            "params": prm.model_dump(mode="json"), "passes": METHODS[name].cost(prm, model.facts.input_shape),
            "seconds_per_image": seconds, **sanity}))
    targets = np.asarray(truth, dtype=np.int64)
    rng = np.random.default_rng(0)
    box = np.zeros((n_images, 128, 128), dtype=np.float32)
    for i, sample in enumerate(samples):
        x0, y0, x1, y1 = sample.box
        box[i, y0:y1, x0:x1] = 1.0 + 0.01 * rng.random((y1 - y0, x1 - x0))
    references = [("random map", rng.random((n_images, 128, 128)).astype(np.float32)), ("the shape's box", box)]
    for name, maps in references:
        rows.append(_row(name, model, x, samples, maps, targets, {"reference": True}))
    with torch.no_grad():
        accuracy = float((model.module(torch.from_numpy(x)).argmax(dim=1).numpy() == targets).mean())
    return {"images": n_images, "seed": SEED, "accuracy": accuracy, "rows": rows}
