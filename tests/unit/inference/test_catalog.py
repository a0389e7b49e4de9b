"""Catalog validation: every problem stops start-up with a message naming the entry and the key."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from safetensors.torch import save_file
from torch import nn

from app.config import Settings
from app.errors import CatalogError
from app.inference.catalog import ImageSpec, ModelSpec, TabularSpec, load_catalog
from app.inference.loading import load_model
from app.metrics import Metrics
from app.runtime.model_entry import build_entry

CPU = torch.device("cpu")


class TinyCNN(nn.Module):
    """3 -> 4 -> 4 channel convs, global pooling, a linear head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def tiny_cnn(num_classes: int = 3) -> nn.Module:
    return TinyCNN(num_classes)


def tiny_mlp(in_features: int = 3, out_features: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, 4), nn.ReLU(), nn.Linear(4, out_features))


# ---------------------------------------------------------------------------------------------
# Writing catalogs


def write_catalog(folder: Path, *entries: dict[str, Any]) -> Path:
    path = folder / "catalog.toml"
    path.write_text(tomli_w.dumps({"models": list(entries)}), encoding="utf-8")
    return path


def tabular_entry(folder: Path, name: str = "tab", in_features: int = 3, out_features: int = 2,
                  **changes: Any) -> dict[str, Any]:
    """A valid tabular entry whose weights (a tiny MLP) are written into `folder`."""
    weights = folder / f"{name}.safetensors"
    save_file(tiny_mlp(in_features, out_features).state_dict(), str(weights))
    entry: dict[str, Any] = {
        "name": name,
        "kind": "tabular",
        "task": "classification",
        "format": "state_dict",
        "builder": f"{__name__}:tiny_mlp",
        "builder_args": {"in_features": in_features, "out_features": out_features},
        "weights": weights.name,
        "labels": ["no", "yes"],
        "features": ["a", "b", "c"],
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def image_entry(folder: Path, name: str = "img", num_classes: int = 3, **changes: Any) -> dict[str, Any]:
    weights = folder / f"{name}.safetensors"
    save_file(tiny_cnn(num_classes).state_dict(), str(weights))
    entry: dict[str, Any] = {
        "name": name,
        "kind": "image",
        "task": "classification",
        "format": "state_dict",
        "builder": f"{__name__}:tiny_cnn",
        "builder_args": {"num_classes": num_classes},
        "weights": weights.name,
        "labels": ["r", "g", "b"],
        "image": {"size": [16, 16]},
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def catalog_error(path: Path) -> str:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return str(info.value)


def load_error(path: Path) -> str:
    """The message when the catalog parses but the model does not fit it."""
    (spec,) = load_catalog(path)
    with pytest.raises(CatalogError) as info:
        load_model(spec, CPU)
    return str(info.value)


def assert_names(message: str, entry: str, key: str) -> None:
    assert f"catalog entry '{entry}'" in message, message
    assert re.search(rf"(^|[\s'(.]){re.escape(key)}(?![\w.])", message), f"{key!r} not in {message!r}"


# ---------------------------------------------------------------------------------------------
# Valid catalogs


def test_valid_catalog_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    sub = tmp_path / "zoo"
    sub.mkdir()
    (sub / "labels.txt").write_text("red\n\n  green \nblue\n", encoding="utf-8")
    img = image_entry(sub, labels=None, labels_file="labels.txt")
    img["weights"] = "img.safetensors"
    path = write_catalog(sub, tabular_entry(sub, tabular={"mean": [0, 1, 2], "std": [1, 2, 3]}), img)
    tab_spec, img_spec = load_catalog(path)
    assert isinstance(tab_spec, ModelSpec)
    assert tab_spec.name == "tab"
    assert tab_spec.weights == sub / "tab.safetensors"
    assert tab_spec.catalog_dir == sub.resolve()
    assert tab_spec.label_list == ["no", "yes"]
    assert tab_spec.tabular is not None and tab_spec.tabular.std == [1, 2, 3]
    assert img_spec.labels_file == sub / "labels.txt"
    assert img_spec.label_list == ["red", "green", "blue"]
    assert img_spec.image_spec.size == (16, 16)
    assert img_spec.image_spec.resize == "shorter_side_crop"


def test_absolute_weights_path_is_kept(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path)
    entry["weights"] = str(tmp_path / "tab.safetensors")
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (spec,) = load_catalog(write_catalog(elsewhere, entry))
    assert spec.weights == tmp_path / "tab.safetensors"


def test_regression_needs_no_labels(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, out_features=1, task="regression", labels=None)
    (spec,) = load_catalog(write_catalog(tmp_path, entry))
    assert spec.label_list is None
    assert load_model(spec, CPU).out_width == 1


# ---------------------------------------------------------------------------------------------
# File-level problems


def test_missing_catalog_file(tmp_path: Path) -> None:
    message = catalog_error(tmp_path / "nope.toml")
    assert "not found" in message and "nope.toml" in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text('[[models]]\nname = "a\nkind = tabular\n', encoding="utf-8")
    message = catalog_error(path)
    assert "not valid TOML" in message
    assert str(path) in message


@pytest.mark.parametrize("text", ["", "# nothing\n", "models = []\n", "[other]\nx = 1\n", "models = 3\n"])
def test_no_models(tmp_path: Path, text: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    assert "has no [[models]] entries" in catalog_error(path)


def test_entry_that_is_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text('models = ["resnet"]\n', encoding="utf-8")
    assert_names(catalog_error(path), "#0", "(entry)")


# ---------------------------------------------------------------------------------------------
# Entry-level problems, found while parsing


def test_missing_weights_file(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="lost", weights="gone/weights.safetensors")
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "lost", "weights")
    assert "file not found" in message and "gone/weights.safetensors" in message


def test_missing_labels_file(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="nolabels", labels=None, labels_file="labels.txt")
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "nolabels", "labels_file")
    assert "file not found" in message


def test_weights_that_is_not_a_path(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="numeric", weights=5)
    assert_names(catalog_error(write_catalog(tmp_path, entry)), "numeric", "weights")


def test_unknown_format(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="onnx-model", format="onnx")
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "onnx-model", "format")
    assert "'state_dict'" in message and "'torchscript'" in message


