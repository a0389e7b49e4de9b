"""Builds the explained function of a catalog entry and makes it resident on its device.

The served module takes what attribution is computed against (pixels in [0, 1] at the model's
input size, or raw feature values) and applies the catalog's normalisation inside, so that
normalisation is part of the explained function (API.md).
"""

from __future__ import annotations

import copy
import importlib
import logging
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from app.errors import CatalogError, InvalidInput
from app.inference.catalog import ModelSpec
from app.inference.facts import PROBE_ROWS, ModelFacts, probe
from app.inference.frozen import frozen_scores, wanted
from app.inference.served import Standardized, folded, memory_format_for, relu_pools, subpixel_gradients

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CONSTANT_OUTPUTS_KEPT = 16
"""How many number baselines' outputs a replica keeps (`LoadedModel.constant_output`)."""


@dataclass
class LoadedModel:
    """One resident replica of a catalog model."""

    spec: ModelSpec
    module: Standardized
    device: torch.device
    labels: list[str] | None
    out_width: int
    output_kind: Literal["logits", "probabilities"]
    facts: ModelFacts
    """Its input, layers and activation sizes, measured at load."""
    predictor: torch.jit.ScriptModule | None = None
    """The frozen graph predictions run where there is one (app/inference/frozen.py), else `module`."""

    constant_outputs: dict[float, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)
    """`constant_output`'s answers so far, by the number."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The served function's outputs for `x`, without gradients (call under `torch.no_grad`)."""
        return self.predictor(x) if self.predictor is not None else self.module(x)

    def constant_output(self, value: float) -> torch.Tensor:
        """The module's outputs (1 x outputs) for the input that is `value` everywhere (a number
        baseline's), computed once for each of the first `CONSTANT_OUTPUTS_KEPT` numbers asked."""
        out = self.constant_outputs.get(value)
        if out is None:
            with torch.no_grad():
                out = self.module(torch.full((1, *self.facts.input_shape), value, device=self.device))
            if len(self.constant_outputs) < CONSTANT_OUTPUTS_KEPT:
                self.constant_outputs[value] = out
        return out

    def replica(self) -> LoadedModel:
        """Another resident copy (weights and frozen graph its own), for another lane or worker."""
        module = copy.deepcopy(self.module)
        return replace(self, module=module, predictor=_frozen(self.spec, module), constant_outputs={})

    def layer(self, path: str) -> nn.Module:
        return self.module.get_submodule(path)


def resolve_device(name: str) -> torch.device:
    """`auto` is the first CUDA device where there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda:0")
    return device


def _fail(spec: ModelSpec, key: str, message: str) -> CatalogError:
    return CatalogError(f"catalog entry '{spec.name}': {key}: {message}")


def _state_dict(spec: ModelSpec, path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError derives from Exception only
            raise _fail(spec, "weights", f"{path.name} is not a safetensors file: {exc}") from exc
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for anything but plain tensors and containers
        raise _fail(spec, "weights", f"{path.name} is not a weights-only state dict: {exc}") from exc
    if not isinstance(loaded, dict):
        raise _fail(spec, "weights", f"{path.name} does not hold a state dict")
    return loaded


def _build_net(spec: ModelSpec) -> nn.Module:
    if spec.format == "state_dict":
        assert spec.builder is not None and spec.weights is not None
        builder = _import_builder(spec, spec.builder)
        try:
            net = builder(**spec.builder_args)
        except TypeError as exc:
            raise _fail(spec, "builder_args", str(exc)) from exc
        except Exception as exc:  # the catalog's own code failed: say which entry, and how
            raise _fail(spec, "builder", f"{spec.builder} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(net, nn.Module):
            raise _fail(spec, "builder", f"{spec.builder} returned a {type(net).__name__}, not a torch.nn.Module")
        _load_weights(spec, net, spec.weights)
        return net
    if spec.format == "torchvision":
        import torchvision

        try:
            net = torchvision.models.get_model(spec.architecture or "", weights=None, **spec.builder_args)
        except (ValueError, TypeError) as exc:
            raise _fail(spec, "architecture", str(exc)) from exc
        if spec.weights is not None:
            _load_weights(spec, net, spec.weights)
        return net
    if spec.format == "export":
        assert spec.weights is not None
        try:
            program = torch.export.load(str(spec.weights))
        except Exception as exc:
            raise _fail(spec, "weights", f"not a torch.export archive: {exc}") from exc
        return torch.export.unflatten(program)
    assert spec.weights is not None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)  # "`torch.jit.load` is deprecated"
            return torch.jit.load(str(spec.weights), map_location="cpu")
    except Exception as exc:
        raise _fail(spec, "weights", f"not a TorchScript archive: {exc}") from exc


def _import_builder(spec: ModelSpec, path: str) -> Any:
    """`module:function`, imported from sys.path, else from the catalog's folder or its parent."""
    module_name, _, func_name = path.partition(":")
    extra = [spec.catalog_dir, spec.catalog_dir.parent] if spec.catalog_dir else []
    try:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            for folder in extra:
                if str(folder) not in sys.path:
                    sys.path.append(str(folder))
            module = importlib.import_module(module_name)
        return getattr(module, func_name)
    except (ImportError, AttributeError) as exc:
        raise _fail(spec, "builder", f"cannot import {path}: {exc}") from exc


