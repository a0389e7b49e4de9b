"""bench/roofline.py on the demo models: sweep structure, best batch, clear errors, the command line."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from app.inference.catalog import load_catalog
from app.inference.loading import LoadedModel, load_model
from bench.roofline import default_sizes, main, probe
from tests.conftest import CATALOG


def loaded(name: str) -> LoadedModel:
    spec = next(s for s in load_catalog(CATALOG) if s.name == name)
    return load_model(spec, torch.device("cpu"))


@pytest.fixture(scope="module")
def breast_cancer() -> LoadedModel:
    return loaded("breast-cancer")


@pytest.fixture(scope="module")
def shapes() -> LoadedModel:
    return loaded("shapes")


def check_sweep(result: dict[str, Any], sizes: list[int]) -> None:
    sweep = result["sweep"]
    assert [row["batch"] for row in sweep] == sizes
    for row in sweep:
        assert row["iters"] >= 1
        assert row["seconds"] > 0
        assert row["rows_per_s"] == pytest.approx(row["batch"] * row["iters"] / row["seconds"])
    best = max(sweep, key=lambda row: row["rows_per_s"])
    assert result["rows_per_s"] == best["rows_per_s"] > 0
    assert result["best_batch"] == best["batch"]
    assert result["best_batch"] in sizes
    assert result["probe_seconds"] >= sum(row["seconds"] for row in sweep)


def test_input_mode_on_a_tabular_model(breast_cancer: LoadedModel) -> None:
    sizes = [1, 8, 64]
    result = probe(breast_cancer, "input", sizes, seconds_per_size=0.05, max_seconds=10)
    assert {k: result[k] for k in ("model", "mode", "device", "precision")} == {
        "model": "breast-cancer", "mode": "input", "device": "cpu", "precision": "fp32"}
    check_sweep(result, sizes)


def test_layer_mode_on_an_image_model(shapes: LoadedModel) -> None:
    assert shapes.facts.gradcam_layer is not None
    sizes = [1, 2]
    result = probe(shapes, "layer", sizes, seconds_per_size=0.05, max_seconds=10)
    assert result["model"] == "shapes" and result["mode"] == "layer"
    check_sweep(result, sizes)


def test_input_mode_on_an_image_model(shapes: LoadedModel) -> None:
    result = probe(shapes, "input", [2], seconds_per_size=0.02, max_seconds=10)
    check_sweep(result, [2])


def test_layer_mode_needs_a_gradcam_layer(breast_cancer: LoadedModel) -> None:
    assert breast_cancer.facts.gradcam_layer is None
    with pytest.raises(ValueError, match="breast-cancer has no GradCAM layer"):
        probe(breast_cancer, "layer", [1], seconds_per_size=0.01, max_seconds=5)


def test_an_unknown_mode_is_refused(shapes: LoadedModel) -> None:
    with pytest.raises(ValueError, match="mode"):
        probe(shapes, "gradients", [1], seconds_per_size=0.01, max_seconds=5)


def test_no_time_budget_measures_nothing(breast_cancer: LoadedModel) -> None:
    result = probe(breast_cancer, "input", [1, 2], seconds_per_size=0.01, max_seconds=0.0)
    assert result["sweep"] == []
    assert result["best_batch"] is None
    assert result["rows_per_s"] == 0.0


def test_the_budget_stops_the_sweep(breast_cancer: LoadedModel) -> None:
    # Each size takes at least 0.1 s: with a 0.15 s budget the third size can never start.
    result = probe(breast_cancer, "input", [1, 2, 4, 8], seconds_per_size=0.1, max_seconds=0.15)
    assert 1 <= len(result["sweep"]) <= 2
    assert result["best_batch"] in (1, 2)


def test_default_sizes(breast_cancer: LoadedModel, shapes: LoadedModel) -> None:
    assert default_sizes(breast_cancer) == [2**i for i in range(17)]  # 1 .. 65536
    assert default_sizes(shapes) == [1, 2, 4, 8, 16, 32, 64]  # image on CPU


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--catalog", str(CATALOG), "--model", "breast-cancer", "--mode", "input", "--device", "cpu",
                 "--sizes", "1,4", "--seconds-per-size", "0.02", "--max-seconds", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["batch"] for row in result["sweep"]] == [1, 4]
    assert result["best_batch"] in (1, 4)
    assert result["threads"] == torch.get_num_threads()
    with pytest.raises(SystemExit) as exc:
        main(["--catalog", str(CATALOG), "--model", "nope", "--mode", "input"])
    assert exc.value.code == 2
    assert "no model 'nope'" in capsys.readouterr().err
