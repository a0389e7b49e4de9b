"""Integrated gradients to a tolerance (`"n_steps": "auto"`): the steps are refined, for the rows
whose completeness is not yet within the tolerance only, until it is or a step cap is reached.

Each level runs Captum's IntegratedGradients at twice the previous level's steps (16, 32, 64, ...
up to `max_steps`) on the rows still open, all of the batch's open rows together, in chunks of at
most `max_rows` scaled inputs. A row stops at the first level whose convergence delta
(sum(attributions) - (F(x) - F(baseline))) is within the tolerance; its answer is that level's
attribution, exactly what Captum gives at that many steps. F(x) and F(baseline) are computed once
(`TargetScalar.endpoints`) and serve every level. Gauss-Legendre nodes do not nest, so a level
reuses no gradient of the previous one; the nested Riemann rules could, but at a tolerance of 1%
on the demo models they need 3-5x more steps than Gauss-Legendre restarting (docs/api.md,
"Integrated gradients to a tolerance"), so every rule restarts.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import IntegratedGradients

from app.inference.explained import TargetScalar, baseline_for, baseline_rows, convergence_delta
from app.inference.interrupt import checkpoint
from app.inference.methods.base import Attributed, chunk, summed
from app.inference.methods.paths import BroadcastPathIntegratedGradients

FIRST_LEVEL = 16
DEFAULT_TOLERANCE = 0.01
DEFAULT_MAX_STEPS = 128
NEAR_EQUAL = 0.01
"""Outputs that nearly agree: |F(x) - F(baseline)| counts as at least this share of the larger
|output| (and at least `TINY`), so that float noise alone never leaves a row unconverged."""
TINY = 1e-6


def levels(max_steps: int) -> list[int]:
    """The step counts tried in turn: 16, 32, ... doubling, the last one `max_steps`."""
    steps = min(FIRST_LEVEL, max_steps)
    out = []
    while steps < max_steps:
        out.append(steps)
        steps *= 2
    return [*out, max_steps]


def auto_passes(max_steps: int) -> int:
    """The worst case per instance: every level, and the two forwards of F(x) and F(baseline)."""
    return sum(levels(max_steps)) + 2


def bound(tolerance: float, end: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Per row, the largest |delta| that counts as converged."""
    gap = (end - start).abs()
    floor = torch.maximum(end.abs(), start.abs()) * NEAR_EQUAL
    return tolerance * torch.clamp(torch.maximum(gap, floor), min=TINY)


def at_steps(ig: IntegratedGradients, x: torch.Tensor, base: torch.Tensor | float, targets: torch.Tensor,
             steps: int, rule: str, max_rows: int) -> torch.Tensor:
    """Captum's IG at `steps` for these rows, at most `max_rows` rows (x steps, by Captum) per forward."""
    parts = []
    for i in range(0, x.shape[0], max_rows):
        checkpoint()
        rows = slice(i, i + max_rows)
        xs = x[rows]
        parts.append(ig.attribute(xs, baselines=baseline_rows(base, rows),
                                  additional_forward_args=(targets[rows],), n_steps=steps, method=rule,
                                  internal_batch_size=chunk(xs.shape[0], steps, max_rows)))
    return torch.cat(parts)


def refined(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor, prm: Any, max_rows: int) -> Attributed:
    """Integrated gradients at the fewest levels' steps that meet `prm.tolerance` per row."""
    ig = summed(BroadcastPathIntegratedGradients(forward))
    base = baseline_for(forward.model, x, prm.baseline)
    end, start = forward.endpoints(x, base, targets, max_rows)
    limit = bound(prm.tolerance, end, start)
    attr = torch.zeros_like(x)
    delta = torch.zeros_like(end)
    used = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    converged = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    todo = torch.arange(x.shape[0], device=x.device)
    for steps in levels(prm.max_steps):
        rows = todo
        attr_rows = at_steps(ig, x[rows], baseline_rows(base, rows), targets[rows], steps, prm.method, max_rows)
        attr[rows] = attr_rows
        delta[rows] = convergence_delta(attr_rows, end[rows], start[rows])
        used[rows] = steps
        met = delta[rows].abs() <= limit[rows]
        converged[rows[met]] = True
        todo = rows[~met]
        if todo.numel() == 0:
            break
    return Attributed(attr, delta, used, converged)
