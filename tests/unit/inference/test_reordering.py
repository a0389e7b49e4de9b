"""A ReLU right before a max-pool moved after it at load (app/inference/reordering.py): the same
outputs and input gradients bit for bit, every module at its path, the pair put back for a layer
method whose layer's output the move changes and for DeepLift, and nets where the move would
change something served as they are.

References are the nets as built: a copy taken before the move, or the shapes CNN made from its
builder and weights file with the catalog's normalisation written out here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import DeepLift, LayerGradCam
from safetensors.torch import load_file
from torch import nn

from app.inference.catalog import load_catalog
from app.inference.engine import ExplainResult, ExplainWork, run_batch
from app.inference.loading import LoadedModel, load_model
from app.inference.methods import METHODS
from app.inference.reordering import MaxPool2dReLU, reorder_relu_pools
from models.zoo import shapes_cnn
from tests.unit.inference.test_layout import _agree_but_at_ties, _images

ROOT = Path(__file__).resolve().parents[3]
CPU = torch.device("cpu")

POOLS = {
    "2x2": dict(kernel_size=2),
    "3x3 stride 2 padded (ResNet's)": dict(kernel_size=3, stride=2, padding=1),
    "3x3 stride 1 padded (overlapping)": dict(kernel_size=3, stride=1, padding=1),
    "2x2 ceil mode": dict(kernel_size=2, ceil_mode=True),
    "dilated": dict(kernel_size=2, stride=1, dilation=2),
}


def _same_function(net: nn.Module, x: torch.Tensor, seed: int) -> None:
    """`net` with its ReLUs moved gives the outputs and input gradients of `net` as built, bit for bit."""
    built = copy.deepcopy(net)
    assert reorder_relu_pools(net).pool_paths
    grads = []
    outs = []
    for module in (built, net):
        xi = x.clone().requires_grad_()
        out = module(xi)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        out.backward(upstream)
        outs.append(out.detach())
        grads.append(xi.grad)
    assert torch.equal(outs[0], outs[1])
    assert grads[0] is not None and grads[1] is not None and torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("pool", POOLS.values(), ids=POOLS.keys())
def test_the_move_keeps_outputs_and_gradients_bit_for_bit(pool: dict[str, object]) -> None:
    torch.manual_seed(0)
    # Whole numbers straight into the ReLU: ties among positive values, windows of zeros and of
    # negatives only (where the pool picks among the ReLU's zeros and the gradient must be zero).
    ties = nn.Sequential(nn.ReLU(), nn.MaxPool2d(**pool), nn.Conv2d(3, 2, 1))  # type: ignore[arg-type]
    whole = torch.randint(-3, 4, (4, 3, 11, 11)).float()
    _same_function(ties.eval(), whole, seed=1)
    convolved = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(**pool),  # type: ignore[arg-type]
                              nn.Conv2d(6, 2, 3))
    _same_function(convolved.eval(), torch.randn(4, 3, 13, 13), seed=2)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size", [(8, 8), (6, 10), (7, 8), (8, 9)])
def test_the_pool_without_gradients_gives_the_pools_values(monkeypatch: pytest.MonkeyPatch,
                                                           layout: torch.memory_format, size: tuple[int, int]) -> None:
    """Where nothing records a gradient, a 2 x 2 pool over an even map is two element-wise maxima:
    the values of relu(max_pool2d(x)) exactly, ties, zeros, NaN and infinities included, in the
    input's layout; odd maps take the pool's own kernel."""
    torch.manual_seed(3)
    x = torch.randint(-3, 4, (2, 5, *size)).float()
    x[0, 0, 0, 0], x[0, 1, 1, 1], x[1, 2, 2, 3], x[1, 3, 0, 1] = float("nan"), float("inf"), float("-inf"), -0.0
    x = x.contiguous(memory_format=layout)
    expected = torch.relu(nn.functional.max_pool2d(x, 2))
    pool = MaxPool2dReLU.after(nn.MaxPool2d(2))
    even = size[0] % 2 == 0 and size[1] % 2 == 0
    called = []
    native = nn.functional.max_pool2d
    monkeypatch.setattr(nn.functional, "max_pool2d", lambda *a, **k: called.append(1) or native(*a, **k))
    for wanted_grad in (False, True):
        called.clear()
        with torch.no_grad():  # a tensor that requires a gradient, but none is recorded
            out = pool(x.clone().requires_grad_(wanted_grad))
        assert torch.equal(out.isnan(), expected.isnan())
        assert torch.equal(out.nan_to_num(), expected.nan_to_num())
        assert out.is_contiguous(memory_format=layout)
        assert called == ([] if even else [1])
    called.clear()
    recorded = pool(x.clone().requires_grad_())  # with a gradient: the pool's kernel, for its indices
    assert called == [1] and recorded.requires_grad
    for other in (nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2, padding=1)):
        called.clear()
        with torch.no_grad():
            MaxPool2dReLU.after(other)(x)
        assert called == [1]
    monkeypatch.undo()
    scripted = torch.jit.script(pool)  # a frozen graph of the served net: the pool's kernel alone
    with torch.no_grad():
        assert torch.equal(scripted(x).nan_to_num(), expected.nan_to_num())


def test_a_resnet_moves_its_stem_and_keeps_every_path() -> None:
    torch.manual_seed(1)
    net = torchvision.models.resnet18(num_classes=10).eval()
    paths = {path for path, _ in net.named_modules()}
    reference = copy.deepcopy(net)
    reordered = reorder_relu_pools(net)
    assert reordered.pool_paths == {"relu": "maxpool"}  # the blocks' ReLUs feed convs and sums
    assert isinstance(net.relu, nn.Identity) and isinstance(net.maxpool, MaxPool2dReLU)
    assert {path for path, _ in net.named_modules()} == paths
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


class Shortcut(nn.Module):
    """The ReLU's output feeds the pool and a sum: moving it would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(x)
        return self.pool(y) + y[..., ::2, ::2]


