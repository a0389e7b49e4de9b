"""Explanations for tabular models: a ranked contribution bar chart and a one-line summary."""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

POSITIVE_COLOR = "#d62728"
"""Bars that raise the prediction (red)."""
NEGATIVE_COLOR = "#1f77b4"
"""Bars that lower the prediction (blue)."""
CHART_DPI = 100
_MAX_LABEL = 48


def format_signed(value: float) -> str:
    """``value`` with an explicit sign and 2 decimals, or 3 significant digits when smaller.

    ``0.3123 -> "+0.31"``, ``-0.05 -> "-0.05"``, ``0.0031 -> "+0.0031"`` (not ``"+0.00"``).
    """
    text = f"{value:+.2f}"
    if text[1:] == "0.00" and value != 0:
        text = f"{value:+.3g}"
    return text


def format_value(value: object) -> str:
    """A feature value, compactly: integers as such, other numbers with 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    number = float(value)
    if math.isfinite(number) and number.is_integer() and abs(number) < 1e6:
        return str(int(number))
    return f"{number:.4g}"


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) if math.isfinite(float(v)) else 0.0 for v in values]


def _truncate(text: str, limit: int = _MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def contribution_chart(
    features: Sequence[str], values: Sequence[float], attributions: Sequence[float], title: str
) -> bytes:
    """PNG bytes of a horizontal bar chart of signed contributions, largest ``|attr|`` on top.

    Bars are labelled ``"<feature> = <value>"``, red when positive and blue when negative,
    with a zero line and the attribution written at each bar end; the figure grows with the
    number of features. Non-finite attributions are drawn as 0.
    """
    if not len(features) == len(values) == len(attributions):
        raise ValueError(
            f"features, values and attributions differ in length: "
            f"{len(features)}, {len(values)}, {len(attributions)}"
        )
    attrs = _finite(attributions)
    order = sorted(range(len(attrs)), key=lambda i: -abs(attrs[i]))
    ranked = [attrs[i] for i in order]
    labels = [_truncate(f"{features[i]} = {format_value(values[i])}") for i in order]
    count = len(ranked)

    fig = Figure(figsize=(7.5, 1.3 + 0.32 * max(count, 1)), dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig; no pyplot, no global state
    ax = fig.add_subplot()
    ax.set_title(title, parse_math=False, fontsize=11)
    ax.axvline(0.0, color="#333333", linewidth=0.8, zorder=3)
    if count:
        positions = list(range(count))
        colors = [POSITIVE_COLOR if v >= 0 else NEGATIVE_COLOR for v in ranked]
        ax.barh(positions, ranked, color=colors, height=0.7, zorder=2)
        ax.set_yticks(positions, labels, parse_math=False, fontsize=9)
        ax.set_ylim(count - 0.5, -0.5)  # largest on top
        span = max(max(ranked), 0.0) - min(min(ranked), 0.0) or 1.0
        pad = 0.02 * span
        for y, v in zip(positions, ranked, strict=True):
            ax.text(v + (pad if v >= 0 else -pad), y, format_signed(v), va="center",
                    ha="left" if v >= 0 else "right", fontsize=8, parse_math=False)
        ax.set_xlim(min(min(ranked), 0.0) - 0.18 * span, max(max(ranked), 0.0) + 0.18 * span)
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no features", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel("contribution to the prediction", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6, zorder=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI)
    return buf.getvalue()


def _join(items: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _drivers(pairs: Sequence[tuple[str, float]]) -> str:
    return _join([f"{name} ({format_signed(value)})" for name, value in pairs])


def summary_sentence(
    headline: str, features: Sequence[str], attributions: Sequence[float], k: int = 2
) -> str:
    """One plain-language sentence naming the strongest drivers of a prediction.

    E.g. ``"purchase 92%: raised most by cart_adds (+0.31) and category_views (+0.22),
    lowered by return_rate (-0.05)"``: up to ``k`` strongest positive and ``k`` strongest
    negative features (zero and non-finite ones ignored); a missing side is left out, and
    with neither the sentence reads ``"<headline>: no feature moved the prediction"``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pairs = list(zip(features, _finite(attributions), strict=True))
    positive = sorted((p for p in pairs if p[1] > 0), key=lambda p: -p[1])[:k]
    negative = sorted((p for p in pairs if p[1] < 0), key=lambda p: p[1])[:k]
    clauses: list[str] = []
    if positive:
        clauses.append("raised most by " + _drivers(positive))
    if negative:
        verb = "lowered by " if positive else "lowered most by "
        clauses.append(verb + _drivers(negative))
    if not clauses:
        return f"{headline}: no feature moved the prediction"
    return f"{headline}: {', '.join(clauses)}"
