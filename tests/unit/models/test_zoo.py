"""Model builders (models/zoo.py) and the committed demo weights that go with them."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from models.shapes import generate
from models.zoo import ShapesCNN, mlp, shapes_cnn
from tests.fixtures.catalogs import demo_entries

MODELS = Path(__file__).resolve().parents[3] / "models"


def test_mlp_layers_and_output_shape() -> None:
    net = mlp(30, [64, 32], 2)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert list(net.state_dict()) == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
        "4.weight",
        "4.bias",
    ]
    assert net(torch.randn(5, 30)).shape == (5, 2)
    assert mlp(3, [], 1)(torch.randn(4, 3)).shape == (4, 1)


def test_mlp_final_activations() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 6) * 10
    sig = mlp(6, [8], 1, final="sigmoid")
    assert isinstance(sig[-1], nn.Sigmoid)
    p = sig(x)
    assert p.shape == (16, 1) and bool(((p > 0) & (p < 1)).all())
    soft = mlp(6, [8], 3, final="softmax")
    assert isinstance(soft[-1], nn.Softmax)
    torch.testing.assert_close(soft(x).sum(1), torch.ones(16))
    with pytest.raises(ValueError):
        mlp(6, [8], 1, final="tanh")
    with pytest.raises(ValueError):
        mlp(6, [0], 1)


def test_shapes_cnn_output_shape_and_gradcam_layer() -> None:
    net = shapes_cnn(num_classes=4).eval()
    assert isinstance(net, ShapesCNN)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 128, 128)).shape == (1, 4)  # batch of one in eval mode
        assert net(torch.randn(3, 3, 128, 128)).shape == (3, 4)
        assert net(torch.randn(2, 3, 96, 160)).shape == (2, 4)
    convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1] == "features.11"
    seen: list[torch.Tensor] = []
    hook = net.features[11].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        net(torch.zeros(1, 3, 128, 128))
    hook.remove()
    assert seen[0].shape == (1, 64, 16, 16)
    assert shapes_cnn(num_classes=7, width=8)(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_shapes_cnn_is_cheap() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    net = shapes_cnn().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, 128, 128))
    assert counter.get_total_flops() < 30e6
    assert sum(p.numel() for p in net.parameters()) < 100_000


def test_shapes_cnn_exports_with_a_dynamic_batch() -> None:
    torch.manual_seed(0)
    net = shapes_cnn().eval()
    example = (torch.randn(2, 3, 128, 128),)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(net, example, dynamic_shapes=({0: batch},))
    module = exported.module()
    for n in (1, 3, 8):
        x = torch.randn(n, 3, 128, 128)
        with torch.no_grad():
            torch.testing.assert_close(module(x), net(x), rtol=1e-4, atol=1e-5)


def _build(entry: dict[str, Any]) -> nn.Module:
    module_name, function = entry["builder"].split(":")
    builder = getattr(importlib.import_module(module_name), function)
    net: nn.Module = builder(**entry["builder_args"])
    net.load_state_dict(load_file(str(MODELS / entry["weights"])), strict=True)
    return net.eval()


def test_catalog_lists_the_four_demo_models() -> None:
    entries = {e["name"]: e for e in demo_entries()}
    assert list(entries) == ["breast-cancer", "purchase", "diabetes", "shapes"]
    assert entries["purchase"]["output"] == "probabilities"
    assert entries["purchase"]["builder_args"]["final"] == "sigmoid"
    assert "labels" not in entries["diabetes"]
    assert (MODELS / entries["shapes"]["labels_file"]).read_text().split() == [
        "circle",
        "square",
        "triangle",
        "star",
    ]
    for name in ("breast-cancer", "purchase", "diabetes"):
        entry = entries[name]
        assert len(entry["features"]) == entry["builder_args"]["in_features"]
        assert (
            len(entry["tabular"]["mean"]) == len(entry["tabular"]["std"]) == len(entry["features"])
        )
        assert min(entry["tabular"]["std"]) > 0
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert total < 2_000_000


@pytest.mark.parametrize("name", ["breast-cancer", "purchase", "diabetes", "shapes"])
def test_committed_weights_fit_their_builders(name: str) -> None:
    entry = next(e for e in demo_entries() if e["name"] == name)
    net = _build(entry)
    if entry["kind"] == "image":
        out = net(torch.zeros(1, 3, *entry["image"]["size"]))
    else:
        out = net(torch.zeros(2, len(entry["features"])))
    width = entry["builder_args"].get("out_features") or entry["builder_args"]["num_classes"]
    assert out.shape[-1] == width and bool(torch.isfinite(out).all())


def test_committed_shapes_model_classifies_generated_images() -> None:
    entry = next(e for e in demo_entries() if e["name"] == "shapes")
    net = _build(entry)
    samples = generate(48, seed=2718)
    x = np.stack([np.asarray(s.image, dtype=np.float32) / 255.0 for s in samples])
    mean = np.array(entry["image"]["mean"], dtype=np.float32)
    std = np.array(entry["image"]["std"], dtype=np.float32)
    tensor = torch.from_numpy((x - mean) / std).permute(0, 3, 1, 2)
    with torch.no_grad():
        predicted = net(tensor).argmax(1).tolist()
    accuracy = np.mean([p == s.label for p, s in zip(predicted, samples, strict=True)])
    assert accuracy >= 0.9
