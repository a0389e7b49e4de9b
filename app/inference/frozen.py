"""The frozen prediction graph: a copy of the served function for predictions only, compiled once
at load into a graph whose weights are constants (TorchScript's `freeze` and
`optimize_for_inference`: BatchNorms folded, oneDNN convolution weights packed once instead of on
every call). It computes no gradients, so attributions keep the eager module; a prediction is the
same function within float rounding (checked at load).

Catalog `predict_graph`: `auto` freezes a float32 model on the CPU, where it was measured
(bench/results/history.md: resnet18 predictions 13-15% less CPU, the shapes CNN about 20%, a
30-feature MLP's lone row 2-3x), and keeps it eager elsewhere or where the net cannot be scripted;
`frozen` asks for it on any device and fails the load if it cannot be built; `eager` never builds
it. TorchScript is deprecated upstream but kept in the pinned torch: where it fails, `auto` serves
eagerly and says so in the log.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from app.errors import CatalogError
from app.inference.catalog import ModelSpec

logger = logging.getLogger(__name__)

_RTOL = 1e-4
"""How far a frozen prediction may be from the eager one at load (relative to the largest output):
float rounding of another summation order is about 1e-6; a graph that computes something else
(a net whose scripting changed its meaning) is far beyond it."""


class _Scores(nn.Module):
    """`net((x - mean) / std)` in the net's precision, float32 out: the served module's forward
    without the layout bookkeeping its gradient needs (`Standardized`)."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.net = net
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(((x - self.mean) / self.std).to(self.dtype)).float()


def wanted(spec: ModelSpec, device: torch.device) -> bool:
    """Whether the catalog entry's predictions on `device` should run a frozen graph."""
    if spec.predict_graph == "auto":
        return device.type == "cpu" and spec.precision == "fp32" and not spec.compile
    return spec.predict_graph == "frozen"


def _build(net: nn.Module, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # "`torch.jit.script` / `freeze` / `optimize_for_inference` is deprecated": kept in torch 2.14.
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(_Scores(net, mean, std, dtype).eval())
        return torch.jit.optimize_for_inference(torch.jit.freeze(scripted))


def frozen_scores(spec: ModelSpec, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype,
                  probe: torch.Tensor, expected: torch.Tensor) -> torch.jit.ScriptModule | None:
    """The frozen graph of `net` inside the normalisation, or None where it is not wanted or (for
    `auto`) cannot be built or does not give `expected` for `probe`. Warmed up on `probe`."""
    if not wanted(spec, probe.device):
        return None
    try:
        graph = _build(net, mean, std, dtype)
        with torch.inference_mode():
            got = graph(probe)
            graph(probe)  # the graph executor optimises on its second run
    except Exception as exc:  # scripting refuses much of Python; the reason is in the message
        _refused(spec, f"it cannot be scripted: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return None
    scale = float(expected.abs().max()) or 1.0
    error = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if error > _RTOL * scale:
        _refused(spec, f"its outputs differ from the eager module's by {error:.3g} (largest output {scale:.3g})")
        return None
    logger.info("model %s: predictions run a frozen graph", spec.name)
    return graph


def _refused(spec: ModelSpec, reason: str) -> None:
    """A catalog error where the frozen graph was asked for; else a line in the log."""
    if spec.predict_graph == "frozen":
        raise CatalogError(f"catalog entry '{spec.name}': predict_graph: frozen, but {reason}")
    logger.info("model %s: predictions run eagerly: %s", spec.name, reason)
