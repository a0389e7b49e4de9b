"""TorchServe's model for the comparison: the seeded resnet18 state dict our service loads (its
safetensors file from the bench catalog), saved as TorchServe's `.pt` and packed with model.py and
handler.py by torch-model-archiver (as a directory: `--archive-format no-archive`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.torchserve import venv

__all__ = ["HANDLER", "MODEL_FILE", "build_model"]

HERE = Path(__file__).resolve().parent
MODEL_FILE = HERE / "model.py"
HANDLER = HERE / "handler.py"


def build_model(weights: Path, store: Path, name: str) -> Path:
    """Write `store/<name>/` (MAR-INF/MANIFEST.json, model.py, handler.py, <name>.pt) from a
    safetensors state dict; returns that folder."""
    import torch
    from safetensors.torch import load_file

    store.mkdir(parents=True, exist_ok=True)
    serialized = store / f"{name}.pt"
    torch.save(load_file(str(weights)), serialized)
    subprocess.run([str(venv.tool("torch-model-archiver")), "--model-name", name, "--version", "1.0",
                    "--model-file", str(MODEL_FILE), "--serialized-file", str(serialized),
                    "--handler", str(HANDLER), "--export-path", str(store), "--archive-format", "no-archive",
                    "--force"], check=True, capture_output=True, text=True)
    serialized.unlink()
    folder = store / name
    manifest = json.loads((folder / "MAR-INF" / "MANIFEST.json").read_text(encoding="utf-8"))
    if manifest["model"]["handler"] != HANDLER.name:
        raise RuntimeError(f"unexpected model archive manifest: {manifest}")
    return folder
