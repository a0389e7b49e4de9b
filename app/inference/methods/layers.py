"""GradCAM: the target's gradient-weighted activation map of a spatial layer, upsampled to the
input's size (ReLU applied, as in the paper)."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerAttribution, LayerGradCam
from pydantic import Field

from app.errors import InvalidInput
from app.inference.explained import TargetScalar
from app.inference.facts import ModelFacts
from app.inference.methods.base import Attribution, Method, in_chunks
from app.inference.params import MethodParams


class GradCamParams(MethodParams):
    layer: str | None = Field(None, max_length=200, description="Module path in the model (e.g. layer4); "
                              "default: the catalog's gradcam_layer, else the last module with a spatial map")


def _layer_of(facts: ModelFacts, prm: GradCamParams) -> str:
    if prm.layer is None:
        if facts.gradcam_layer is None:
            raise InvalidInput(f"model '{facts.name}' has no module with a spatial map for gradcam")
        return facts.spatial_layer(facts.gradcam_layer)
    return facts.spatial_layer(prm.layer)


def _defaults(facts: ModelFacts) -> dict[str, Any]:
    return {"layer": facts.gradcam_layer} if facts.gradcam_layer is not None else {}


def _check(facts: ModelFacts, prm: GradCamParams) -> None:
    _layer_of(facts, prm)


def _gradcam(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor,
             prm: GradCamParams, max_rows: int) -> Attribution:
    size = tuple(x.shape[-2:])
    with forward.module.layer(_layer_of(forward.model.facts, prm)) as layer:  # a folded conv as it was
        cam = LayerGradCam(forward, layer)

        def run(xs: torch.Tensor, ts: torch.Tensor) -> Attribution:
            maps = cam.attribute(xs, additional_forward_args=(ts,), relu_attributions=True)
            return LayerAttribution.interpolate(maps, size, "bilinear"), None

        return in_chunks(run, x, targets, max_rows)


GRADCAM = Method("gradcam", frozenset({"image"}), GradCamParams, _gradcam, passes=lambda prm, shape: 1,
                 needs_layers=True, single_forward=True, defaults=_defaults, check=_check, render_floor=True)
