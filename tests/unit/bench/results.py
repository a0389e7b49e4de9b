"""The committed results files (bench/results/*.json), for the tests of what reads them."""

from __future__ import annotations

import json
from typing import Any

from bench.common import RESULTS

RESULT_FILES = sorted(p.stem for p in RESULTS.glob("*.json")
                      if "scenarios" in json.loads(p.read_text(encoding="utf-8")))
"""The matrix's results files (bench/run.py); torchserve.json is the TorchServe comparison's."""


def stored(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    return result