@pytest.mark.parametrize("name", ["Bad", "-leading", ".hidden", "a/b", "with space", "ünï", ""])
def test_bad_name_pattern(tmp_path: Path, name: str) -> None:
    entry = tabular_entry(tmp_path, name="ok")
    entry["name"] = name
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, name, "name")
    assert "pattern" in message


def test_missing_name_is_named_by_position(tmp_path: Path) -> None:
    first = tabular_entry(tmp_path, name="first")
    second = tabular_entry(tmp_path, name="second")
    del second["name"]
    message = catalog_error(write_catalog(tmp_path, first, second))
    assert_names(message, "#1", "name")
    assert "Field required" in message


def test_duplicate_name(tmp_path: Path) -> None:
    entries = [tabular_entry(tmp_path, name="twin"), image_entry(tmp_path, name="other"),
               tabular_entry(tmp_path, name="twin")]
    message = catalog_error(write_catalog(tmp_path, *entries))
    assert_names(message, "twin", "name")
    assert "duplicate" in message


def test_state_dict_without_builder(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="nobuilder", builder=None)
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "nobuilder", "builder")
    assert "format 'state_dict' needs 'builder'" in message


def test_builder_without_colon(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="dotted", builder="models.zoo.mlp")
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "dotted", "builder")


def test_torchvision_without_architecture(tmp_path: Path) -> None:
    entry = image_entry(tmp_path, name="tv", format="torchvision", builder=None, weights=None)
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "tv", "architecture")
    assert "format 'torchvision' needs 'architecture'" in message


