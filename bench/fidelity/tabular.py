"""Tabular models: integrated gradients to a tolerance against fixed steps, and how Kernel SHAP's
ranking approaches exact Shapley values as its samples grow."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import numpy as np
import torch
from captum.attr import KernelShap, ShapleyValueSampling
from scipy.stats import spearmanr

from app.inference.explained import TargetScalar, baseline_for
from app.inference.methods.refine import DEFAULT_MAX_STEPS, bound, levels
from bench.common import log
from bench.fidelity.images import SEED
from bench.fidelity.models import explain, loaded, params
from models import train
from models.shapes import generate

TABULAR = ("breast-cancer", "purchase", "diabetes")
SAMPLES = (200, 500, 1000, 2000)
EXACT_UP_TO = 12
"""Features up to which Shapley values are computed exactly (2^features coalitions)."""
PERMUTATIONS = 3000


def held_out(name: str, n: int) -> np.ndarray:
    """Rows the model was not trained on (models/train.py's splits; purchase: fresh draws)."""
    if name == "breast-cancer":
        rows = train._bc_data()[2]
    elif name == "diabetes":
        rows = train._diabetes_data()[2]
    elif name == "purchase":
        rows = train.purchase_data(seed=31, rows=n)[0]
    else:
        rows = np.stack([np.asarray(s.image, dtype=np.float32).transpose(2, 0, 1) / 255.0
                         for s in generate(n, SEED + 1)])
    return np.ascontiguousarray(rows[:n], dtype=np.float32)


def convergence(n_rows: int) -> list[dict[str, Any]]:
    """Per model and baseline: the share within 1% at 32 steps, and "auto"'s convergence and passes."""
    out = []
    for name in (*TABULAR, "shapes"):
        model = loaded(name)
        x = held_out(name, n_rows if name != "shapes" else max(4, n_rows // 2))
        none = (None,) * len(x)
        for base in ("zeros", "mean"):
            log(f"fidelity: integrated gradients to a tolerance, {name}, {base} baseline")
            fixed = explain(model, x, none, "integrated_gradients", params(model, "integrated_gradients",
                                                                            {"n_steps": 32, "baseline": base}))
            auto = explain(model, x, none, "integrated_gradients", params(model, "integrated_gradients",
                                                                           {"n_steps": "auto", "baseline": base}))
            forward = TargetScalar(model)
            xt, targets = torch.from_numpy(x), torch.from_numpy(fixed.targets)
            chosen = baseline_for(model, xt, base)
            start_in = chosen if isinstance(chosen, torch.Tensor) else torch.full_like(xt, chosen)
            with torch.no_grad():
                allowed = bound(0.01, forward(xt, targets), forward(start_in, targets)).numpy()
            assert fixed.deltas is not None and auto.steps is not None and auto.converged is not None
            passes = [sum(s for s in levels(DEFAULT_MAX_STEPS) if s <= int(used)) + 2 for used in auto.steps]
            out.append({"model": name, "baseline": base, "rows": len(x),
                        "within_at_32": float((np.abs(fixed.deltas) <= allowed).mean()),
                        "converged_auto": float(auto.converged.mean()), "mean_passes": float(np.mean(passes)),
                        "median_passes": float(np.median(passes)), "most_passes": int(max(passes))})
    return out


def _exact_shapley(forward: TargetScalar, x: torch.Tensor, base: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Shapley values of one row from every coalition (features outside it take the baseline's values)."""
    d = x.shape[1]
    masks = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))
    with torch.no_grad():
        value = forward(masks * x + (1 - masks) * base, target.expand(len(masks))).double().numpy()
    index = {tuple(int(v) for v in m): i for i, m in enumerate(masks.tolist())}
    phi = np.zeros(d)
    for mask, i in index.items():
        size = sum(mask)
        for j in (j for j in range(d) if not mask[j]):
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            phi[j] += weight * (value[index[(*mask[:j], 1, *mask[j + 1:])]] - value[i])
    return phi


def kernel_shap_ranking(n_rows: int) -> list[dict[str, Any]]:
    """Median (and lowest) Spearman correlation of Kernel SHAP with Shapley values, by samples."""
    out = []
    for name in TABULAR:
        model = loaded(name)
        forward = TargetScalar(model)
        x = torch.from_numpy(held_out(name, n_rows))
        prm = params(model, "kernel_shap")
        base = baseline_for(model, x[:1], prm.baseline)  # type: ignore[attr-defined]
        base_t = base if isinstance(base, torch.Tensor) else torch.full_like(x[:1], base)
        with torch.no_grad():
            scores = model.module(x)
        targets = scores.argmax(dim=1) if model.out_width > 1 else (scores[:, 0] > 0.5).long()
        if model.spec.task == "regression":
            targets = torch.zeros(len(x), dtype=torch.long)
        samples = sorted({*SAMPLES, prm.n_samples})  # type: ignore[attr-defined]
        found: dict[int, list[float]] = {n: [] for n in samples}
        log(f"fidelity: Kernel SHAP against Shapley values, {name}")
        for i in range(len(x)):
            xi, ti = x[i : i + 1], targets[i : i + 1]
            if x.shape[1] <= EXACT_UP_TO:
                reference = _exact_shapley(forward, xi, base_t, ti)
            else:
                torch.manual_seed(0)
                reference = ShapleyValueSampling(forward).attribute(
                    xi, baselines=base_t, additional_forward_args=(ti,), n_samples=PERMUTATIONS,
                    perturbations_per_eval=512)[0].numpy()
            for n in samples:
                torch.manual_seed(0)
                np.random.seed(0)
                random.seed(0)
                estimate = KernelShap(forward).attribute(xi, baselines=base_t, additional_forward_args=(ti,),
                                                         n_samples=n, perturbations_per_eval=min(n, 512))[0].numpy()
                found[n].append(float(np.nan_to_num(spearmanr(estimate, reference).statistic)))
        out.append({"model": name, "features": int(x.shape[1]), "rows": len(x), "default": prm.n_samples,  # type: ignore[attr-defined]
                    "reference": "exact" if x.shape[1] <= EXACT_UP_TO else f"sampling, {PERMUTATIONS} permutations",
                    "spearman": {str(n): {"median": float(np.median(v)), "lowest": float(np.min(v))}
                                 for n, v in found.items()}})
    return out