class InPlaceShortcut(nn.Module):
    """An in-place ReLU whose input is read again after it: the read sees the ReLU's values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.pool(self.relu(y)) + y[..., ::2, ::2]


class Twice(nn.Module):
    """One ReLU module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(x)) + self.relu(x)[..., ::2, ::2]


class Functional(nn.Module):
    """A ReLU applied as a function: no module to move."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(x))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # fx cannot trace a branch on a value
            return self.pool(self.relu(x))
        return x


KEPT = {"shared output": Shortcut, "in-place with its input read again": InPlaceShortcut, "called twice": Twice,
        "functional": Functional, "untraceable": Untraceable,
        "pool returning indices": lambda: nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, return_indices=True)),
        "average pool": lambda: nn.Sequential(nn.ReLU(), nn.AvgPool2d(2)),
        "leaky ReLU": lambda: nn.Sequential(nn.LeakyReLU(), nn.MaxPool2d(2))}


@pytest.mark.parametrize("make", KEPT.values(), ids=KEPT.keys())
def test_nets_the_move_would_change_are_served_as_they_are(make: type[nn.Module]) -> None:
    net = make().eval()
    reference = copy.deepcopy(net)
    assert reorder_relu_pools(net).pool_paths == {}
    assert [type(m) for m in net.modules()] == [type(m) for m in reference.modules()]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ours, theirs = net(x), reference(x)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,),
                    strict=True):
        assert torch.equal(a, b)


class Blocks(nn.Module):
    """A block ending in a ReLU, then a pool outside it: the block's output is the ReLU's."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.block(x)))


