"""Every loader format round-tripped from files written here, checked against the original net."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from captum.attr import LayerGradCam
from safetensors.torch import save_file
from torch import nn

from app.errors import CatalogError
from app.inference.catalog import ModelSpec
from app.inference.loading import LoadedModel, load_model, resolve_device, typical_input

CPU = torch.device("cpu")
SIZE = 16
MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)
LABELS = ["red", "green", "blue"]


class TinyCNN(nn.Module):
    """Two 3x3 convs, global pooling, a linear head; optionally a final Sigmoid or Softmax."""

    def __init__(self, num_classes: int = 3, final: str | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, num_classes)
        self.final = {"sigmoid": nn.Sigmoid(), "softmax": nn.Softmax(dim=1), None: nn.Identity()}[final]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.head(self.pool(self.features(x)).flatten(1)))


def tiny_cnn(num_classes: int = 3, final: str | None = None) -> nn.Module:
    return TinyCNN(num_classes, final)


def tiny_mlp(in_features: int = 4, out_features: int = 2, final: str | None = None) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, out_features)]
    if final == "sigmoid":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


unpickled: list[str] = []


class TrackedCNN(TinyCNN):
    """Records every time an instance is unpickled."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        unpickled.append(type(self).__name__)
        super().__setstate__(state)


def _record_call(path: str) -> None:
    unpickled.append(path)


class CallsOnLoad:
    """Unpickling this calls `_record_call`: what a hostile checkpoint would do."""

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _record_call, ("called",)


