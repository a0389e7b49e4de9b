"""BatchNorm folded into the convolution before it at load (app/inference/folding.py): the same
function as the unfolded net, every module at its path, a folded conv swapped back for a layer
method that names it, and nets that cannot be folded served as they are.

References are the unfolded nets themselves (a copy taken before folding, or the catalog entry
loaded with `fold_batchnorm = false`). Folding reorders float32 arithmetic: outputs agree to rtol
1e-5 (atol 1e-5 of the largest), input gradients wherever they do not pass a max-pool's near-tie
(test_layout.py's rule: 99% of entries within rtol 1e-5, all within 1e-3 of the largest).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import LayerGradCam
from torch import nn

from app.inference.catalog import load_catalog
from app.inference.folding import fold_batchnorms
from app.inference.loading import load_model
from tests.unit.inference.test_layout import _agree_but_at_ties, _images

ROOT = Path(__file__).resolve().parents[3]
CPU = torch.device("cpu")


def _trained_stats(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm running statistics and an affine map other than the identity."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)  # type: ignore[union-attr]
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)  # type: ignore[union-attr]
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    return net.eval()


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_a_resnet_folds_every_pair_and_computes_the_same_function() -> None:
    torch.manual_seed(1)
    net = _trained_stats(torchvision.models.resnet18(num_classes=10))
    for p in net.parameters():
        p.requires_grad_(False)
    reference = copy.deepcopy(net)
    unfolded = fold_batchnorms(net)
    assert len(unfolded.norm_paths) == 20  # conv1, 16 block convs, 3 downsample convs
    assert unfolded.norm_paths["layer2.0.downsample.0"] == "layer2.0.downsample.1"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert isinstance(net.get_submodule("layer1.0.bn1"), nn.Identity)
    assert {path for path, _ in net.named_modules()} == {path for path, _ in reference.named_modules()}
    assert not any(m.training for m in [*net.modules(), *unfolded.modules()])
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        _close(net(x), reference(x))
    _agree_but_at_ties(_input_grad(net, x), _input_grad(reference, x))


def _input_grad(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(leaf)[:, 2].sum(), leaf)
    return grad


def test_a_folded_conv_is_swapped_back_while_a_layer_method_uses_it() -> None:
    spec = {s.name: s for s in load_catalog(ROOT / "models" / "catalog.toml")}["shapes"]
    served = load_model(spec, CPU)
    plain = load_model(spec.model_copy(update={"fold_batchnorm": False, "memory_format": "contiguous"}), CPU)
    assert served.module.unfolded.norm_paths == {"features.0": "features.1", "features.4": "features.5",
                                                 "features.8": "features.9"}
    x = _images(4)
    targets = [0, 1, 2, 3]
    folded_conv = served.module.get_submodule("net.features.8")
    with served.module.layer("net.features.8") as layer:
        assert layer is not folded_conv and isinstance(served.module.get_submodule("net.features.9"), nn.BatchNorm2d)
        ours = LayerGradCam(served.module, layer).attribute(x, target=targets, relu_attributions=True)
    assert served.module.get_submodule("net.features.8") is folded_conv  # and back again
    assert isinstance(served.module.get_submodule("net.features.9"), nn.Identity)
    theirs = LayerGradCam(plain.module, plain.module.get_submodule("net.features.8")).attribute(
        x, target=targets, relu_attributions=True)
    _agree_but_at_ties(ours, theirs)
    # Without the swap the folded conv's output is the BatchNorm's: another map.
    unswapped = LayerGradCam(served.module, folded_conv).attribute(x, target=targets, relu_attributions=True)
    assert float((unswapped - theirs).detach().abs().max()) > 1e-2 * float(theirs.detach().abs().max())
    # A path that was not folded is the module itself, swapped or not.
    with served.module.layer("net.features.11") as last:
        assert last is served.module.get_submodule("net.features.11")


def test_a_replica_swaps_its_own_originals() -> None:
    spec = {s.name: s for s in load_catalog(ROOT / "models" / "catalog.toml")}["shapes"]
    first = load_model(spec, CPU).module
    second = copy.deepcopy(first)
    with first.layer("net.features.0") as mine, second.layer("net.features.0") as theirs:
        assert mine is not theirs
        assert mine.weight.data_ptr() != theirs.weight.data_ptr()
    originals = [m.unfolded.convs["features:0"].weight.numpy() for m in (first, second)]
    assert np.array_equal(*originals)


class Branching(nn.Module):
    """A conv whose output feeds its BatchNorm and a shortcut: folding would change the shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # fx cannot trace a branch on a value
            return self.bn(self.conv(x))
        return x


@pytest.mark.parametrize("net", [Branching(), DataDependent()], ids=["shared output", "untraceable"])
def test_nets_that_cannot_be_folded_are_served_as_they_are(net: nn.Module) -> None:
    net = _trained_stats(net)
    reference = copy.deepcopy(net)
    assert fold_batchnorms(net).norm_paths == {}
    assert isinstance(net.get_submodule("bn"), nn.BatchNorm2d)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


def test_a_batchnorm_in_training_mode_is_not_folded() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert fold_batchnorms(net.train()).norm_paths == {}


def test_the_catalog_can_keep_batchnorm_apart() -> None:
    spec = {s.name: s for s in load_catalog(ROOT / "models" / "catalog.toml")}["shapes"]
    model = load_model(spec.model_copy(update={"fold_batchnorm": False}), CPU)
    assert model.module.unfolded.norm_paths == {}
    assert isinstance(model.module.get_submodule("net.features.1"), nn.BatchNorm2d)
