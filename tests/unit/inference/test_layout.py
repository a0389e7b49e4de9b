"""The memory format a model is served in (catalog `memory_format`, app/inference/loading.py):
channels-last for a convolutional image model on the CPU, and the same function as the model in
the contiguous format a tutorial leaves it in.

The reference is the same catalog entry loaded with `memory_format = "contiguous"`. Outputs agree
to float32 rounding (rtol 1e-5). Gradients through max-pooling can take the other of two
near-equal inputs when the convolutions round differently, so pixel attributions are held to
agree everywhere but at such ties: at least 99% of the entries within rtol 1e-5 (with a floor of
1e-6 of the largest), none off by more than 1e-3 of the largest, and a correlation of 0.99999.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

from app.errors import CatalogError
from app.inference.catalog import ModelSpec, load_catalog
from app.inference.loading import LoadedModel, load_model
from app.inference.served import _channels_last, _Laid, _standardized_rows, _StandardizedLaidOut, memory_format_for
from models.shapes import generate

ROOT = Path(__file__).resolve().parents[3]
CPU = torch.device("cpu")


def _spec(name: str, **update: object) -> ModelSpec:
    spec = {s.name: s for s in load_catalog(ROOT / "models" / "catalog.toml")}[name]
    return spec.model_copy(update=update)


@pytest.fixture(scope="module")
def served() -> LoadedModel:
    return load_model(_spec("shapes"), CPU)


@pytest.fixture(scope="module")
def contiguous() -> LoadedModel:
    return load_model(_spec("shapes", memory_format="contiguous", fold_batchnorm=False), CPU)


def _images(n: int) -> torch.Tensor:
    pixels = np.stack([np.asarray(s.image, dtype=np.float32).transpose(2, 0, 1) / 255.0 for s in generate(n, 77)])
    return torch.from_numpy(np.ascontiguousarray(pixels))


def _agree_but_at_ties(actual: torch.Tensor, expected: torch.Tensor) -> None:
    actual, expected = actual.detach(), expected.detach()
    scale = float(expected.abs().max())
    within = (actual - expected).abs() <= 1e-5 * expected.abs() + 1e-6 * scale
    assert float(within.float().mean()) >= 0.99
    assert float((actual - expected).abs().max()) <= 1e-3 * scale
    corr = np.corrcoef(actual.flatten().numpy(), expected.flatten().numpy())[0, 1]
    assert corr >= 0.99999


def test_a_convolutional_image_model_is_served_channels_last_on_the_cpu(served: LoadedModel) -> None:
    assert served.module.memory_format is torch.channels_last
    convs = [m for m in served.module.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    # What is attributed stays as it came: the gradient with respect to the pixels is contiguous.
    x = _images(2).requires_grad_(True)
    served.module(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.is_contiguous()


def test_auto_is_contiguous_for_tables_and_for_gpus() -> None:
    mlp = _spec("breast-cancer")
    net = torch.nn.Sequential(torch.nn.Linear(30, 2))
    assert memory_format_for(mlp, net, CPU) is torch.contiguous_format
    image = _spec("shapes")
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    assert memory_format_for(image, cnn, CPU) is torch.channels_last
    assert memory_format_for(image, cnn, torch.device("cuda:0")) is torch.contiguous_format
    assert memory_format_for(image, torch.nn.Sequential(torch.nn.Flatten()), CPU) is torch.contiguous_format
    forced = _spec("shapes", memory_format="channels_last")
    assert memory_format_for(forced, cnn, torch.device("cuda:0")) is torch.channels_last


def test_channels_last_is_refused_for_a_tabular_model() -> None:
    with pytest.raises(CatalogError, match="memory_format: channels_last is for image models"):
        load_model(_spec("breast-cancer", memory_format="channels_last"), CPU)


def test_channels_last_serves_the_same_function(served: LoadedModel, contiguous: LoadedModel) -> None:
    assert contiguous.module.memory_format is torch.contiguous_format
    x = _images(6)
    with torch.no_grad():
        torch.testing.assert_close(served.module(x), contiguous.module(x), rtol=1e-5, atol=1e-6)
    targets = [0, 1, 2, 3, 0, 1]
    saliency = Saliency(served.module).attribute(x.clone().requires_grad_(), target=targets)
    _agree_but_at_ties(saliency, Saliency(contiguous.module).attribute(x.clone().requires_grad_(), target=targets))
    ig = IntegratedGradients(served.module).attribute(x, target=targets, n_steps=24)
    _agree_but_at_ties(ig, IntegratedGradients(contiguous.module).attribute(x, target=targets, n_steps=24))
    cams = [LayerAttribution.interpolate(
        LayerGradCam(m.module, m.module.get_submodule("net.features.11")).attribute(x, target=targets,
                                                                                   relu_attributions=True),
        (128, 128), "bilinear") for m in (served, contiguous)]
    _agree_but_at_ties(*cams)


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (5, 3, 17, 11), (2, 4, 1, 6)])
def test_channels_last_inputs_are_standardised_in_their_layout_to_the_same_bits(shape: tuple[int, ...]) -> None:
    """`_standardized_rows` does the plain expression's float operations, row by row of the
    channels-last memory: the same numbers, the same gradients, and the layout kept."""
    rng = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=rng).contiguous(memory_format=torch.channels_last).requires_grad_()
    mean = torch.rand(1, shape[1], 1, 1, generator=rng)
    std = torch.rand(1, shape[1], 1, 1, generator=rng) + 0.1
    plain = (x - mean) / std
    rows = _standardized_rows(x, mean, std)
    assert torch.equal(rows, plain)
    assert rows.is_contiguous(memory_format=torch.channels_last)
    upstream = torch.rand(shape, generator=rng)
    (via_plain,) = torch.autograd.grad(plain, x, upstream)
    (via_rows,) = torch.autograd.grad(rows, x, upstream)
    assert torch.equal(via_plain, via_rows)


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (5, 3, 17, 11), (2, 4, 1, 6), (3, 3, 1, 1)])
@pytest.mark.parametrize("upstream_layout", [torch.contiguous_format, torch.channels_last])
def test_contiguous_inputs_are_standardised_into_channels_last_to_the_same_bits(
        shape: tuple[int, ...], upstream_layout: torch.memory_format) -> None:
    """`_StandardizedLaidOut` (integrated gradients' path into a channels-last net) gives the plain
    expression's numbers in channels-last, leaves its input alone, and passes back the gradient
    that autograd makes of the plain expression laid out by `_Laid`: contiguous, the same bits."""
    rng = torch.Generator().manual_seed(sum(shape) + 7)
    x = torch.rand(shape, generator=rng).requires_grad_()
    before = x.detach().clone()
    mean = torch.rand(1, shape[1], 1, 1, generator=rng)
    std = torch.rand(1, shape[1], 1, 1, generator=rng) + 0.1
    plain = _Laid.apply((x - mean) / std, torch.channels_last)
    fused = _StandardizedLaidOut.apply(x, mean, std)
    assert torch.equal(fused, plain)
    assert fused.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x.detach(), before)
    upstream = torch.rand(shape, generator=rng).contiguous(memory_format=upstream_layout)
    (via_plain,) = torch.autograd.grad(plain, x, upstream)
    (via_fused,) = torch.autograd.grad(fused, x, upstream)
    assert torch.equal(via_plain, via_fused)
    assert via_fused.is_contiguous()


def test_a_channels_last_batch_meets_the_net_in_its_own_layout(served: LoadedModel) -> None:
    """A channels-last batch (a layer method's, app/inference/engine.py) gives the outputs of the
    same batch made contiguous, bit for bit: the net sees the same numbers in the same layout."""
    images = np.stack([np.asarray(s.image.convert("RGB"), dtype=np.float32) / 255 for s in generate(3, 4)])
    contiguous = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    channels_last = contiguous.contiguous(memory_format=torch.channels_last)
    assert _channels_last(channels_last) and not _channels_last(contiguous)
    with torch.no_grad():
        assert torch.equal(served.module(channels_last), served.module(contiguous))
