"""BatchNorm folded into the convolution before it, once at load: the same function in fewer passes.

In eval mode a BatchNorm2d is a per-channel affine map of its input, so a Conv2d whose output only
feeds it can absorb it: weight x scale, (bias - running mean) x scale + shift, with scale =
gamma / sqrt(running var + eps). The BatchNorm becomes `nn.Identity` in place, so every module
keeps its path (the BatchNorm's output, now the conv's, is what it was) and hooks on containers
(`layer4`) see what they saw. Outputs and gradients agree with the unfolded net to float32
rounding (tests/unit/inference/test_folding.py); the gain is measured in bench/results/history.md.

The one thing folding changes is the folded conv's own output, which is now the normalised map.
So the originals are kept (`Unfolded`, inside the served module: a replica's copy has its own),
and a layer method that names a folded conv runs its batch with that conv and its BatchNorm
swapped back in (`Unfolded.swapped`): one worker thread owns a replica, so no other batch sees
the swap. The pairs are found by tracing the net with torch.fx; a net it cannot trace
(data-dependent control flow) is served unfolded.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from app.inference.tracing import links


def _pairs(net: nn.Module) -> list[tuple[str, str]]:
    """(conv path, batchnorm path) where the BatchNorm's only input is the conv's only use."""
    found, modules = links(net, "BatchNorm not folded")
    return [(link.source, link.target) for link in found
            if isinstance(modules[link.source], nn.Conv2d) and isinstance(modules[link.target], nn.BatchNorm2d)]


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and not norm.training
            and norm.running_mean is not None and norm.running_var is not None
            and conv.out_channels == norm.num_features)


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """`conv` becomes `norm(conv(x))`, computed in float64 and stored in the conv's dtype."""
    assert norm.running_mean is not None and norm.running_var is not None
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.weight is not None:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double()
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(shift)
    conv.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
    folded_bias = (bias * scale + shift).to(conv.weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(folded_bias, requires_grad=False)
    else:
        conv.bias.copy_(folded_bias)


def _key(path: str) -> str:
    """A module path as a ModuleDict key (which cannot hold dots)."""
    return path.replace(".", ":")


class Unfolded(nn.Module):
    """The original conv and BatchNorm of each folded pair, kept to be swapped back in."""

    def __init__(self, originals: dict[str, tuple[str, nn.Conv2d, nn.BatchNorm2d]]):
        super().__init__()
        self.norm_paths = {conv_path: norm_path for conv_path, (norm_path, _, _) in originals.items()}
        """conv path: the path of the BatchNorm folded into it."""
        self.convs = nn.ModuleDict({_key(path): conv for path, (_, conv, _) in originals.items()})
        self.norms = nn.ModuleDict({_key(path): norm for path, (_, _, norm) in originals.items()})
        self.eval()

    @contextmanager
    def swapped(self, net: nn.Module, conv_path: str) -> Iterator[None]:
        """While the block runs, `net` has the original conv at `conv_path` and its BatchNorm
        after it (for a path that was not folded, `net` as it is)."""
        if conv_path not in self.norm_paths:
            yield
            return
        norm_path = self.norm_paths[conv_path]
        conv, norm = self.convs[_key(conv_path)], self.norms[_key(conv_path)]
        folded, identity = net.get_submodule(conv_path), net.get_submodule(norm_path)
        net.set_submodule(conv_path, conv)
        net.set_submodule(norm_path, norm)
        try:
            yield
        finally:
            net.set_submodule(conv_path, folded)
            net.set_submodule(norm_path, identity)


def fold_batchnorms(net: nn.Module) -> Unfolded:
    """Fold every eval-mode BatchNorm2d into the Conv2d before it, in place; the originals of the
    folded pairs are returned."""
    originals: dict[str, tuple[str, nn.Conv2d, nn.BatchNorm2d]] = {}
    for conv_path, norm_path in _pairs(net):
        conv, norm = net.get_submodule(conv_path), net.get_submodule(norm_path)
        if not _foldable(conv, norm):
            continue
        assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        originals[conv_path] = (norm_path, copy.deepcopy(conv), norm)
        _fold(conv, norm)
        net.set_submodule(norm_path, nn.Identity().eval())
    return Unfolded(originals)
