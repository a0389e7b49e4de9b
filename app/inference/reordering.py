"""A ReLU right before a max-pool moved after it, once at load: the same outputs and the same
input gradients, bit for bit, with the ReLU and its backward on a quarter of the values (a 2 x 2
pool) or fewer.

Why it is exact. ReLU is max(x, 0) and a max-pool takes maxima, so max(relu(x)) over a window is
relu(max(x)) over it (padding is -inf and a window always holds a real value). Backward, both
send a window's gradient to its first largest input, and only where that input is positive: the
pool's choice among the ReLU's outputs is the input's own where the maximum is positive (ties go
to the first in both), and where it is not, the ReLU's gradient is zero either way. Windows that
overlap add the same gradients in the same order. (tests/unit/inference/test_reordering.py checks
outputs and gradients for equality over pool shapes, ties and negative windows.)

Why it pays: in an image net the ReLU before the first pool runs on the largest maps. The shapes
CNN's two such ReLUs and their backward were 16% of an integrated-gradients batch on the CPU.

The ReLU becomes `nn.Identity` at its path and the pool a `MaxPool2dReLU` at its own, so every
module keeps its path. What changes is the output at the ReLU's path (now its input) and at a
container holding the ReLU but not the pool; a layer method naming one runs with the pair put
back (`Reordered.restored`), and so do methods whose rules are per module (DeepLift: Captum hooks
ReLU and MaxPool2d modules by type). The pairs are found by tracing the net with torch.fx, as
BatchNorm folding does; a net it cannot trace is served as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import fx, nn

from app.inference.tracing import is_scripting, links


def _pair(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value, value)


class MaxPool2dReLU(nn.MaxPool2d):
    """A max-pool followed by a ReLU (the ReLU that came before it, moved).

    Where no gradient is recorded through it (a layer method's forward up to its layer, a
    perturbation method's forwards), a 2 x 2 pool of stride 2 over an even map is two element-wise
    maxima of strided halves, rows then columns: the same values (a maximum is exact, NaN wins
    either way), without the indices the CPU's max-pool kernel always computes, 2.5-4x faster in
    channels-last (bench/results/history.md). With gradients the pool's own kernel runs: its
    backward needs those indices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two ifs: TorchScript skips a branch on `not is_scripting()` only as a whole condition, so
        # a scripted graph of the served net (a frozen one) compiles the pool's kernel alone.
        if not is_scripting():  # noqa: SIM102
            if self._pairwise(x) and not (torch.is_grad_enabled() and x.requires_grad):
                rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
                return torch.maximum(rows[..., 0::2], rows[..., 1::2]).clamp_min_(0)  # clamp_min is relu
        return F.relu(F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                   ceil_mode=self.ceil_mode))

    def _pairwise(self, x: torch.Tensor) -> bool:
        """A 2 x 2 pool of stride 2 with no padding or dilation, over a map of even height and width."""
        return (_pair(self.kernel_size) == (2, 2) and _pair(self.stride or self.kernel_size) == (2, 2)
                and _pair(self.padding) == (0, 0) and _pair(self.dilation) == (1, 1)
                and x.dim() == 4 and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0)

    @classmethod
    def after(cls, pool: nn.MaxPool2d) -> MaxPool2dReLU:
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode)


def _pairs(net: nn.Module) -> list[tuple[str, str]]:
    """(ReLU path, max-pool path) where the pool's only input is the ReLU's output and nothing else
    uses it; each module called once; an in-place ReLU only where nothing else reads its input."""
    found, modules = links(net, "ReLU before max-pool kept")
    pairs = []
    for link in found:
        relu, pool = modules[link.source], modules[link.target]
        if type(relu) is not nn.ReLU or type(pool) is not nn.MaxPool2d or pool.return_indices:
            continue
        relu_input = link.source_node.args[0] if len(link.source_node.args) == 1 else None
        if len(link.target_node.args) != 1 or link.target_node.kwargs or not isinstance(relu_input, fx.Node):
            continue
        if relu.inplace and len(relu_input.users) != 1:
            continue
        pairs.append((link.source, link.target))
    return pairs


def _within(path: str, container: str) -> bool:
    return container == "" or path == container or path.startswith(container + ".")


class Reordered(nn.Module):
    """The original ReLU and max-pool of each moved pair, kept to be put back."""

    def __init__(self, originals: dict[str, tuple[str, nn.ReLU, nn.MaxPool2d]]):
        super().__init__()
        self.pool_paths = {relu_path: pool_path for relu_path, (pool_path, _, _) in originals.items()}
        """ReLU path: the path of the max-pool it now follows."""
        self.originals = {relu_path: (relu, pool) for relu_path, (_, relu, pool) in originals.items()}
        """Not submodules (they hold no weights): put back, they would be reachable twice, and
        Captum's DeepLift, which hooks every module `apply` reaches, would hook them twice."""
        self.eval()

    def _changed_at(self, layer: str | None) -> list[str]:
        """The ReLU paths of the pairs whose move changes the output of module `layer` (None: all)."""
        return [relu for relu, pool in self.pool_paths.items()
                if layer is None or (_within(relu, layer) and not _within(pool, layer))]

    @contextmanager
    def restored(self, net: nn.Module, layer: str | None = None) -> Iterator[None]:
        """While the block runs, `net` has the original ReLU and max-pool of every pair that
        changes the output at module path `layer` (None: of every pair)."""
        moved = [(relu, self.pool_paths[relu], net.get_submodule(relu), net.get_submodule(self.pool_paths[relu]))
                 for relu in self._changed_at(layer)
                 if net.get_submodule(relu) is not self.originals[relu][0]]  # not put back already
        for relu, pool, _, _ in moved:
            net.set_submodule(relu, self.originals[relu][0])
            net.set_submodule(pool, self.originals[relu][1])
        try:
            yield
        finally:
            for relu, pool, identity, pooled in moved:
                net.set_submodule(relu, identity)
                net.set_submodule(pool, pooled)


def reorder_relu_pools(net: nn.Module) -> Reordered:
    """Move every ReLU that only feeds a max-pool after it, in place; the originals are returned."""
    originals: dict[str, tuple[str, nn.ReLU, nn.MaxPool2d]] = {}
    for relu_path, pool_path in _pairs(net):
        relu, pool = net.get_submodule(relu_path), net.get_submodule(pool_path)
        assert isinstance(relu, nn.ReLU) and isinstance(pool, nn.MaxPool2d)
        originals[relu_path] = (pool_path, relu, pool)
        net.set_submodule(relu_path, nn.Identity().eval())
        net.set_submodule(pool_path, MaxPool2dReLU.after(pool).eval())
    return Reordered(originals)
