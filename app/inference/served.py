"""The served module: the user's net inside the catalog's normalisation, in its precision and memory
format, with the BatchNorm layers folded at load kept aside (app/inference/folding.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from app.errors import CatalogError
from app.inference.catalog import ModelSpec
from app.inference.facts import NET_PREFIX
from app.inference.folding import Unfolded, fold_batchnorms
from app.inference.reordering import Reordered, reorder_relu_pools
from app.inference.subpixel import rewrite_strided_convs

logger = logging.getLogger(__name__)


class _Laid(torch.autograd.Function):
    """`x` in `memory_format`; its gradient back in the layout of `x` (contiguous), as attribution
    code and numpy expect it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        return x.contiguous(memory_format=memory_format)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.contiguous(), None


class _StandardizedLaidOut(torch.autograd.Function):
    """`(x - mean) / std` for a contiguous float32 `x`, written channels-last: `x` copied into that
    layout once, then standardised in place row by row of it (`_standardized_rows`' operations),
    instead of two new contiguous tensors and a transposing copy of the second. Its gradient is
    what autograd makes of the plain expression and `_Laid`: the incoming gradient made contiguous,
    then divided by `std`. The same bits either way (tests/unit/inference/test_layout.py); on the
    shapes CNN's integrated gradients (32-row chunks of 128 x 128 inputs) 4% less CPU a row."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(std)
        out = torch.empty_like(x, memory_format=torch.channels_last)
        out.copy_(x)
        n, c, h, w = out.shape
        rows = out.permute(0, 2, 3, 1).view(n * h, w * c)
        rows.sub_(mean.reshape(c).repeat(w)).div_(std.reshape(c).repeat(w))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (std,) = ctx.saved_tensors
        return grad.contiguous() / std, None, None


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _standardized_rows(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`(x - mean) / std` for a channels-last `x`, in its layout: its memory is N x H x W x C, so
    each image row is W x C numbers against the channels' values repeated W times. The same float
    operations on every number; broadcasting a (1, C, 1, 1) tensor over a channels-last one puts
    the C channels innermost, which TensorIterator runs 8x slower (16 shapes images: 1.3 ms
    against 0.16), and the contiguous way needs a transposing copy each way (0.4 and 0.3 ms)."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h, w * c)
    z = (rows - mean.reshape(c).repeat(w)) / std.reshape(c).repeat(w)
    return z.reshape(n, h, w, c).permute(0, 3, 1, 2)


class Standardized(nn.Module):
    """`net((x - mean) / std)` in the net's precision and memory format, returning float32 outputs.
    What is attributed (x, and its gradient) stays contiguous."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype,
                 memory_format: torch.memory_format = torch.contiguous_format, unfolded: Unfolded | None = None,
                 reordered: Reordered | None = None):
        super().__init__()
        self.net = net
        self.unfolded = unfolded if unfolded is not None else Unfolded({})
        """The convs folded with their BatchNorm at load, as they were (app/inference/folding.py)."""
        self.reordered = reordered if reordered is not None else Reordered({})
        """The ReLUs moved after their max-pools at load, as they were (app/inference/reordering.py)."""
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.dtype = dtype
        self.memory_format = memory_format
        self.training = False  # nn.Module starts in training mode; this one is served in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format is torch.channels_last and _channels_last(x):
            z = _standardized_rows(x, self.mean, self.std).to(self.dtype)  # already the net's layout
        elif (self.memory_format is torch.channels_last and x.dim() == 4 and x.dtype == self.dtype == torch.float32
              and x.is_contiguous()):
            z = _StandardizedLaidOut.apply(x, self.mean, self.std)
        else:
            z = ((x - self.mean) / self.std).to(self.dtype)
            if self.memory_format is not torch.contiguous_format:
                z = _Laid.apply(z, self.memory_format)
        out = self.net(z)
        return out.float()

    @contextmanager
    def layer(self, path: str) -> Iterator[nn.Module]:
        """For a layer method's batch: the module at `path` (relative to this module: `net.layer4`),
        a folded conv swapped back to its original, with its BatchNorm, and a moved ReLU whose move
        changes that module's output put back before its max-pool, meanwhile."""
        in_net = path.removeprefix(NET_PREFIX)
        with self.unfolded.swapped(self.net, in_net), self.reordered.restored(self.net, in_net):
            yield self.get_submodule(path)

    @contextmanager
    def as_built(self) -> Iterator[None]:
        """Every moved ReLU back before its max-pool meanwhile: the non-linear modules as the net
        defines them, for methods whose rules are per module (DeepLift)."""
        with self.reordered.restored(self.net):
            yield

    def train(self, mode: bool = True) -> Standardized:
        # Exported programs refuse train()/eval(); the served module is always in eval mode.
        self.training = False
        return self


def memory_format_for(spec: ModelSpec, net: nn.Module, device: torch.device) -> torch.memory_format:
    """The catalog's `memory_format`; `auto`: channels_last for a net with 2-D convolutions of
    images on the CPU (not measured on GPUs: contiguous there)."""
    if spec.memory_format == "auto":
        convolutional = any(isinstance(m, nn.Conv2d) for m in net.modules())
        wanted = device.type == "cpu" and len(spec.input_shape) == 3 and convolutional
    else:
        wanted = spec.memory_format == "channels_last"
        if wanted and len(spec.input_shape) != 3:
            raise CatalogError(f"catalog entry '{spec.name}': memory_format: channels_last is for image models "
                               "(C x H x W inputs)")
    return torch.channels_last if wanted else torch.contiguous_format


REWRITTEN_FORMATS = ("state_dict", "torchvision")
"""The formats whose nets are plain modules, rewritten at load (BatchNorm folding, sub-pixel
gradients); exported programs and TorchScript archives are served as they are."""


def folded(spec: ModelSpec, net: nn.Module) -> Unfolded:
    """BatchNorms folded into their convs (catalog `fold_batchnorm`); exported programs and
    TorchScript archives are served as they are."""
    if not spec.fold_batchnorm or spec.format not in REWRITTEN_FORMATS:
        return Unfolded({})
    unfolded = fold_batchnorms(net)
    if unfolded.norm_paths:
        logger.info("model %s: %d BatchNorm layers folded into their convolutions", spec.name,
                    len(unfolded.norm_paths))
    return unfolded


def relu_pools(spec: ModelSpec, net: nn.Module) -> Reordered:
    """Each ReLU that only feeds a max-pool moved after it (the same bits, fewer values); exported
    programs and TorchScript archives are served as they are."""
    if spec.format not in REWRITTEN_FORMATS:
        return Reordered({})
    reordered = reorder_relu_pools(net)
    if reordered.pool_paths:
        logger.info("model %s: ReLU after the max-pool for %s", spec.name, ", ".join(reordered.pool_paths))
    return reordered


def subpixel_gradients(spec: ModelSpec, net: nn.Module, device: torch.device) -> list[str]:
    """Strided convs with few input channels given the sub-pixel input gradient, in place (catalog
    `conv_input_grad`; `auto`: on the CPU without `compile`, where it was measured); their paths.
    Exported programs and TorchScript archives are served as they are."""
    wanted = (spec.conv_input_grad == "subpixel"
              or (spec.conv_input_grad == "auto" and device.type == "cpu" and not spec.compile))
    if not wanted or spec.format not in REWRITTEN_FORMATS:
        return []
    paths = rewrite_strided_convs(net)
    if paths:
        logger.info("model %s: sub-pixel input gradients for %s", spec.name, ", ".join(paths))
    return paths
