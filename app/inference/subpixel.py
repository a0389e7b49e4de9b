"""The input gradient of a strided convolution with few input channels (an image net's first conv),
computed as one stride-1 convolution and a pixel interleave: the "sub-pixel" form of the
transposed convolution. The same sums as the native backward in another order.

Why: on the CPU, oneDNN's backward to the input of a stride-2 convolution onto 3 channels costs
2.5-6x its forward (its kernels vectorise over the input's channels, and there are three): per
16 rows of the shapes CNN 3.6 ms against a 0.6 ms forward, per 8 rows of ResNet's 7x7 first conv
91 against 18 ms (bench/results/history.md). Attributions to pixels pay it on every step of every
path; this form costs 2.3 and 37 ms there. Convs with many input channels are faster natively
(the form is then 1.7-2x slower), so only those with at most `FEW_CHANNELS` are rewritten.

The arithmetic, per spatial dimension (stride s, padding p, kernel K): the input's index
s*a + ph (phase ph < s) receives go[a + d] * w[ph + p - s*d] for every d whose tap lies in the
kernel. Per phase that is a small stride-1 correlation of go; all s*s phases at once are one
convolution of go (padded or cropped to the offsets d) with a kernel of s*s*C output channels,
zero where a phase has no tap, and putting those channels back as the phases' pixels gives the
gradient (N x C x H x W, contiguous: what the served module hands back to attribution code).

Only the gradient changes: the forward is the conv's own, so outputs, predictions and frozen
graphs are untouched (a scripted graph takes the plain branch). Used while gradients are recorded
for inputs that need them and the weights do not (served weights never do). The phases' kernel is
built from the weights once, when the conv is rewritten at load; served weights do not change.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from app.inference.tracing import is_scripting

FEW_CHANNELS = 4
"""Convs with at most this many input channels are rewritten (measured: 3 channels 1.8-2.5x
faster; 64 channels and more 1.7-2x slower)."""

Taps = list[list[tuple[int, int]]]
"""Per phase, the (offset d, kernel index k) pairs of one spatial dimension."""


def _taps(stride: int, padding: int, kernel: int) -> tuple[Taps, int, int]:
    """Per phase ph < stride, the (d, k) with k = ph + padding - stride * d inside the kernel;
    and the least and greatest d over all phases."""
    per_phase: Taps = []
    for ph in range(stride):
        low = -((kernel - 1 - ph - padding) // stride)  # ceil((ph + padding - kernel + 1) / stride)
        high = (ph + padding) // stride
        per_phase.append([(d, ph + padding - stride * d) for d in range(low, high + 1)])
    offsets = [d for taps in per_phase for d, _ in taps]
    return per_phase, min(offsets), max(offsets)


def eligible(module: nn.Module) -> bool:
    """A plain `nn.Conv2d` with a stride over 1, few input channels, no groups or dilation, zero
    padding of fixed size: what the sub-pixel form computes."""
    return (type(module) is nn.Conv2d and module.in_channels <= FEW_CHANNELS and module.groups == 1
            and module.dilation == (1, 1) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str) and max(module.stride) > 1)


class _SubpixelInputGradient(torch.autograd.Function):
    """The conv's forward; its backward the sub-pixel input gradient (nothing else needs one)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, conv: SubpixelGradConv2d) -> torch.Tensor:
        ctx.conv = conv
        ctx.size = (int(x.shape[-2]), int(x.shape[-1]))
        return conv.plain(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.conv.input_gradient(grad, ctx.size), None


class SubpixelGradConv2d(nn.Conv2d):
    """A Conv2d (sharing the original's weight and bias) whose input gradient is the sub-pixel form."""

    def __init__(self, conv: nn.Conv2d):
        if not eligible(conv):
            raise ValueError("not a strided Conv2d with few input channels")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
                         conv.padding, bias=False, device="meta")  # type: ignore[arg-type]
        self.weight = conv.weight
        self.bias = conv.bias
        self.training = conv.training
        padding = conv.padding
        assert not isinstance(padding, str)  # eligible() refused "same" and "valid"
        rows, self._row_low, self._row_high = _taps(self.stride[0], padding[0], self.kernel_size[0])
        cols, self._col_low, self._col_high = _taps(self.stride[1], padding[1], self.kernel_size[1])
        self.grad_kernel: torch.Tensor
        self.register_buffer("grad_kernel", self._kernel(rows, cols), persistent=False)

    @torch.no_grad()
    def _kernel(self, rows: Taps, cols: Taps) -> torch.Tensor:
        """(sh * sw * C) x O x (rows of offsets) x (columns of offsets), channels ordered (ph, pw, c)."""
        sh, sw = self.stride
        out_channels, channels = self.weight.shape[:2]
        kernel = self.weight.new_zeros(sh, sw, channels, out_channels, self._row_high - self._row_low + 1,
                                       self._col_high - self._col_low + 1)
        for ph, row_taps in enumerate(rows):
            for pw, col_taps in enumerate(cols):
                for d, k in row_taps:
                    for e, j in col_taps:
                        kernel[ph, pw, :, :, d - self._row_low, e - self._col_low] = self.weight[:, :, k, j].t()
        return kernel.reshape(sh * sw * channels, out_channels, *kernel.shape[-2:])

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight, self.bias)

    def input_gradient(self, grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The gradient with respect to an input of `size` (H, W), given the output's `grad`."""
        sh, sw = self.stride
        height, width = size
        blocks_h, blocks_w = -(-height // sh), -(-width // sw)
        out_h, out_w = grad.shape[-2:]
        # Block a needs go[a + d] for every offset d (zeros outside go): the conv's own zero padding,
        # as much as the larger side needs, and the blocks' windows sliced from its output.
        pad_h = max(0, -self._row_low, blocks_h - 1 + self._row_high - (out_h - 1))
        pad_w = max(0, -self._col_low, blocks_w - 1 + self._col_high - (out_w - 1))
        phases = F.conv2d(grad, self.grad_kernel, padding=(pad_h, pad_w))
        top, left = self._row_low + pad_h, self._col_low + pad_w
        phases = phases[:, :, top : top + blocks_h, left : left + blocks_w]
        n, channels = grad.shape[0], self.in_channels
        pixels = (phases.permute(0, 2, 3, 1).reshape(n, blocks_h, blocks_w, sh, sw, channels)
                  .permute(0, 5, 1, 3, 2, 4).reshape(n, channels, blocks_h * sh, blocks_w * sw))
        if (blocks_h * sh, blocks_w * sw) != (height, width):
            pixels = pixels[:, :, :height, :width].contiguous()
        return pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two ifs: TorchScript skips a branch on `not is_scripting()` only as a whole condition,
        # so a scripted (frozen) graph compiles the plain conv alone.
        if not is_scripting():  # noqa: SIM102
            if self._subpixel_wanted(x):
                out: torch.Tensor = _SubpixelInputGradient.apply(x, self)
                return out
        return self.plain(x)

    @torch.jit.unused
    def _subpixel_wanted(self, x: torch.Tensor) -> bool:
        weights_fixed = not self.weight.requires_grad and (self.bias is None or not self.bias.requires_grad)
        return torch.is_grad_enabled() and x.requires_grad and weights_fixed and x.dim() == 4


def rewrite_strided_convs(net: nn.Module) -> list[str]:
    """Replace every eligible conv of `net` (in place) by its sub-pixel-gradient twin; their paths."""
    paths = [path for path, module in net.named_modules() if path and eligible(module)]
    for path in paths:
        net.set_submodule(path, SubpixelGradConv2d(net.get_submodule(path)))  # type: ignore[arg-type]
    return paths