def seeded(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return factory().eval()


class Reference(nn.Module):
    """The explained function built independently of the loader: net((x - mean) / std)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        return self.net((x - mean) / std)


def image_reference(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return Reference(net)(x)


def image_spec(weights: Path | None, fmt: str, **changes: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "name": "net", "kind": "image", "task": "classification", "format": fmt,
        "weights": weights, "labels": LABELS,
        "image": {"size": [SIZE, SIZE], "mean": list(MEAN), "std": list(STD)},
    }
    if fmt == "state_dict":
        values["builder"] = f"{__name__}:tiny_cnn"
    values.update(changes)
    return ModelSpec.model_validate({k: v for k, v in values.items() if v is not None})


def assert_serves(model: LoadedModel, net: nn.Module, batches: tuple[int, ...] = (1, 5),
                  atol: float = 1e-5) -> None:
    torch.manual_seed(1)
    for batch in batches:
        x = torch.rand(batch, 3, SIZE, SIZE)
        with torch.no_grad():
            out = model.module(x)
        assert out.dtype == torch.float32
        assert out.shape == (batch, model.out_width)
        torch.testing.assert_close(out, image_reference(net, x), atol=atol, rtol=1e-4)


def save_torchscript(net: nn.Module, path: Path, how: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        example = torch.rand(2, 3, SIZE, SIZE)
        archive = torch.jit.script(net) if how == "script" else torch.jit.trace(net, example)
        torch.jit.save(archive, str(path))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A TinyCNN exported once for the module, with a dynamic batch dimension."""
    net = seeded(tiny_cnn, seed=3)
    path = tmp_path_factory.mktemp("export") / "cnn.pt2"
    program = torch.export.export(net, (torch.rand(2, 3, SIZE, SIZE),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return net, path


# ---------------------------------------------------------------------------------------------
# state_dict


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_state_dict_image_round_trip(tmp_path: Path, suffix: str) -> None:
    net = seeded(tiny_cnn)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(net.state_dict(), str(path))
    else:
        torch.save(net.state_dict(), path)
    model = load_model(image_spec(path, "state_dict"), CPU)
    assert_serves(model, net)
    assert model.labels == LABELS
    assert model.out_width == 3
    assert model.output_kind == "logits"
    # the last module whose output is a spatial map: the features block (after its last ReLU)
    assert model.facts.gradcam_layer == "features"
    assert model.facts.spatial_layers == ("features.0", "features.1", "features.2", "features.3", "features")
    assert model.device == CPU
    assert not model.module.training
    assert not any(m.training for m in model.module.modules())
    assert all(not p.requires_grad for p in model.module.parameters())


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_state_dict_tabular_round_trip(tmp_path: Path, suffix: str) -> None:
    net = seeded(lambda: tiny_mlp(4, 2))
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(net.state_dict(), str(path))
    else:
        torch.save(net.state_dict(), path)
    mean, std = [1.0, -2.0, 30.0, 0.5], [2.0, 0.5, 10.0, 1.0]
    spec = ModelSpec(name="tab", kind="tabular", task="classification", format="state_dict",
                     builder=f"{__name__}:tiny_mlp", builder_args={"in_features": 4, "out_features": 2},
                     weights=path, labels=["no", "yes"], features=["a", "b", "c", "d"],
                     tabular={"mean": mean, "std": std})
    model = load_model(spec, CPU)
    x = torch.randn(7, 4) * 10
    with torch.no_grad():
        expected = net((x - torch.tensor(mean)) / torch.tensor(std))
        torch.testing.assert_close(model.module(x), expected)
    assert model.facts.gradcam_layer is None and model.facts.spatial_layers == ()
    assert model.out_width == 2
    assert spec.input_kind.describe(spec) == {"features": [{"name": n} for n in "abcd"], "input": None}


def test_tabular_without_standardisation_is_the_identity(tmp_path: Path) -> None:
    net = seeded(lambda: tiny_mlp(3, 1))
    path = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(path))
    spec = ModelSpec(name="reg", kind="tabular", task="regression", format="state_dict",
                     builder=f"{__name__}:tiny_mlp", builder_args={"in_features": 3, "out_features": 1},
                     weights=path, features=["a", "b", "c"])
    model = load_model(spec, CPU)
    x = torch.randn(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(model.module(x), net(x))
    assert model.labels is None


def test_labels_file(tmp_path: Path) -> None:
    net = seeded(tiny_cnn)
    path = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(path))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nbird\n", encoding="utf-8")
    model = load_model(image_spec(path, "state_dict", labels=None, labels_file=labels), CPU)
    assert model.labels == ["cat", "dog", "bird"]


@pytest.mark.parametrize(("final", "kind"), [(None, "logits"), ("sigmoid", "probabilities"),
                                             ("softmax", "probabilities")])
def test_output_kind_is_inferred_from_the_last_layer(tmp_path: Path, final: str | None, kind: str) -> None:
    net = seeded(lambda: tiny_cnn(3, final))
    path = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(path))
    model = load_model(image_spec(path, "state_dict", builder_args={"final": final}), CPU)
    assert model.output_kind == kind
    assert_serves(model, net, batches=(2,))


def test_sigmoid_mlp_is_probabilities(tmp_path: Path) -> None:
    net = seeded(lambda: tiny_mlp(3, 1, "sigmoid"))
    path = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(path))
    spec = ModelSpec(name="p", kind="tabular", task="classification", format="state_dict",
                     builder=f"{__name__}:tiny_mlp",
                     builder_args={"in_features": 3, "out_features": 1, "final": "sigmoid"},
                     weights=path, labels=["no", "yes"], features=["a", "b", "c"])
    assert load_model(spec, CPU).output_kind == "probabilities"
    explicit = spec.model_copy(update={"output": "logits"})
    assert load_model(explicit, CPU).output_kind == "logits"


def test_precision_bf16_is_close_to_fp32(tmp_path: Path) -> None:
    net = seeded(tiny_cnn)
    path = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(path))
    model = load_model(image_spec(path, "state_dict", precision="bf16"), CPU)
    assert next(model.module.net.parameters()).dtype == torch.bfloat16
    assert_serves(model, net, batches=(3,), atol=2e-2)


# ---------------------------------------------------------------------------------------------
# Weights are never unpickled as arbitrary objects


def test_pickled_module_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(TrackedCNN(), path)
    unpickled.clear()
    spec = image_spec(path, "state_dict")
    with pytest.raises(CatalogError, match=r"catalog entry 'net': weights: module.pt") as info:
        load_model(spec, CPU)
    assert "weights-only" in str(info.value)
    assert unpickled == []
    # The probe works: a trusting load would have run TrackedCNN.__setstate__.
    torch.load(path, weights_only=False)
    assert unpickled == ["TrackedCNN"]


def test_pickled_callable_is_never_called(tmp_path: Path) -> None:
    path = tmp_path / "hostile.pt"
    torch.save({"weight": torch.zeros(1), "payload": CallsOnLoad()}, path)
    unpickled.clear()
    with pytest.raises(CatalogError, match="weights"):
        load_model(image_spec(path, "state_dict"), CPU)
    assert unpickled == []
    with pytest.raises(pickle.UnpicklingError):  # the loader's setting, as torch states it
        torch.load(path, weights_only=True)