def _load_weights(spec: ModelSpec, net: nn.Module, path: Path) -> None:
    try:
        net.load_state_dict(_state_dict(spec, path), strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise _fail(spec, "weights", f"{path.name} does not fit the model: {exc}") from exc


def _normalisation(spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = spec.input_kind.normalisation(spec)
    return torch.from_numpy(mean.copy()), torch.from_numpy(std.copy())


def typical_input(spec: ModelSpec, batch: int = 1) -> torch.Tensor:
    """A batch of the model's mean input (where the catalog gives one), else of zeros."""
    mean = spec.input_kind.mean_input(spec)
    if mean is None:
        return torch.zeros(batch, *spec.input_shape)
    return torch.from_numpy(mean.copy()).unsqueeze(0).expand(batch, *spec.input_shape).contiguous()


def _infer_output_kind(spec: ModelSpec, net: nn.Module) -> Literal["logits", "probabilities"]:
    if spec.output is not None:
        return spec.output
    if isinstance(net, torch.jit.ScriptModule) or spec.format == "export":
        return "logits"
    leaves = [m for m in net.modules() if not list(m.children())]
    if leaves and isinstance(leaves[-1], nn.Sigmoid | nn.Softmax):
        return "probabilities"
    return "logits"


def _check_widths(spec: ModelSpec, module: Standardized, device: torch.device) -> int:
    try:
        with torch.inference_mode():
            out = module(typical_input(spec, batch=2).to(device))
    except Exception as exc:
        shape = " x ".join(str(n) for n in spec.input_shape)
        raise _fail(spec, spec.input_kind.shape_key,
                    f"the model does not accept inputs of {shape} per row: {exc}") from exc
    if out.dim() != 2 or out.shape[0] != 2:
        raise _fail(spec, "format", f"the model must return (batch, outputs); got {tuple(out.shape)}")
    width = int(out.shape[1])
    labels = spec.label_list
    if spec.task == "regression":
        if width != 1:
            raise _fail(spec, "task", f"regression models must have one output, this one has {width}")
    elif labels is not None and not (len(labels) == width or (width == 1 and len(labels) == 2)):
        key = "labels_file" if spec.labels_file is not None else "labels"
        raise _fail(spec, key, f"{len(labels)} labels for a model with {width} outputs")
    return width


def load_model(spec: ModelSpec, device: torch.device) -> LoadedModel:
    """Build, move to `device` in its precision and memory format, check against the catalog, and
    warm up (forward and backward)."""
    dtype = _DTYPES[spec.precision]
    net = _build_net(spec)
    if not isinstance(net, torch.fx.GraphModule) and spec.format != "export":
        net.eval()
    for param in net.parameters():
        param.requires_grad_(False)
    output_kind = _infer_output_kind(spec, net)
    unfolded = folded(spec, net)
    reordered = relu_pools(spec, net)  # traced before the sub-pixel convs, which fx would trace into
    subpixel_gradients(spec, net, device)
    layout = memory_format_for(spec, net, device)
    net = net.to(device=device, dtype=dtype).to(memory_format=layout)
    unfolded = unfolded.to(device=device, dtype=dtype).to(memory_format=layout)
    if spec.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    mean, std = _normalisation(spec)
    module = Standardized(net, mean, std, dtype, layout, unfolded, reordered).to(device)
    width = _check_widths(spec, module, device)
    facts = _facts(spec, module, device)
    _warm_up(spec, module, device)
    predictor = _frozen(spec, module)
    logger.info("model %s resident on %s (%s, %s, %d outputs)", spec.name, device, spec.precision,
                str(layout).removeprefix("torch."), width)
    return LoadedModel(spec, module, device, spec.label_list, width, output_kind, facts, predictor)


def _frozen(spec: ModelSpec, module: Standardized) -> torch.jit.ScriptModule | None:
    """The frozen prediction graph of `module`'s net, checked against `module` on a typical batch
    (that forward only where the graph is wanted)."""
    if not wanted(spec, module.mean.device):
        return None
    probe_rows = typical_input(spec, batch=2).to(module.mean.device)
    with torch.inference_mode():
        expected = module(probe_rows)
    with module.as_built():  # each ReLU right after its conv, where the graph fuses them
        return frozen_scores(spec, module.net, module.mean, module.std, module.dtype, probe_rows, expected)


def _facts(spec: ModelSpec, module: Standardized, device: torch.device) -> ModelFacts:
    named = spec.image.gradcam_layer if spec.image is not None else None
    try:
        return probe(spec.name, module, typical_input(spec, PROBE_ROWS).to(device),
                     spec.input_kind.mean_input(spec) is not None, named)
    except InvalidInput as exc:
        raise _fail(spec, "image.gradcam_layer", exc.detail) from exc


def _warm_up(spec: ModelSpec, module: Standardized, device: torch.device) -> None:
    x = typical_input(spec, batch=2).to(device).requires_grad_(True)
    with torch.enable_grad():
        module(x).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


