"""Rendering jobs run in the CPU thread pool: image overlays/heatmaps and tabular charts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from app.inference.inputs import DecodedImage
from app.render import (
    Placement,
    RenderSpec,
    contribution_chart,
    data_uri,
    encode_png,
    heatmap_rgba,
    overlay,
    overlay_and_heatmap,
    summary_sentence,
)
from app.schemas import RenderOptions


@dataclass(frozen=True)
class ImageRender:
    image: DecodedImage
    attribution: NDArray[np.float32]
    """C x H x W (or 1 x H x W) at the model's input size."""
    options: RenderOptions
    outputs: set[str]


def render_image(job: ImageRender) -> dict[str, Any]:
    """The image outputs asked for; `_png` carries the raw overlay bytes for `Accept: image/png`."""
    attr = job.attribution.sum(axis=0) if job.attribution.ndim == 3 else job.attribution
    spec = RenderSpec(colormap=job.options.colormap, alpha=job.options.alpha,
                      sign=job.options.sign, max_size=job.options.max_size)
    placement = Placement(job.image.image.size, job.image.crop_box)
    out: dict[str, Any] = {}
    blended: Image.Image | None
    heat: Image.Image | None
    if {"overlay", "heatmap"} <= job.outputs:
        blended, heat = overlay_and_heatmap(job.image.image, attr, placement, spec)
    else:
        blended = overlay(job.image.image, attr, placement, spec) if "overlay" in job.outputs else None
        heat = heatmap_rgba(attr, placement, spec) if "heatmap" in job.outputs else None
    if blended is not None:
        png = encode_png(blended)
        out["overlay"] = data_uri(png)
        out["_png"] = png
    if heat is not None:
        out["heatmap"] = data_uri(encode_png(heat))
    if "attributions" in job.outputs:
        out["attributions"] = np.round(attr.astype(np.float64), 7).tolist()
    return out


def render_tabular(features: Sequence[str], values: NDArray[np.float64],
                   attributions: NDArray[np.float32], headline: str, outputs: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    attrs = [float(a) for a in attributions]
    if "chart" in outputs:
        png = contribution_chart(features, [float(v) for v in values], attrs, title=headline)
        out["chart"] = data_uri(png)
    if "summary" in outputs:
        out["summary"] = summary_sentence(headline, features, attrs)
    return out