@pytest.mark.parametrize("fmt", ["state_dict", "export", "torchscript"])
def test_formats_that_need_weights(tmp_path: Path, fmt: str) -> None:
    entry = image_entry(tmp_path, name="noweights", format=fmt, weights=None)
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "noweights", "weights")


def test_unknown_key(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="typo", lables=["x"])
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "typo", "lables")
    assert "Extra inputs are not permitted" in message


@pytest.mark.parametrize(("changes", "key", "text"), [
    ({"kind": "audio"}, "kind", "unknown kind 'audio' (known: tabular, image)"),
    ({"task": "ranking"}, "task", "'regression'"),
    ({"precision": "int8"}, "precision", "'bf16'"),
    ({"max_batch_size": 0}, "max_batch_size", "greater than or equal to 1"),
    ({"labels": None}, "labels", "need 'labels' or 'labels_file'"),
    ({"features": None}, "features", "tabular models need 'features'"),
    ({"features": ["a", "a", "c"]}, "features", "must be unique"),
    ({"image": {"size": [16, 16]}}, "image", "no [models.image] table"),
    ({"tabular": {"mean": [0, 0]}}, "tabular.mean", "2 values for 3 features"),
    ({"tabular": {"std": [1, 0, 1]}}, "tabular", "std values must be positive"),
    ({"labels": []}, "labels", "no labels given"),
])
def test_tabular_entry_problems(tmp_path: Path, changes: dict[str, Any], key: str, text: str) -> None:
    entry = tabular_entry(tmp_path, name="t1")
    entry.update(changes)
    entry = {k: v for k, v in entry.items() if v is not None}
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "t1", key)
    assert text in message


def test_labels_and_labels_file_together(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("no\nyes\n", encoding="utf-8")
    entry = tabular_entry(tmp_path, name="both", labels_file="labels.txt")
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "both", "labels_file")
    assert "not both" in message


def test_empty_labels_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("\n  \n", encoding="utf-8")
    entry = tabular_entry(tmp_path, name="blank", labels=None, labels_file="labels.txt")
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "blank", "labels")


@pytest.mark.parametrize(("image", "key", "text"), [
    ({"size": [4, 16]}, "image", "between 8 and 4096"),
    ({"size": [16, 16], "resize": "pad"}, "image.resize", "'stretch'"),
    ({"size": [16, 16], "std": [1, 0, 1]}, "image", "std values must be positive"),
    ({"size": [16, 16], "mean": [0.5, 0.5]}, "image.mean.2", "Field required"),
    ({"size": [16, 16], "colour": "rgb"}, "image.colour", "Extra inputs"),
    ({"size": [16, 16], "background": [255, 255, 256]}, "image", "each value in 0..255"),
    ({"size": [16, 16], "background": [0, 0]}, "image.background.2", "Field required"),
])
def test_image_table_problems(tmp_path: Path, image: dict[str, Any], key: str, text: str) -> None:
    entry = image_entry(tmp_path, name="i1", image=image)
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "i1", key)
    assert text in message


def test_image_model_with_features(tmp_path: Path) -> None:
    entry = image_entry(tmp_path, name="i2", features=["a"])
    message = catalog_error(write_catalog(tmp_path, entry))
    assert_names(message, "i2", "features")


# ---------------------------------------------------------------------------------------------
# Entry-level problems, found when the model is loaded against its entry


def test_label_count_not_matching_output_width(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="wide", out_features=3, labels=["no", "yes"])
    message = load_error(write_catalog(tmp_path, entry))
    assert_names(message, "wide", "labels")
    assert "2 labels for a model with 3 outputs" in message


