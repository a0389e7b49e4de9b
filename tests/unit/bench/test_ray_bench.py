"""bench/results/ray*.md are bench.ray_bench's rendering of the JSON beside them, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ray_bench import render

RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results"


@pytest.mark.parametrize("name", sorted(p.stem for p in RESULTS.glob("ray*.json")))
def test_committed_ray_results_render_from_their_json(name: str) -> None:
    result = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    assert render(result) == (RESULTS / f"{name}.md").read_text(encoding="utf-8")


def test_there_are_ray_results() -> None:
    assert (RESULTS / "ray.json").is_file()
