"""The sub-pixel input gradient of strided convs with few input channels (app/inference/subpixel.py).

References: ATen's own convolution backward (`torch.ops.aten.convolution_backward`) on the same
weights, finite differences in float64 (`gradcheck`, `gradgradcheck`), and the same catalog entry
loaded with `conv_input_grad = "native"`. The sub-pixel form sums the same products in another
order: float32 gradients agree to 1e-5 of the largest entry; a served model's input gradients
and attributions to the test_layout rule (a max-pool's near-ties may pick the other input).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from captum.attr import IntegratedGradients
from torch import nn

from app.inference.catalog import ModelSpec, load_catalog
from app.inference.loading import LoadedModel, load_model
from app.inference.subpixel import SubpixelGradConv2d, eligible, rewrite_strided_convs
from tests.unit.inference.test_layout import _agree_but_at_ties, _images

ROOT = Path(__file__).resolve().parents[3]
CPU = torch.device("cpu")

# (in channels, out channels, kernel, stride, padding, height, width)
SHAPES = [
    (3, 16, 3, 2, 1, 32, 32),  # the shapes CNN's first conv, smaller
    (3, 8, 7, 2, 3, 30, 30),  # ResNet's first conv, smaller
    (1, 5, 3, 2, 1, 31, 30),  # odd sizes: the last row and column of the input see fewer taps
    (3, 5, (3, 5), (2, 3), (1, 2), 17, 23),  # a stride, kernel and padding per dimension
    (4, 6, 1, 2, 0, 9, 9),  # a phase with no tap at all (its gradient is zero)
    (2, 3, 2, 4, 5, 10, 13),  # padding wider than the kernel
    (3, 4, 5, 3, 0, 12, 11),  # stride 3, the input's last rows beyond every window
]


def _fixed(conv: nn.Conv2d) -> nn.Conv2d:
    for param in conv.parameters():
        param.requires_grad_(False)
    return conv


def _native_input_grad(conv: nn.Conv2d, x: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
    grads = torch.ops.aten.convolution_backward(go, x, conv.weight, None, list(conv.stride), list(conv.padding),
                                                [1, 1], False, [0, 0], 1, [True, False, False])
    return grads[0]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_the_input_gradient_is_the_native_one_and_the_forward_unchanged(shape: tuple[object, ...],
                                                                        layout: torch.memory_format) -> None:
    channels, out, kernel, stride, padding, height, width = shape  # type: ignore[misc]
    torch.manual_seed(0)
    conv = _fixed(nn.Conv2d(channels, out, kernel, stride, padding)).to(memory_format=layout)
    ours = SubpixelGradConv2d(conv).to(memory_format=layout)
    assert ours.weight is conv.weight and ours.bias is conv.bias
    x = torch.randn(3, channels, height, width).contiguous(memory_format=layout).requires_grad_()
    y = ours(x)
    assert y.grad_fn is not None and "Subpixel" in type(y.grad_fn).__name__
    assert torch.equal(y, conv(x))
    go = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, go)
    expected = _native_input_grad(conv, x.detach(), go)
    assert grad.shape == x.shape and grad.is_contiguous()
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_finite_differences_agree_in_float64_including_the_second_derivative() -> None:
    torch.manual_seed(1)
    conv = _fixed(nn.Conv2d(3, 4, 3, 2, 1).double())
    ours = SubpixelGradConv2d(conv)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x,))
    assert torch.autograd.gradgradcheck(ours, (x,))


def test_the_plain_conv_runs_where_no_input_gradient_is_wanted_or_the_weights_learn() -> None:
    conv = _fixed(nn.Conv2d(3, 4, 3, 2, 1))
    ours = SubpixelGradConv2d(conv)
    x = torch.randn(2, 3, 8, 8)
    assert ours(x).grad_fn is None
    with torch.no_grad():
        assert ours(x.requires_grad_()).grad_fn is None
    learning = SubpixelGradConv2d(nn.Conv2d(3, 4, 3, 2, 1))
    y = learning(torch.randn(2, 3, 8, 8, requires_grad=True))
    assert "Convolution" in type(y.grad_fn).__name__
    y.sum().backward()
    assert learning.weight.grad is not None and learning.weight.grad.abs().sum() > 0


def test_which_convs_are_rewritten() -> None:
    assert eligible(nn.Conv2d(3, 8, 3, stride=2))
    assert eligible(nn.Conv2d(4, 8, 1, stride=(1, 2)))
    assert not eligible(nn.Conv2d(3, 8, 3, stride=1))  # a stride-1 gradient is a plain conv already
    assert not eligible(nn.Conv2d(5, 8, 3, stride=2))  # many channels: oneDNN's own is faster
    assert not eligible(nn.Conv2d(4, 8, 3, stride=2, groups=2))
    assert not eligible(nn.Conv2d(3, 8, 3, stride=2, dilation=2))
    assert not eligible(nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="reflect"))
    assert not eligible(nn.Conv2d(3, 8, 3, stride=1, padding="same"))
    assert not eligible(nn.Conv1d(3, 8, 3, stride=2))
    assert not eligible(SubpixelGradConv2d(nn.Conv2d(3, 8, 3, stride=2)))
    with pytest.raises(ValueError):
        SubpixelGradConv2d(nn.Conv2d(8, 8, 3, stride=2))
    net = torchvision.models.resnet18(num_classes=4)
    assert rewrite_strided_convs(net) == ["conv1"]
    assert isinstance(net.conv1, SubpixelGradConv2d)


def test_a_scripted_graph_takes_the_plain_branch() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(_fixed(nn.Conv2d(3, 4, 3, 2, 1)), nn.ReLU()).eval()
    rewrite_strided_convs(net)
    x = torch.randn(2, 3, 16, 16)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))


def _spec(name: str, **update: object) -> ModelSpec:
    spec = {s.name: s for s in load_catalog(ROOT / "models" / "catalog.toml")}[name]
    return spec.model_copy(update=update)


def _resnet18(**update: object) -> ModelSpec:
    shapes = _spec("shapes")
    assert shapes.image is not None
    return shapes.model_copy(update={
        "name": "r18", "format": "torchvision", "architecture": "resnet18", "builder": None, "weights": None,
        "builder_args": {"num_classes": 10}, "labels_file": None, "labels": [str(i) for i in range(10)],
        "examples": [], "image": shapes.image.model_copy(update={"size": [64, 64]}), **update})


@pytest.mark.parametrize("make_spec,first_conv", [(_spec, "features.0"), (lambda name, **u: _resnet18(**u), "conv1")],
                         ids=["shapes", "resnet18"])
def test_a_served_model_gets_it_on_the_cpu_and_attributes_as_the_native_gradient_does(make_spec, first_conv) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(3)  # resnet18 without weights: the same random ones for both
    served: LoadedModel = load_model(make_spec("shapes"), CPU)
    torch.manual_seed(3)
    native: LoadedModel = load_model(make_spec("shapes", conv_input_grad="native"), CPU)
    assert isinstance(served.module.net.get_submodule(first_conv), SubpixelGradConv2d)
    assert type(native.module.net.get_submodule(first_conv)) is nn.Conv2d
    assert served.predictor is not None  # the frozen prediction graph is still built
    size = served.spec.input_shape[-1]
    x = torch.nn.functional.interpolate(_images(3), size=(size, size), mode="bilinear")
    targets = [0, 1, 2]
    ours = IntegratedGradients(served.module).attribute(x, target=targets, n_steps=8)
    theirs = IntegratedGradients(native.module).attribute(x, target=targets, n_steps=8)
    _agree_but_at_ties(ours, theirs)
    # A replica's copy has its own kernel, and a layer method naming the conv gets it as it was.
    replica = served.replica()
    mine, its = (m.module.net.get_submodule(first_conv) for m in (served, replica))
    assert mine.grad_kernel.data_ptr() != its.grad_kernel.data_ptr()
    assert torch.equal(mine.grad_kernel, its.grad_kernel)
    with served.module.layer(f"net.{first_conv}") as layer:
        assert type(layer) is nn.Conv2d
    assert served.module.net.get_submodule(first_conv) is mine


def test_the_catalog_chooses_native_or_subpixel() -> None:
    assert type(load_model(_spec("shapes", conv_input_grad="native"), CPU).module.net.features[0]) is nn.Conv2d
    copied = copy.deepcopy(load_model(_spec("shapes", conv_input_grad="subpixel"), CPU).module)
    assert isinstance(copied.net.features[0], SubpixelGradConv2d)
