"""Render attributions for humans: heatmap overlays, PNG data URIs and tabular summaries.

Pure numpy/Pillow/matplotlib (object-oriented API only, safe to call from worker threads);
no torch or captum here. Images: normalise like Captum (``normalize``), colour through a
cached colormap LUT (``colormap``), place onto the submitted image (``overlay``), encode
(``png``). Tables: a ranked contribution chart and a one-sentence summary (``tabular``).
"""

from .colormap import colorize
from .normalize import normalize_attribution
from .options import COLORMAPS, DIVERGING, RenderSpec, Sign
from .overlay import Placement, heatmap_rgba, output_size, overlay, overlay_and_heatmap
from .png import data_uri, encode_png
from .tabular import contribution_chart, summary_sentence

__all__ = [
    "COLORMAPS",
    "DIVERGING",
    "Placement",
    "RenderSpec",
    "Sign",
    "colorize",
    "contribution_chart",
    "data_uri",
    "encode_png",
    "heatmap_rgba",
    "normalize_attribution",
    "output_size",
    "overlay",
    "overlay_and_heatmap",
    "summary_sentence",
]
