"""Measured against implementations not written here, on torchvision ResNets at 224 px (random
weights: nothing is downloaded) and real photos that ship with scikit-image.

- GradCAM's default layer is a ResNet's `layer4`, the last block's output (the Grad-CAM paper's
  practice and pytorch-grad-cam's), found at load with one forward pass; its maps equal Captum's
  LayerGradCam and pytorch-grad-cam's GradCAM on that layer (both upsampled bilinearly to the
  input, as the service does).
- Integrated gradients with the `mean` baseline equals Captum run TorchServe's way: on the
  *normalised* input, with a zero baseline (IG is invariant to the per-channel affine
  normalisation: the paths and the attributions per pixel are the same); a per-channel triple
  equals Captum with that constant colour as the baseline.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from skimage import data as photos

from app.inference.catalog import ModelSpec
from app.inference.engine import ExplainResult, ExplainWork, run_batch
from app.inference.loading import LoadedModel, load_model
from app.inference.methods import METHODS, model_defaults
from app.inference.params import resolve_params

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 224


@functools.cache
def resnet(architecture: str) -> LoadedModel:
    torch.manual_seed(0)
    spec = ModelSpec.model_validate({
        "name": architecture, "kind": "image", "task": "classification", "format": "torchvision",
        "architecture": architecture, "labels": [f"class {i}" for i in range(1000)],
        "image": {"size": [SIZE, SIZE], "mean": list(MEAN), "std": list(STD)}})
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return load_model(spec, torch.device("cpu"))


@functools.cache
def pictures() -> np.ndarray:
    """Three photos (an astronaut, a cat, a cup of coffee), centre-cropped and resized to 224 px."""
    out = []
    for photo in (photos.astronaut(), photos.chelsea(), photos.coffee()):
        image = Image.fromarray(photo)
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        out.append(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(out)


def _explain(model: LoadedModel, method: str, request: dict[str, object],
             targets: tuple[int | None, ...]) -> ExplainResult:
    prm = resolve_params(METHODS[method].params, model_defaults(model.spec, model.facts, method), request)
    [result] = run_batch(model, [ExplainWork(pictures(), targets, method, prm)], 4096)
    assert isinstance(result, ExplainResult)
    return result


def _close(actual: np.ndarray, expected: torch.Tensor | np.ndarray, rtol: float = 1e-5) -> None:
    """Within rtol of the largest reference magnitude, entry by entry."""
    expected = torch.as_tensor(np.asarray(expected, dtype=np.float32))
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(torch.from_numpy(np.asarray(actual, dtype=np.float32)), expected,
                               rtol=0.0, atol=rtol * scale)


@pytest.mark.parametrize("architecture", ["resnet18", "resnet50"])
def test_gradcam_defaults_to_the_last_block_and_says_so(architecture: str) -> None:
    model = resnet(architecture)
    assert model.facts.gradcam_layer == "layer4"
    assert model_defaults(model.spec, model.facts, "gradcam") == {"layer": "layer4"}
    assert model.facts.layer_shapes["layer4"][1:] == (7, 7)


@pytest.mark.parametrize("architecture", ["resnet18", "resnet50"])
def test_gradcam_equals_captum_and_pytorch_grad_cam_on_layer4(architecture: str) -> None:
    model = resnet(architecture)
    result = _explain(model, "gradcam", {}, (None, None, 281))  # random weights: a class with evidence
    ours, targets = result.attributions, tuple(int(t) for t in result.targets)
    assert ours.shape == (3, 1, SIZE, SIZE) and (ours.max(axis=(1, 2, 3)) > ours.min(axis=(1, 2, 3))).all()
    x = torch.from_numpy(pictures().copy())
    layer = model.module.net.layer4
    captum = LayerGradCam(model.module, layer).attribute(x, target=list(targets), relu_attributions=True)
    _close(ours, LayerAttribution.interpolate(captum.detach(), (SIZE, SIZE), "bilinear"))
    # pytorch-grad-cam: its own hooks, weights (mean gradient per channel) and weighted sum, at the layer's 7 x 7
    with GradCAM(model=model.module, target_layers=[layer]) as cam:
        shown = cam(input_tensor=x.clone().requires_grad_(), targets=[ClassifierOutputTarget(t) for t in targets])
        activations = cam.activations_and_grads.activations[0].cpu().numpy()
        gradients = cam.activations_and_grads.gradients[0].cpu().numpy()
        raw = cam.get_cam_image(x, layer, None, activations, gradients, False)
    grad_cam = torch.from_numpy(np.maximum(raw, 0.0)).unsqueeze(1)
    _close(ours, LayerAttribution.interpolate(grad_cam, (SIZE, SIZE), "bilinear"))
    # what pytorch-grad-cam shows: that 7 x 7 map resized (OpenCV's bilinear, which agrees with torch's
    # to float rounding) and scaled from its floor to its peak: ours, scaled the same way
    floor, peak = ours.min(axis=(1, 2, 3)), ours.max(axis=(1, 2, 3))
    _close((ours[:, 0] - floor[:, None, None]) / (peak - floor)[:, None, None], shown)


def test_mean_baseline_is_torchserves_integrated_gradients() -> None:
    """TorchServe's image handler: IntegratedGradients(model).attribute(normalised x, target, n_steps=15)."""
    model = resnet("resnet18")
    targets = (0, 281, 504)
    ours = _explain(model, "integrated_gradients", {"baseline": "mean", "n_steps": 15}, targets).attributions
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    normalised = (torch.from_numpy(pictures().copy()) - mean) / std
    net = model.module.net
    torchserve = IntegratedGradients(net).attribute(normalised, target=list(targets), n_steps=15).detach().numpy()
    # Same path points in exact arithmetic; in float32 the points differ by a rounding (normalised inside
    # the explained function, or before), which flips a few ReLUs of the random-weight net: per pixel,
    # up to 1% of the largest attribution; over the maps, 1e-3 (measured: 7e-4, correlation 0.9999997).
    _close(ours, torchserve, rtol=1e-2)
    assert np.linalg.norm(ours - torchserve) <= 1e-3 * np.linalg.norm(torchserve)
    black = _explain(model, "integrated_gradients", {"n_steps": 15}, targets).attributions
    assert np.corrcoef(black.ravel(), ours.ravel())[0, 1] < 0.9  # the baseline matters


