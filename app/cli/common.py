"""Shared pieces of the CLI: consoles, usage errors, option parsing, tables and records."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.client import Explanation

# Not a terminal (a pipe, a test): rich would wrap at 80 columns; tables take what they need.
out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, markup=False, width=None if sys.stderr.isatty() else 200)


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
"""Files `explain-batch` picks from a folder (the service itself takes PNG, JPEG and WebP)."""
RESULTS_FILE = "results.jsonl"


def emit_json(value: Any) -> None:
    """One JSON line on stdout, untouched by rich (for scripts and jq)."""
    sys.stdout.write(json.dumps(value) + "\n")


def print_error(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


class UsageError(Exception):
    """A problem with the command line or its input files (exit status 2)."""


def fmt(value: float) -> str:
    return f"{value:.6g}"


def slug(name: str) -> str:
    """A file-name-safe form of an input's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "input"


def signed(value: float) -> str:
    return f"{value:+.4g}"


def bar(value: float, scale: float, width: int = 12) -> Text:
    if scale <= 0:
        return Text("")
    n = max(0, min(width, round(abs(value) / scale * width)))
    return Text("█" * n, style="green" if value >= 0 else "red")


def attribution_table(expl: Explanation, top: int | None) -> Table:
    ranked = expl.ranked()
    shown = ranked[:top] if top else ranked
    scale = max((abs(a.attribution) for a in ranked), default=0.0)
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("feature")
    table.add_column("value", justify="right")
    table.add_column("attribution", justify="right")
    table.add_column("", no_wrap=True)
    for rank, a in enumerate(shown, start=1):
        table.add_row(str(rank), a.feature, fmt(a.value), signed(a.attribution), bar(a.attribution, scale))
    return table


def target_text(expl: Explanation) -> str:
    t = expl.target
    return t.label if t.label is not None else f"class {t.index}"


def overlay_names(names: Sequence[str]) -> dict[str, str]:
    """Overlay file name per distinct input name: `<stem>.overlay.png`, or `<name>.overlay.png`
    when two names share a stem (`a.png`, `a.jpg`)."""
    stems = Counter(Path(name).stem for name in dict.fromkeys(names))
    return {name: f"{slug(Path(name).stem if stems[Path(name).stem] == 1 else name)}.overlay.png"
            for name in names}


def render_options(args: argparse.Namespace) -> dict[str, Any]:
    render: dict[str, Any] = {}
    if args.sign:
        render["sign"] = args.sign
    if args.colormap:
        render["colormap"] = args.colormap
    if args.alpha is not None:
        render["alpha"] = args.alpha
    if args.max_size is not None:
        render["max_size"] = args.max_size
    return render


def parse_target(raw: str | None) -> Any:
    if raw is None:
        return None
    text = raw.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--target: {exc}") from None
    return text


def parse_json_option(raw: str | None, name: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{name} must be a JSON object, e.g. '{{\"n_steps\": 16}}'")
    return value


def explanation_record(key: str | int, expl: Explanation, method: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key": key,
        "status": "ok",
        "prediction": expl.prediction.to_json(),
        "target": {"index": expl.target.index, "label": expl.target.label, "score": expl.target.score},
        "method": method,
        "convergence_delta": expl.convergence_delta,
    }
    if isinstance(expl.attributions, list):
        record["attributions"] = [{"feature": a.feature, "value": a.value, "attribution": a.attribution}
                                  for a in expl.attributions]
        record["top"] = [a.feature for a in expl.ranked()[:3]]
    if expl.summary:
        record["summary"] = expl.summary
    return record
