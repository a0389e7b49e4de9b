"""Paths and the progress log shared by the benchmark modules."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CATALOG = BENCH / "catalog.toml"
RESULTS = BENCH / "results"


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the report)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is not positive."""
    return a / b if a is not None and b is not None and b > 0 else None