def test_per_channel_baseline_is_that_constant_colour() -> None:
    model = resnet("resnet18")
    targets = (7, 8, 9)
    colour = (0.2, 0.4, 0.6)
    ours = _explain(model, "integrated_gradients", {"baseline": list(colour), "n_steps": 8}, targets).attributions
    x = torch.from_numpy(pictures().copy())
    base = torch.tensor(colour).view(1, 3, 1, 1).expand_as(x)
    expected = IntegratedGradients(model.module).attribute(x, baselines=base, target=list(targets), n_steps=8)
    _close(ours, expected.detach())


def test_deeplift_is_not_offered_where_a_non_linearity_is_called_twice() -> None:
    """torchvision's ResNet blocks call their `relu` twice, which Captum's DeepLift cannot attribute
    through (it raises): the ResNets offer neither DeepLift method; the demo CNN, whose ReLUs are
    each called once, does."""
    from app.inference.methods import offered_methods
    from tests.unit.inference.parity import loaded

    model = resnet("resnet18")
    assert model.facts.reused["layer1.0.relu"] == "ReLU"
    offered = offered_methods(model.spec, model.facts)
    assert "deeplift" not in offered and "deeplift_shap" not in offered and "integrated_gradients" in offered
    shapes = loaded("shapes")
    assert not shapes.facts.reused and {"deeplift", "deeplift_shap"} <= set(offered_methods(shapes.spec, shapes.facts))
