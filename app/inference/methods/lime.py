"""LIME: a weighted linear surrogate (Captum's Lime: Lasso, alpha 0.01, on random coalitions,
weighted by an exponential kernel of their cosine distance to the input) fitted per instance.
Tabular models: each feature is one interpretable feature. Images: superpixels (SLIC, from
scikit-image) or a regular grid of cells; a left-out segment takes the baseline's pixels."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch
from captum.attr import Lime
from pydantic import Field
from skimage.segmentation import slic
from sklearn.exceptions import ConvergenceWarning

from app.errors import InvalidInput
from app.inference.explained import TargetScalar, baseline_for
from app.inference.facts import ModelFacts
from app.inference.methods.base import Attributed, Attribution, Method, chunk, per_row, samples_for
from app.inference.methods.integrated import check_baseline_fits
from app.inference.params import Baseline, MethodParams, Runs, Seed

IMAGE_SAMPLES = 256
SEGMENTS = 50


# Where the model's output barely varies over the samples (inputs far outside its data), the Lasso
# stops at its iteration cap; its coefficients are still the answer, as Captum returns them.
warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn")


def _omitted(value: object) -> bool:
    return value is None


class LimeParams(MethodParams):
    n_samples: int = Field(200, ge=2, le=10000, description="Perturbed samples the surrogate is fitted to")
    baseline: Baseline = Field("zeros", description="What a left-out feature or segment takes")
    segments: Literal["superpixels", "grid"] | None = Field(
        None, exclude_if=_omitted, description="Images: SLIC superpixels or a grid of square cells")
    n_segments: int | None = Field(None, ge=2, le=1024, exclude_if=_omitted,
                                   description="Images: about this many segments")
    seed: Seed = 0
    runs: Runs = 1


def _defaults(facts: ModelFacts) -> dict[str, Any]:
    baseline = "mean" if facts.has_mean else "zeros"
    if facts.spatial_input:
        return {"n_samples": IMAGE_SAMPLES, "baseline": baseline, "segments": "superpixels", "n_segments": SEGMENTS}
    return {"n_samples": samples_for(facts.input_shape[-1]), "baseline": baseline}


def _check(facts: ModelFacts, prm: LimeParams) -> None:
    check_baseline_fits(facts, prm)
    if not facts.spatial_input and (prm.segments is not None or prm.n_segments is not None):
        raise InvalidInput(f"params.segments and n_segments are for image models (model '{facts.name}' is tabular)")


def segment_ids(image: np.ndarray, segments: str, n_segments: int) -> np.ndarray:
    """H x W segment ids 0..K-1 of one C x H x W image in [0, 1]: SLIC superpixels (where SLIC
    finds fewer than two, the grid), or square cells of about H x W / n_segments pixels."""
    height, width = image.shape[-2:]
    if segments == "superpixels" and image.shape[0] == 3:
        ids = slic(np.ascontiguousarray(image.transpose(1, 2, 0), dtype=np.float64), n_segments=n_segments,
                   compactness=10.0, start_label=0)
        if ids.max() >= 1:
            return np.asarray(ids, dtype=np.int64)
    side = max(1, round(math.sqrt(height * width / n_segments)))
    rows, cols = np.arange(height)[:, None] // side, np.arange(width)[None, :] // side
    return np.asarray(rows * (-(-width // side)) + cols, dtype=np.int64)


def _lime(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor, prm: LimeParams, max_rows: int) -> Attributed:
    lime = Lime(forward)

    def run(xi: torch.Tensor, ti: torch.Tensor) -> Attribution:
        mask = None
        if xi.dim() == 4:
            assert prm.segments is not None and prm.n_segments is not None
            ids = segment_ids(xi[0].detach().float().cpu().numpy(), prm.segments, prm.n_segments)
            mask = torch.from_numpy(ids).to(xi.device)[None, None]
        attr = lime.attribute(xi, baselines=baseline_for(forward.model, xi, prm.baseline),
                              additional_forward_args=(ti,), feature_mask=mask, n_samples=prm.n_samples,
                              perturbations_per_eval=chunk(1, prm.n_samples, max_rows))
        return attr, None

    return per_row(run, prm.seed, x, targets, prm.runs)


LIME = Method("lime", frozenset({"tabular", "image"}), LimeParams, _lime, passes=lambda prm, shape: prm.n_samples,
              stochastic=True, defaults=_defaults, check=_check)
