"""bench/catalogs.py: the benchmark's catalog cut down to a run's models, with seeded random weights."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from app.inference.catalog import load_catalog
from app.inference.loading import load_model
from bench.catalogs import subset_catalog
from bench.common import BENCH, CATALOG
from tests.conftest import CATALOG as DEMO_CATALOG


def bench_entry(name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(m for m in tomllib.loads(CATALOG.read_text())["models"] if m["name"] == name)
    return entry


def test_subset_catalog_has_only_the_named_models_with_absolute_paths(tmp_path: Path) -> None:
    path = subset_catalog(["shapes", "breast-cancer"], tmp_path)
    assert path == tmp_path / "catalog.toml"
    written = tomllib.loads(path.read_text(encoding="utf-8"))["models"]
    assert [m["name"] for m in written] == ["breast-cancer", "shapes"]
    for entry in written:
        original = bench_entry(entry["name"])
        for key in ("weights", "labels_file"):
            if key in original:
                assert Path(entry[key]).is_absolute() and Path(entry[key]).is_file()
                assert Path(entry[key]) == (CATALOG.parent / original[key]).resolve()
        assert {k: v for k, v in entry.items() if k not in ("weights", "labels_file")} == {
            k: v for k, v in original.items() if k not in ("weights", "labels_file")}
    # The service's own loader reads it, from anywhere, and gets the demo weights.
    specs = load_catalog(path)
    assert [s.name for s in specs] == ["breast-cancer", "shapes"]
    demo = next(s for s in load_catalog(DEMO_CATALOG) if s.name == "breast-cancer")
    x = torch.rand(3, 30) * 10
    with torch.no_grad():
        ours = load_model(specs[0], torch.device("cpu")).module(x)
        reference = load_model(demo, torch.device("cpu")).module(x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_subset_catalog_of_nothing_known_is_empty(tmp_path: Path) -> None:
    path = subset_catalog(["no-such-model"], tmp_path)
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {}


def test_random_weights_are_seeded_and_replace_the_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # Whatever the global random state (each server process has its own), the same initialisation.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        first = subset_catalog(["breast-cancer"], tmp_path / "a", random_weights=["breast-cancer"])
        torch.manual_seed(2)
        second = subset_catalog(["breast-cancer"], tmp_path / "b", random_weights=["breast-cancer"])
    (entry_a,) = tomllib.loads(first.read_text())["models"]
    (entry_b,) = tomllib.loads(second.read_text())["models"]
    assert entry_a["weights"] == str(tmp_path / "a" / "breast-cancer-random.safetensors")
    tensors_a, tensors_b = load_file(entry_a["weights"]), load_file(entry_b["weights"])
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:
        torch.testing.assert_close(tensors_a[key], tensors_b[key], rtol=0, atol=0)
    trained = load_file(str((CATALOG.parent / bench_entry("breast-cancer")["weights"]).resolve()))
    assert trained.keys() == tensors_a.keys()
    assert any(not torch.equal(trained[k], tensors_a[k]) for k in trained)
    (spec,) = load_catalog(first)
    assert load_model(spec, torch.device("cpu")).spec.name == "breast-cancer"


def test_a_torchvision_entry_without_weights_gets_a_written_initialisation(tmp_path: Path) -> None:
    path = subset_catalog(["resnet50"], tmp_path)
    (entry,) = tomllib.loads(path.read_text())["models"]
    assert entry["weights"] == str(tmp_path / "resnet50-random.safetensors")
    assert Path(entry["weights"]).stat().st_size > 50_000_000
    assert Path(entry["labels_file"]) == BENCH / "resnet50_labels.txt"
    assert entry["image"]["gradcam_layer"] == "layer4"


