"""Reads and validates `catalog.toml` into `ModelSpec` objects (API.md "Model catalog")."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.errors import CatalogError

if TYPE_CHECKING:
    from app.kinds.base import InputKind

Format = Literal["state_dict", "torchvision", "export", "torchscript"]
Precision = Literal["fp32", "bf16", "fp16"]

_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TabularSpec(_Strict):
    """Standardisation applied before the model, and the `mean` baseline, in raw feature units."""

    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _positive_std(self) -> TabularSpec:
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


class ImageSpec(_Strict):
    size: tuple[int, int] = Field((224, 224), description="height, width the model sees")
    resize: Literal["stretch", "shorter_side_crop"] = "shorter_side_crop"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gradcam_layer: str | None = None
    background: tuple[int, int, int] = (255, 255, 255)
    """RGB colour that transparent pixels are composited onto before the model sees them."""

    @model_validator(mode="after")
    def _valid(self) -> ImageSpec:
        if min(self.size) < 8 or max(self.size) > 4096:
            raise ValueError("size must be [height, width] between 8 and 4096")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if any(not 0 <= c <= 255 for c in self.background):
            raise ValueError("background must be [r, g, b] with each value in 0..255")
        return self


class ModelSpec(_Strict):
    """One `[[models]]` entry, paths resolved against the catalog's folder."""

    name: str = Field(pattern=_NAME_PATTERN)
    kind: str
    """An input kind (`app.kinds.KINDS`): "tabular" or "image"."""
    task: Literal["classification", "regression"]
    format: Format
    builder: str | None = None
    builder_args: dict[str, Any] = Field(default_factory=dict)
    architecture: str | None = None
    weights: Path | None = None
    labels: list[str] | None = None
    labels_file: Path | None = None
    features: list[str] | None = None
    default_method: str | None = None
    methods: list[str] | None = None
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    output: Literal["logits", "probabilities"] | None = None
    """What the module returns; absent = inferred (probabilities if it ends in Sigmoid/Softmax)."""
    device: str | None = None
    precision: Precision = "fp32"
    compile: bool = False
    fold_batchnorm: bool = True
    """Eval-mode BatchNorm2d layers folded into the Conv2d before them at load (app/inference/
    folding.py): the same function in fewer passes."""
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    """The layout of an image model's weights and activations: `auto` is channels_last for a
    convolutional net (Conv2d modules) on the CPU, where oneDNN's kernels run 1.4-4x faster in it
    (bench/results/history.md), and contiguous elsewhere."""
    conv_input_grad: Literal["auto", "subpixel", "native"] = "auto"
    """How the input gradient of a strided Conv2d with few input channels (an image net's first
    conv) is computed: `subpixel` as one stride-1 convolution and a pixel interleave
    (app/inference/subpixel.py), `native` by the conv's own backward; `auto` is `subpixel` on the
    CPU, where oneDNN's native one costs 2.5-6x the forward (bench/results/history.md)."""
    predict_graph: Literal["auto", "frozen", "eager"] = "auto"
    """What predictions run: a frozen graph of the served function (app/inference/frozen.py; `auto`:
    float32 on the CPU where the net can be scripted) or the eager module attributions run."""
    max_batch_size: int | None = Field(None, ge=1)
    max_batch_rows: int | None = Field(None, ge=1)
    """Work rows (instances x passes) per batch and per Captum chunk; default MAX_BATCH_ROWS."""
    tabular: TabularSpec | None = None
    image: ImageSpec | None = None
    examples: list[Path] = Field(default_factory=list)
    """Demo inputs the built-in page offers (`/ui`): image files, or JSON `{"instances": [...]}`."""
    catalog_dir: Path | None = Field(None, exclude=True)
    """Set by `load_catalog`: builders are also imported from here and from its parent."""

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.format == "state_dict" and not self.builder:
            raise ValueError("format 'state_dict' needs 'builder' (module:function)")
        if self.format == "torchvision" and not self.architecture:
            raise ValueError("format 'torchvision' needs 'architecture'")
        if self.format in ("state_dict", "export", "torchscript") and self.weights is None:
            raise ValueError(f"format '{self.format}' needs 'weights'")
        if self.builder and ":" not in self.builder:
            raise ValueError("builder must be 'module.path:function'")
        self.input_kind.check_spec(self)
        if self.task == "classification" and self.labels is None and self.labels_file is None:
            raise ValueError("classification models need 'labels' or 'labels_file'")
        if self.labels is not None and self.labels_file is not None:
            raise ValueError("give 'labels' or 'labels_file', not both")
        self._check_examples()
        return self

    def _check_examples(self) -> None:
        suffixes = self.input_kind.example_suffixes
        names = [path.name for path in self.examples]
        for name in names:
            if not name.lower().endswith(suffixes):
                raise ValueError(f"examples: '{name}' is not one of {', '.join(suffixes)} ({self.kind} model)")
        if len(set(names)) != len(names):
            raise ValueError("examples: file names must be unique (the page serves them by name)")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from app.kinds import KINDS  # the kinds import this module

        if value not in KINDS:
            raise ValueError(f"unknown kind {value!r} (known: {', '.join(KINDS)})")
        return value

    @property
    def input_kind(self) -> InputKind:
        from app.kinds import kind_of

        return kind_of(self.kind)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One instance as the model takes it, without the batch dimension."""
        return self.input_kind.input_shape(self)

    @property
    def image_spec(self) -> ImageSpec:
        return self.image or ImageSpec()

    @property
    def label_list(self) -> list[str] | None:
        """Labels from `labels` or the resolved `labels_file`."""
        if self.labels is not None:
            return list(self.labels)
        if self.labels_file is not None:
            lines = self.labels_file.read_text(encoding="utf-8").splitlines()
            return [line.strip() for line in lines if line.strip()]
        return None


def _entry_error(index: int, entry: dict[str, Any], exc: ValidationError) -> CatalogError:
    name = entry.get("name", f"#{index}")
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(entry)"
        problems.append(f"{key}: {err['msg']}")
    return CatalogError(f"catalog entry '{name}': " + "; ".join(problems))


def _resolve(base: Path, entry: dict[str, Any], name: str) -> None:
    for key in ("weights", "labels_file"):
        value = entry.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise CatalogError(f"catalog entry '{name}': {key}: expected a path string")
        path = Path(value)
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise CatalogError(f"catalog entry '{name}': {key}: file not found: {path}")
        entry[key] = path
    examples = entry.get("examples")
    if examples is None:
        return
    if not isinstance(examples, list) or not all(isinstance(v, str) for v in examples):
        raise CatalogError(f"catalog entry '{name}': examples: expected a list of path strings")
    resolved = [Path(v) if Path(v).is_absolute() else base / v for v in examples]
    for path in resolved:
        if not path.is_file():
            raise CatalogError(f"catalog entry '{name}': examples: file not found: {path}")
        if path.suffix.lower() == ".json":
            _check_rows(path, name)
    entry["examples"] = resolved


def _check_rows(path: Path, name: str) -> None:
    """A tabular example file holds `{"instances": [row, ...]}` (rows as objects or arrays)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CatalogError(f"catalog entry '{name}': examples: {path.name} is not valid JSON: {exc}") from None
    rows = data.get("instances") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict | list) for r in rows):
        raise CatalogError(f"catalog entry '{name}': examples: {path.name} must hold "
                           '{"instances": [row, ...]} with at least one row')


def load_catalog(path: Path) -> list[ModelSpec]:
    """Parse and validate the catalog; every problem names the entry and the key."""
    if not path.is_file():
        raise CatalogError(f"model catalog not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"model catalog {path} is not valid TOML: {exc}") from exc
    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"model catalog {path} has no [[models]] entries")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise CatalogError(f"catalog entry '#{index}': (entry): expected a [[models]] table")
        entry = dict(raw)
        name = str(entry.get("name", f"#{index}"))
        _resolve(path.parent, entry, name)
        entry["catalog_dir"] = path.parent.resolve()
        try:
            spec = ModelSpec.model_validate(entry)
        except ValidationError as exc:
            raise _entry_error(index, entry, exc) from None
        if spec.name in seen:
            raise CatalogError(f"catalog entry '{spec.name}': name: duplicate model name")
        seen.add(spec.name)
        labels = spec.label_list
        if labels is not None and len(labels) == 0:
            raise CatalogError(f"catalog entry '{spec.name}': labels: no labels given")
        specs.append(spec)
    return specs
