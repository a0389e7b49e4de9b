"""Rendering options shared by the image renderers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.types import COLORMAPS, DIVERGING_COLORMAPS, SIGNS, Sign

__all__ = ["COLORMAPS", "DEFAULT_COLORMAP", "DEFAULT_DIVERGING_COLORMAP", "DIVERGING", "SIGNS", "RenderSpec", "Sign"]

DIVERGING: frozenset[str] = frozenset(DIVERGING_COLORMAPS)
"""Colormaps with a neutral centre, suited to signed (``sign="all"``) maps."""

MAX_SMOOTH = 64.0
"""The widest blur (standard deviation, in pixels of the map) a client may ask for."""
DEFAULT_COLORMAP = "jet"
DEFAULT_DIVERGING_COLORMAP = "bwr"


@dataclass(frozen=True)
class RenderSpec:
    """How to turn an attribution map into heat colours.

    ``colormap=None`` picks ``"jet"`` for one-signed modes and ``"bwr"`` for ``sign="all"``.
    ``alpha`` is the opacity of the heat colours in the overlay; ``max_size`` bounds the longer
    side of the rendered images; ``outlier_perc`` is the percentage of attribution mass that
    saturates, as in ``captum.attr.visualization``. ``smooth`` is the standard deviation of a
    Gaussian blur of the map before it is normalised, in pixels of the map (0: none); ``floor``
    colours a one-signed map between its floor and its peak instead of from zero (see
    ``normalize_attribution``). Invalid values raise ``ValueError``.
    """

    colormap: str | None = None
    alpha: float = 0.5
    sign: Sign = "absolute"
    max_size: int = 1024
    outlier_perc: float = 2.0
    smooth: float = 0.0
    floor: bool = False

    def __post_init__(self) -> None:
        if self.colormap is not None and self.colormap not in COLORMAPS:
            raise ValueError(f"unknown colormap {self.colormap!r}; choose one of {COLORMAPS}")
        if self.sign not in SIGNS:
            raise ValueError(f"unknown sign {self.sign!r}; choose one of {SIGNS}")
        if not (math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be within [0, 1], got {self.alpha!r}")
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int):
            raise ValueError(f"max_size must be an int, got {self.max_size!r}")
        if self.max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {self.max_size}")
        if not (math.isfinite(self.outlier_perc) and 0.0 <= self.outlier_perc < 100.0):
            raise ValueError(f"outlier_perc must be within [0, 100), got {self.outlier_perc!r}")
        if not (math.isfinite(self.smooth) and 0.0 <= self.smooth <= MAX_SMOOTH):
            raise ValueError(f"smooth must be within [0, {MAX_SMOOTH}], got {self.smooth!r}")

    def resolved_colormap(self) -> str:
        """The colormap to use: the requested one, else the default for ``sign``."""
        if self.colormap is not None:
            return self.colormap
        return DEFAULT_DIVERGING_COLORMAP if self.sign == "all" else DEFAULT_COLORMAP
