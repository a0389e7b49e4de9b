"""What a loaded model is like, measured once at load with one forward pass: the facts that
request-time checks (a GradCAM layer exists and has a spatial map, a baseline fits) and chunk
sizes depend on.

The probe hooks every submodule of the user's net and records each one's output. Hooks fire as a
module returns, so containers come after their children and the order is the order in which
outputs are final: the last module whose output is a spatial map (N x C x H x W with H and W > 1)
is the last block before pooling (`layer4` of a ResNet), the conventional GradCAM layer.
The same forward counts the model's floating-point operations (torch's `FlopCounterMode`):
a deterministic measure of its compute per row, unlike a timed probe on a busy host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from app.errors import InvalidInput, quoted

PROBE_ROWS = 2
NET_PREFIX = "net."
"""The user's net is `net` inside the served wrapper: layer names in requests are relative to it."""


@dataclass(frozen=True)
class ModelFacts:
    name: str
    input_shape: tuple[int, ...]
    has_mean: bool
    """The catalog gives the mean input (the `mean` baseline)."""
    bytes_per_row: int
    """The largest tensor a forward creates (input, any module's output), per row."""
    spatial_layers: tuple[str, ...] = ()
    """Modules of the net with a spatial output map, in the order their outputs are final."""
    hookable: bool = True
    """Hooks attach to its modules (not a TorchScript archive): layer methods can be offered."""
    gradcam_layer: str | None = None
    """The catalog's `gradcam_layer`, else the last spatial layer."""
    layer_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)
    reused: dict[str, str] = field(default_factory=dict, compare=False)
    """Modules a forward calls more than once (path: class name): DeepLift cannot attribute
    through a reused non-linearity (a torchvision ResNet block's `relu`)."""
    flops_per_row: int = 0
    """Floating-point operations of one row's forward (matrix products and convolutions, as
    torch's FlopCounterMode counts them); 0 where they could not be counted."""

    @property
    def spatial_input(self) -> bool:
        return len(self.input_shape) == 3

    def spatial_layer(self, name: str, where: str = "params.layer") -> str:
        """The module path of `name` inside the served wrapper; 422 unless it has a spatial map."""
        if name not in self.layer_shapes:
            raise InvalidInput(f"{where}: no module {quoted(name)} in model '{self.name}'")
        if name not in self.spatial_layers:
            shape = "x".join(str(n) for n in self.layer_shapes[name]) or "no tensor"
            raise InvalidInput(f"{where}: module {quoted(name)} of model '{self.name}' has no spatial map "
                               f"(its output is {shape} per row; a GradCAM layer gives C x H x W with H, W > 1); "
                               f"the last one is '{self.spatial_layers[-1] if self.spatial_layers else None}'")
        return NET_PREFIX + name


def probe(name: str, module: nn.Module, example: torch.Tensor, has_mean: bool,
          gradcam_layer: str | None = None) -> ModelFacts:
    """One forward of `example` (PROBE_ROWS rows) through the served `module`, hooked."""
    net = module.get_submodule("net")
    order: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    kinds: dict[str, str] = {}
    largest = example.nelement() * example.element_size()
    counter = 0

    def hook_for(path: str) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            nonlocal largest, counter
            tensors = output if isinstance(output, tuple | list) else (output,)
            for tensor in tensors:
                if isinstance(tensor, torch.Tensor):
                    largest = max(largest, tensor.nelement() * tensor.element_size())
            first = tensors[0] if tensors else None
            shapes[path] = tuple(first.shape[1:]) if isinstance(first, torch.Tensor) else ()
            counter += 1
            order[path] = counter
            calls[path] = calls.get(path, 0) + 1
        return record

    handles = []
    hookable = True
    for path, sub in net.named_modules():
        if not path:
            continue
        kinds[path] = type(sub).__name__
        try:
            handles.append(sub.register_forward_hook(hook_for(path)))
        except RuntimeError:  # TorchScript modules refuse hooks
            hookable = False
            break
    counter_mode = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter_mode:
            module(example)
    finally:
        for handle in handles:
            handle.remove()
    flops = -(-int(counter_mode.get_total_flops()) // example.shape[0])
    spatial = tuple(sorted((p for p, s in shapes.items() if len(s) == 3 and s[1] > 1 and s[2] > 1),
                           key=order.__getitem__)) if hookable else ()
    reused = {path: kinds[path] for path, n in calls.items() if n > 1} if hookable else {}
    facts = ModelFacts(name, tuple(example.shape[1:]), has_mean, -(-largest // example.shape[0]), spatial,
                       hookable and bool(shapes), None, shapes if hookable else {}, reused, flops)
    chosen = gradcam_layer if gradcam_layer is not None else (spatial[-1] if spatial else None)
    if chosen is not None and facts.hookable:
        facts.spatial_layer(chosen, "image.gradcam_layer")
        return ModelFacts(**{**facts.__dict__, "gradcam_layer": chosen})
    return facts