def test_pt_file_that_is_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CatalogError, match="does not hold a state dict"):
        load_model(image_spec(path, "state_dict"), CPU)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"definitely not safetensors")
    with pytest.raises(CatalogError, match="catalog entry 'net': weights: w.safetensors"):
        load_model(image_spec(path, "state_dict"), CPU)


# ---------------------------------------------------------------------------------------------
# torchvision


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    net = seeded(lambda: torchvision.models.resnet18(num_classes=3))
    path = tmp_path_factory.mktemp("resnet") / "resnet18.safetensors"
    save_file(net.state_dict(), str(path))
    return net, path


def test_torchvision_with_weights(resnet: tuple[nn.Module, Path]) -> None:
    net, path = resnet
    spec = image_spec(path, "torchvision", architecture="resnet18", builder_args={"num_classes": 3},
                      image={"size": [32, 32], "mean": list(MEAN), "std": list(STD)})
    model = load_model(spec, CPU)
    assert model.out_width == 3
    # the last block with a spatial map: at 32 px, layer4 (stride 32) is 1 x 1, so layer3 (2 x 2)
    assert model.facts.gradcam_layer == "layer3"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.module(x), image_reference(net, x), atol=1e-4, rtol=1e-4)
    assert spec.input_kind.describe(spec) == {"features": None, "input": {"height": 32, "width": 32, "channels": 3}}


def test_torchvision_without_weights_is_the_random_init() -> None:
    spec = image_spec(None, "torchvision", architecture="resnet18", builder_args={"num_classes": 3},
                      image={"size": [32, 32], "mean": list(MEAN), "std": list(STD)})
    torch.manual_seed(7)
    model = load_model(spec, CPU)
    reference = seeded(lambda: torchvision.models.resnet18(num_classes=3), seed=7)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.module(x), image_reference(reference, x), atol=1e-4, rtol=1e-4)
    assert model.labels == LABELS


