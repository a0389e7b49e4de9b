"""The shared vocabulary: the closed sets of names that requests, answers, the catalog and the
method table agree on. Pure typing (no torch), so the API layer and the client can use it."""

from __future__ import annotations

from typing import Literal, get_args

Kind = Literal["tabular", "image"]
Task = Literal["classification", "regression"]
Sign = Literal["absolute", "positive", "negative", "all"]
"""Which part of an attribution map to show (Captum's `sign`)."""
ImageOutput = Literal["overlay", "heatmap", "attributions"]
TabularOutput = Literal["chart", "summary"]
OutputName = Literal[ImageOutput, TabularOutput, "faithfulness"]
"""What an explanation may carry beyond its attributions; "faithfulness" is for every kind."""
AttributionsFormat = Literal["list", "float32"]
"""How image attributions are written: nested JSON lists (6 significant digits), or the float32
values as base64 bytes with their shape."""
MethodName = Literal[
    "integrated_gradients", "gradient_shap", "saliency", "input_x_gradient", "smoothgrad",
    "gradcam", "occlusion", "feature_ablation", "kernel_shap", "lime", "deeplift", "deeplift_shap",
]
Colormap = Literal[
    "jet", "viridis", "inferno", "magma", "plasma", "turbo", "hot", "gray",
    "coolwarm", "bwr", "RdBu_r", "seismic",
]
"""Matplotlib colour maps a client may ask for; the last four are diverging (for sign "all")."""

KINDS: tuple[Kind, ...] = get_args(Kind)
SIGNS: tuple[Sign, ...] = get_args(Sign)
METHOD_NAMES: tuple[MethodName, ...] = get_args(MethodName)
COLORMAPS: tuple[Colormap, ...] = get_args(Colormap)
DIVERGING_COLORMAPS: frozenset[Colormap] = frozenset({"coolwarm", "bwr", "RdBu_r", "seismic"})
