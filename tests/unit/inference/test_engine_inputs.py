"""app/inference/engine.py: image work carries the RGB bytes the model sees (N x H x W x 3) and the
model's worker makes them floats; the answers are the ones float inputs made by numpy give.

The reference is `app.inference.inputs.model_input` (numpy's correctly rounded division by 255)
on each image alone. The floats must be equal bit for bit, so every answer computed from them is
equal too (the same batch through the same kernels): compared exactly, no tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from app.inference.engine import (
    ExplainResult,
    ExplainWork,
    PredictResult,
    PredictWork,
    _layout,
    _to_device,
    run_batch,
    work_rows,
)
from app.inference.inputs import instance_shape, model_input
from app.inference.loading import LoadedModel
from app.inference.methods import METHODS
from models.shapes import generate
from tests.unit.inference.parity import loaded, params_for

MAX_ROWS = 4096


@pytest.fixture(scope="module")
def shapes() -> LoadedModel:
    return loaded("shapes")


def _pixels(n: int) -> np.ndarray:
    return np.stack([np.asarray(s.image.convert("RGB"), dtype=np.uint8) for s in generate(n, 31)])


def _floats(pixels: np.ndarray) -> np.ndarray:
    return np.stack([model_input(p) for p in pixels])


def test_every_byte_value_becomes_the_float_numpy_makes(shapes: LoadedModel) -> None:
    every = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1), (1, 16, 16, 3))
    noise = np.random.default_rng(5).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    for pixels in (np.ascontiguousarray(every), noise):
        made = _to_device(shapes, [pixels[:1], pixels[1:]]).numpy()
        assert made.dtype == np.float32 and made.shape == (pixels.shape[0], 3, *pixels.shape[1:3])
        assert made.flags.c_contiguous
        assert np.array_equal(made, _floats(pixels))


def test_an_instance_of_bytes_has_the_shape_the_model_takes() -> None:
    pixels = np.zeros((2, 20, 30, 3), dtype=np.uint8)
    assert instance_shape(pixels) == (3, 20, 30)
    assert instance_shape(np.zeros((2, 3, 20, 30), dtype=np.float32)) == (3, 20, 30)
    assert instance_shape(np.zeros((4, 30), dtype=np.float32)) == (30,)
    for method, request in (("integrated_gradients", {"n_steps": 12}), ("occlusion", {})):
        prm = params_for("shapes", method, request)
        as_bytes = ExplainWork(pixels, (None, None), method, prm)
        as_floats = ExplainWork(_floats(pixels), (None, None), method, prm)
        assert work_rows(as_bytes) == work_rows(as_floats) == 2 * METHODS[method].passes(prm, (3, 20, 30))
    assert METHODS["occlusion"].passes(prm, (3, 20, 30)) != METHODS["occlusion"].passes(prm, (20, 30, 3))


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_a_batch_of_bytes_answers_as_the_same_batch_of_floats(shapes: LoadedModel, method: str) -> None:
    pixels = _pixels(5)
    prm = params_for("shapes", method, {"n_steps": 4} if method == "integrated_gradients" else {})
    targets = [(None,), (1, None), (2, 0)]
    sizes = [slice(0, 1), slice(1, 3), slice(3, 5)]

    def batch(x: np.ndarray) -> list[ExplainResult]:
        done = run_batch(shapes, [ExplainWork(x[rows], t, method, prm) for rows, t in zip(sizes, targets, strict=True)],
                         MAX_ROWS)
        assert all(isinstance(r, ExplainResult) for r in done)
        return done  # type: ignore[return-value]

    for ours, reference in zip(batch(pixels), batch(_floats(pixels)), strict=True):
        assert np.array_equal(ours.scores, reference.scores)
        assert np.array_equal(ours.targets, reference.targets)
        assert np.array_equal(ours.attributions, reference.attributions)
        assert ours.attributions.shape[1:] == ((1, 128, 128) if method == "gradcam" else (3, 128, 128))
        if method == "integrated_gradients":
            assert ours.deltas is not None and reference.deltas is not None
            assert np.array_equal(ours.deltas, reference.deltas)


def test_predictions_from_bytes_equal_those_from_floats(shapes: LoadedModel) -> None:
    pixels = _pixels(3)
    ours = run_batch(shapes, [PredictWork(pixels[:2]), PredictWork(pixels[2:])], MAX_ROWS)
    reference = run_batch(shapes, [PredictWork(_floats(pixels[:2])), PredictWork(_floats(pixels[2:]))], MAX_ROWS)
    for a, b in zip(ours, reference, strict=True):
        assert isinstance(a, PredictResult) and isinstance(b, PredictResult)
        assert np.array_equal(a.scores, b.scores)


def test_only_a_layer_methods_batch_without_faithfulness_comes_in_the_models_layout(shapes: LoadedModel) -> None:
    """Attributions to the inputs, faithfulness scores and predictions read the inputs themselves:
    contiguous. A layer method's inputs go only through the net: in its layout (channels-last)."""
    assert shapes.module.memory_format is torch.channels_last
    pixels = _pixels(2)
    gradcam = params_for("shapes", "gradcam", {})
    ig = params_for("shapes", "integrated_gradients", {"n_steps": 4})
    cases: list[tuple[list[Any], torch.memory_format]] = [
        ([ExplainWork(pixels, (None, None), "gradcam", gradcam)], torch.channels_last),
        ([ExplainWork(pixels[:1], (None,), "gradcam", gradcam),
          ExplainWork(pixels[1:], (None,), "gradcam", gradcam, faithfulness=True)], torch.contiguous_format),
        ([ExplainWork(pixels, (None, None), "integrated_gradients", ig)], torch.contiguous_format),
        ([PredictWork(pixels)], torch.contiguous_format),
    ]
    for work, layout in cases:
        assert _layout(shapes, work) is layout
        x = _to_device(shapes, [item.inputs for item in work], layout)
        assert x.is_contiguous(memory_format=layout)
        assert torch.equal(x, _to_device(shapes, [item.inputs for item in work]))


def test_gradcam_with_faithfulness_from_bytes_answers_as_from_floats(shapes: LoadedModel) -> None:
    pixels = _pixels(3)
    prm = params_for("shapes", "gradcam", {})

    def batch(x: np.ndarray) -> list[Any]:
        return run_batch(shapes, [ExplainWork(x[:1], (None,), "gradcam", prm),
                                  ExplainWork(x[1:], (0, None), "gradcam", prm, faithfulness=True)], MAX_ROWS)

    for index, (ours, reference) in enumerate(zip(batch(pixels), batch(_floats(pixels)), strict=True)):
        assert isinstance(ours, ExplainResult) and isinstance(reference, ExplainResult)
        assert np.array_equal(ours.attributions, reference.attributions)
        if index == 0:
            assert ours.faithfulness is None and reference.faithfulness is None
        else:
            assert ours.faithfulness is not None and reference.faithfulness is not None
            assert np.array_equal(ours.faithfulness, reference.faithfulness)