def test_torchvision_builder_args_that_do_not_fit(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    spec = image_spec(path, "torchvision", architecture="resnet18", builder_args={"num_classes": 5},
                      labels=["a", "b", "c", "d", "e"])
    with pytest.raises(CatalogError, match="catalog entry 'net': weights"):
        load_model(spec, CPU)


# ---------------------------------------------------------------------------------------------
# export


def test_export_round_trip_with_dynamic_batch(exported: tuple[nn.Module, Path]) -> None:
    net, path = exported
    model = load_model(image_spec(path, "export"), CPU)
    assert_serves(model, net, batches=(1, 5))
    assert model.output_kind == "logits"
    assert model.out_width == 3
    assert model.facts.gradcam_layer == "features"
    model.module.train()
    assert not model.module.training


def test_export_gradcam_layer_is_hookable(exported: tuple[nn.Module, Path]) -> None:
    net, path = exported
    model = load_model(image_spec(path, "export"), CPU)
    assert model.facts.gradcam_layer == "features"
    x = torch.rand(2, 3, SIZE, SIZE)
    layer = model.layer(model.facts.spatial_layer("features"))
    attributions = LayerGradCam(model.module, layer).attribute(x, target=1)
    assert attributions.shape == (2, 1, SIZE, SIZE)
    assert attributions.abs().sum() > 0
    # The same as GradCAM on the original net's features block, with the normalisation in front.
    expected = LayerGradCam(Reference(net), net.features).attribute(x, target=1)
    torch.testing.assert_close(attributions, expected, atol=1e-5, rtol=1e-4)


def test_export_named_gradcam_layer_and_output_kind(exported: tuple[nn.Module, Path]) -> None:
    net, path = exported
    spec = image_spec(path, "export", output="probabilities",
                      image={"size": [SIZE, SIZE], "mean": list(MEAN), "std": list(STD),
                             "gradcam_layer": "features.0"})
    model = load_model(spec, CPU)
    assert model.facts.gradcam_layer == "features.0"
    assert model.output_kind == "probabilities"
    x = torch.rand(1, 3, SIZE, SIZE, requires_grad=True)
    attributions = LayerGradCam(model.module, model.layer("net.features.0")).attribute(x, target=0)
    assert attributions.shape == (1, 1, SIZE, SIZE)


def test_export_bf16(exported: tuple[nn.Module, Path]) -> None:
    net, path = exported
    model = load_model(image_spec(path, "export", precision="bf16"), CPU)
    assert_serves(model, net, batches=(1, 5), atol=2e-2)


def test_export_labels_file(exported: tuple[nn.Module, Path], tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("x\ny\nz\n", encoding="utf-8")
    _, path = exported
    model = load_model(image_spec(path, "export", labels=None, labels_file=labels), CPU)
    assert model.labels == ["x", "y", "z"]


def test_not_an_export_archive(tmp_path: Path) -> None:
    path = tmp_path / "cnn.pt2"
    path.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(CatalogError, match="catalog entry 'net': weights: not a torch.export archive"):
        load_model(image_spec(path, "export"), CPU)


# ---------------------------------------------------------------------------------------------
# torchscript


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_round_trip(tmp_path: Path, how: str) -> None:
    net = seeded(tiny_cnn)
    path = tmp_path / f"{how}.pt"
    save_torchscript(net, path, how)
    model = load_model(image_spec(path, "torchscript"), CPU)
    assert_serves(model, net, batches=(1, 2))
    assert not model.facts.hookable and model.facts.gradcam_layer is None  # no hooks on a ScriptModule
    assert model.output_kind == "logits"
    assert model.labels == LABELS


def test_torchscript_bf16_and_labels_file(tmp_path: Path) -> None:
    net = seeded(tiny_cnn)
    path = tmp_path / "scripted.pt"
    save_torchscript(net, path, "script")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n", encoding="utf-8")
    model = load_model(image_spec(path, "torchscript", precision="bf16", labels=None, labels_file=labels),
                       CPU)
    assert model.labels == ["a", "b", "c"]
    assert_serves(model, net, batches=(3,), atol=2e-2)


def test_torchscript_output_override(tmp_path: Path) -> None:
    net = seeded(lambda: tiny_cnn(3, "sigmoid"))
    path = tmp_path / "sig.pt"
    save_torchscript(net, path, "script")
    model = load_model(image_spec(path, "torchscript", output="probabilities"), CPU)
    assert model.output_kind == "probabilities"
    assert_serves(model, net, batches=(2,))


def test_not_a_torchscript_archive(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not an archive")
    with pytest.raises(CatalogError, match="catalog entry 'net': weights: not a TorchScript archive"):
        load_model(image_spec(path, "torchscript"), CPU)


# ---------------------------------------------------------------------------------------------
# Small helpers


def test_typical_input_is_the_mean_input() -> None:
    image = image_spec(Path("unused.pt2"), "export")
    batch = typical_input(image, batch=3)
    assert batch.shape == (3, 3, SIZE, SIZE)
    torch.testing.assert_close(batch[1, :, 4, 5], torch.tensor(MEAN, dtype=torch.float32))
    tabular = ModelSpec(name="t", kind="tabular", task="regression", format="export",
                        weights=Path("unused.pt2"), features=["a", "b"])
    assert torch.equal(typical_input(tabular), torch.zeros(1, 2))
    with_mean = ModelSpec.model_validate(tabular.model_dump() | {"tabular": {"mean": [3.0, -1.0]}})
    assert torch.equal(typical_input(with_mean, 2), torch.tensor([[3.0, -1.0], [3.0, -1.0]]))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    expected = torch.device("cuda:0") if torch.cuda.is_available() else CPU
    assert resolve_device("auto") == expected


# ---------------------------------------------------------------------------------------------
# FLOPs per row (the CPU thread policy's measure of a model's compute)

TINY_CNN_FLOPS = 2 * (SIZE * SIZE * 6 * 3 * 9 + SIZE * SIZE * 8 * 6 * 9 + 8 * 3)
"""Two multiply-adds' worth of FLOPs per weight use: conv 3->6 and 6->8 (3x3, 16x16 out), linear 8->3."""


@pytest.mark.parametrize("fmt", ["state_dict", "script", "trace"])
def test_flops_per_row_are_counted_at_load(tmp_path: Path, fmt: str) -> None:
    net = seeded(tiny_cnn)
    if fmt == "state_dict":
        path = tmp_path / "weights.safetensors"
        save_file(net.state_dict(), str(path))
        model = load_model(image_spec(path, "state_dict"), CPU)
    else:
        path = tmp_path / f"{fmt}.pt"
        save_torchscript(net, path, fmt)
        model = load_model(image_spec(path, "torchscript"), CPU)
    assert model.facts.flops_per_row == TINY_CNN_FLOPS