def _output_at(net: nn.Module, path: str, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = net.get_submodule(path).register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        net(x)
    handle.remove()
    return seen[0]


def test_the_pair_is_put_back_where_a_layer_output_would_change() -> None:
    torch.manual_seed(3)
    net = Blocks().eval()
    built = copy.deepcopy(net)
    reordered = reorder_relu_pools(net)
    assert reordered.pool_paths == {"block.1": "pool"}
    x = torch.randn(2, 3, 8, 8)
    moved = {"block.1": net.get_submodule("block.1"), "pool": net.get_submodule("pool")}
    for layer in ("block.1", "block"):  # the ReLU, and a container holding it but not the pool
        assert not torch.equal(_output_at(net, layer, x), _output_at(built, layer, x))
        with reordered.restored(net, layer):
            assert type(net.get_submodule("block.1")) is nn.ReLU and type(net.get_submodule("pool")) is nn.MaxPool2d
            assert torch.equal(_output_at(net, layer, x), _output_at(built, layer, x))
            with reordered.restored(net):  # nested: nothing more to put back, and back as it was after
                assert type(net.get_submodule("block.1")) is nn.ReLU
            assert type(net.get_submodule("block.1")) is nn.ReLU
        assert all(net.get_submodule(path) is module for path, module in moved.items())
    for layer in ("pool", "block.0", "head", ""):  # outputs the move does not change
        with reordered.restored(net, layer):
            assert all(net.get_submodule(path) is module for path, module in moved.items())
        assert torch.equal(_output_at(net, layer, x) if layer else net(x).detach(),
                           _output_at(built, layer, x) if layer else built(x).detach())


# --------------------------------------------------------------------------- the served shapes CNN


@pytest.fixture(scope="module")
def served() -> LoadedModel:
    spec = {s.name: s for s in load_catalog(ROOT / "models" / "catalog.toml")}["shapes"]
    return load_model(spec, CPU)


class _AsBuilt(nn.Module):
    """The shapes CNN from its builder and weights file, its normalisation written out: no
    folding, no move, contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.net = shapes_cnn(num_classes=4)
        self.net.load_state_dict(load_file(str(ROOT / "models" / "shapes" / "weights.safetensors")))
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5) / 0.25)


def test_the_served_shapes_cnn_has_its_relus_after_its_pools(served: LoadedModel) -> None:
    assert served.module.reordered.pool_paths == {"features.2": "features.3", "features.6": "features.7"}
    assert isinstance(served.module.get_submodule("net.features.2"), nn.Identity)
    assert isinstance(served.module.get_submodule("net.features.3"), MaxPool2dReLU)
    x = _images(4)
    with torch.no_grad():
        ours = served.module(x)
        with served.module.as_built():
            assert torch.equal(served.module(x), ours)  # the same bits, moved or not
        _agree_but_at_ties(ours, _AsBuilt()(x))


def _explain(model: LoadedModel, method: str, request: dict[str, object], x: torch.Tensor,
             targets: list[int]) -> np.ndarray:
    prm = METHODS[method].params.model_validate(request)
    pixels = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    work = [ExplainWork(pixels[i : i + 1], (targets[i],), method, prm) for i in range(len(targets))]
    results = run_batch(model, work, 64)
    assert all(isinstance(r, ExplainResult) for r in results)
    return np.concatenate([r.attributions for r in results])  # type: ignore[union-attr]


def test_gradcam_at_a_moved_relu_sees_the_relus_output(served: LoadedModel) -> None:
    x, targets = _images(4), [0, 1, 2, 3]
    ours = _explain(served, "gradcam", {"layer": "features.2"}, x, targets)
    built = _AsBuilt()
    theirs = LayerGradCam(built, built.net.features[2]).attribute(x, target=targets, relu_attributions=True)
    theirs = torch.nn.functional.interpolate(theirs, size=(128, 128), mode="bilinear")
    _agree_but_at_ties(torch.from_numpy(ours), theirs)
    assert isinstance(served.module.get_submodule("net.features.2"), nn.Identity)  # moved again after


def test_deeplift_runs_on_the_net_as_built(served: LoadedModel) -> None:
    x, targets = _images(3), [0, 1, 2]
    ours = _explain(served, "deeplift", {"baseline": "zeros"}, x, targets)
    built = _AsBuilt()
    theirs = DeepLift(built).attribute(x.clone().requires_grad_(), baselines=0.0, target=targets)
    _agree_but_at_ties(torch.from_numpy(ours), theirs)
    # DeepLift's rules on the moved modules would give other attributions: the pair matters.
    moved = DeepLift(_Moved(built)).attribute(x.clone().requires_grad_(), baselines=0.0, target=targets)
    assert float((moved - theirs).detach().abs().max()) > 1e-3 * float(theirs.detach().abs().max())


class _Moved(nn.Module):
    def __init__(self, built: _AsBuilt) -> None:
        super().__init__()
        self.inner = copy.deepcopy(built)
        reorder_relu_pools(self.inner.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)
