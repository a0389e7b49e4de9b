"""The benchmark's catalog: `bench/catalog.toml` cut down to a run's models, with seeded random weights
where a model has none (or is asked to have them), written to a temporary folder."""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import CATALOG

__all__ = ["random_weights_file", "subset_catalog"]


def random_weights_file(entry: dict[str, Any], folder: Path) -> Path:
    """A seeded random initialisation of an entry's builder or torchvision architecture, saved as
    safetensors: both servers (separate processes) then serve the very same function."""
    import torch
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if entry["format"] == "torchvision":
            import torchvision

            net = torchvision.models.get_model(entry["architecture"], weights=None,
                                               **entry.get("builder_args", {}))
        else:
            module, _, func = entry["builder"].partition(":")
            net = getattr(importlib.import_module(module), func)(**entry.get("builder_args", {}))
    path = folder / f"{entry['name']}-random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def subset_catalog(models: Sequence[str], folder: Path, random_weights: Sequence[str] = ()) -> Path:
    """`bench/catalog.toml` with only `models`, paths made absolute, written into `folder`.

    Each server loads only what the run needs (faster start, and a model under repair
    elsewhere in the catalog does not stop the run). Models in `random_weights`, and torchvision
    entries without weights, get a seeded random initialisation written to `folder` (same speed,
    meaningless answers; the same function in both servers)."""
    import tomli_w

    data = tomllib.loads(CATALOG.read_text(encoding="utf-8"))
    chosen: list[dict[str, Any]] = []
    for entry in data["models"]:
        if entry["name"] not in models:
            continue
        entry = dict(entry)
        if "weights" not in entry and entry["format"] == "torchvision" or (
                "weights" in entry and entry["name"] in random_weights):
            # Random init drawn in each server would differ: write one seeded init for both.
            entry["weights"] = str(random_weights_file(entry, folder))
        elif "weights" in entry:
            entry["weights"] = str((CATALOG.parent / entry["weights"]).resolve())
        if "labels_file" in entry:
            entry["labels_file"] = str((CATALOG.parent / entry["labels_file"]).resolve())
        chosen.append(entry)
    path = folder / "catalog.toml"
    path.write_text(tomli_w.dumps({"models": chosen} if chosen else {}), encoding="utf-8")
    return path