def test_label_file_count_not_matching_output_width(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("r\ng\nb\nx\n", encoding="utf-8")
    entry = image_entry(tmp_path, name="img4", labels=None, labels_file="labels.txt")
    message = load_error(write_catalog(tmp_path, entry))
    assert_names(message, "img4", "labels_file")
    assert "4 labels for a model with 3 outputs" in message


def test_one_output_with_two_labels_is_a_binary_classifier(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="binary", out_features=1, labels=["no", "yes"])
    (spec,) = load_catalog(write_catalog(tmp_path, entry))
    model = load_model(spec, CPU)
    assert model.out_width == 1
    assert model.labels == ["no", "yes"]


def test_feature_count_not_matching_input_width(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="narrow", in_features=5)  # 3 features listed
    message = load_error(write_catalog(tmp_path, entry))
    assert_names(message, "narrow", "features")
    assert "inputs of 3 per row" in message


def test_regression_with_several_outputs(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="reg", task="regression", labels=None)
    message = load_error(write_catalog(tmp_path, entry))
    assert_names(message, "reg", "task")
    assert "one output" in message


def test_gradcam_layer_naming_a_missing_module(tmp_path: Path) -> None:
    entry = image_entry(tmp_path, name="cam", image={"size": [16, 16], "gradcam_layer": "features.9"})
    message = load_error(write_catalog(tmp_path, entry))
    assert_names(message, "cam", "image.gradcam_layer")
    assert "features.9" in message


def test_gradcam_layer_that_exists(tmp_path: Path) -> None:
    entry = image_entry(tmp_path, name="cam", image={"size": [16, 16], "gradcam_layer": "features.0"})
    (spec,) = load_catalog(write_catalog(tmp_path, entry))
    model = load_model(spec, CPU)
    assert model.facts.gradcam_layer == "features.0"
    assert model.layer("net.features.0") is model.module.net.features[0]


def test_builder_that_cannot_be_imported(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="ghost", builder="no_such_module_xyz:build")
    message = load_error(write_catalog(tmp_path, entry))
    assert_names(message, "ghost", "builder")
    entry = tabular_entry(tmp_path, name="ghost2", builder=f"{__name__}:no_such_function")
    assert_names(load_error(write_catalog(tmp_path, entry)), "ghost2", "builder")


def test_builder_beside_the_catalog_is_imported(tmp_path: Path) -> None:
    module = "catalog_test_local_builders"
    (tmp_path / f"{module}.py").write_text(
        "from torch import nn\n\ndef net(n):\n    return nn.Linear(n, 2)\n", encoding="utf-8")
    weights = tmp_path / "linear.safetensors"
    save_file(nn.Linear(3, 2).state_dict(), str(weights))
    entry = tabular_entry(tmp_path, name="local", builder=f"{module}:net", builder_args={"n": 3})
    entry["weights"] = weights.name
    (spec,) = load_catalog(write_catalog(tmp_path, entry))
    assert load_model(spec, CPU).out_width == 2


def test_bad_builder_args(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="args", builder_args={"in_features": 3, "depth": 9})
    assert_names(load_error(write_catalog(tmp_path, entry)), "args", "builder_args")


def failing_builder(**kwargs: object) -> object:
    raise ValueError("the builder's own bug")


def not_a_module(**kwargs: object) -> object:
    return {"weights": "a dict, not a network"}


@pytest.mark.parametrize(("builder", "text"), [
    ("failing_builder", "raised ValueError: the builder's own bug"),
    ("not_a_module", "returned a dict, not a torch.nn.Module"),
])
def test_a_builder_that_fails_names_the_entry(tmp_path: Path, builder: str, text: str) -> None:
    entry = tabular_entry(tmp_path, name="broken-builder", builder=f"{__name__}:{builder}", builder_args={})
    message = load_error(write_catalog(tmp_path, entry))
    assert_names(message, "broken-builder", "builder")
    assert text in message


def test_weights_that_do_not_fit_the_builder(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="misfit")
    entry["builder_args"] = {"in_features": 3, "out_features": 5}
    message = load_error(write_catalog(tmp_path, entry))
    assert_names(message, "misfit", "weights")
    assert "does not fit the model" in message


def test_unknown_torchvision_architecture(tmp_path: Path) -> None:
    entry = image_entry(tmp_path, name="tv", format="torchvision", builder=None, weights=None,
                        architecture="resnet9000", builder_args={})
    assert_names(load_error(write_catalog(tmp_path, entry)), "tv", "architecture")


# ---------------------------------------------------------------------------------------------
# Method choices: checked by the registry when it builds the entry


def registry_error(path: Path) -> str:
    (spec,) = load_catalog(path)
    with pytest.raises(CatalogError) as info:
        build_entry(spec, Settings(models=path, device="cpu"), Metrics())
    return str(info.value)


def test_default_method_of_another_kind(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="tab-cam", default_method="gradcam")
    message = registry_error(write_catalog(tmp_path, entry))
    assert_names(message, "tab-cam", "default_method")
    assert "'gradcam' is not offered" in message
    assert "integrated_gradients" in message


def test_unknown_default_method(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="tab-x", default_method="magic")
    message = registry_error(write_catalog(tmp_path, entry))
    assert_names(message, "tab-x", "default_method")
    assert "'magic' is not offered" in message


def test_default_method_not_in_methods(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="tab-sub", methods=["saliency"],
                          default_method="integrated_gradients")
    message = registry_error(write_catalog(tmp_path, entry))
    assert_names(message, "tab-sub", "default_method")
    assert "(offered: saliency)" in message


def test_unknown_method_in_methods(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="tab-m", methods=["saliency", "magic"])
    message = registry_error(write_catalog(tmp_path, entry))
    assert_names(message, "tab-m", "methods")
    assert "'magic'" in message


def test_method_params_for_an_unknown_method(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="tab-p", method_params={"magic": {"n_steps": 3}})
    message = registry_error(write_catalog(tmp_path, entry))
    assert_names(message, "tab-p", "method_params")


def test_gradcam_is_not_offered_for_torchscript(tmp_path: Path) -> None:
    archive = tmp_path / "cnn.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        torch.jit.save(torch.jit.trace(tiny_cnn().eval(), torch.rand(1, 3, 16, 16)), str(archive))
    entry = image_entry(tmp_path, name="ts", format="torchscript", builder=None, builder_args={},
                        weights=archive.name, default_method="gradcam")
    message = registry_error(write_catalog(tmp_path, entry))
    assert_names(message, "ts", "default_method")
    assert "'gradcam' is not offered" in message


def test_valid_methods_build(tmp_path: Path) -> None:
    entry = tabular_entry(tmp_path, name="tab-ok", methods=["saliency", "integrated_gradients"],
                          default_method="integrated_gradients")
    path = write_catalog(tmp_path, entry)
    (spec,) = load_catalog(path)
    built = build_entry(spec, Settings(models=path, device="cpu"), Metrics())
    try:
        assert built.methods == ["saliency", "integrated_gradients"]
        assert built.info.default_method == "integrated_gradients"
    finally:
        for worker in built.workers:
            worker.close()


def _documented_keys(section: str | None) -> set[str]:
    """The keys named in the first cell of the API reference's catalog table rows (`[models.image]`
    rows for `section="image"`)."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "api.md").read_text()
    keys: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cell = line.split("|")[1]
        row_section = re.match(r"\s*`\[models\.(\w+)\]`", cell)
        if (row_section.group(1) if row_section else None) == section:
            keys |= set(re.findall(r"`([a-z_]+)`", cell))
    return keys


def test_the_api_reference_documents_every_catalog_key() -> None:
    entry = set(ModelSpec.model_fields) - {"catalog_dir", "tabular", "image"}  # catalog_dir is set by the loader
    assert entry - _documented_keys(None) == set()
    assert set(TabularSpec.model_fields) - _documented_keys("tabular") == set()
    assert set(ImageSpec.model_fields) - _documented_keys("image") == set()
