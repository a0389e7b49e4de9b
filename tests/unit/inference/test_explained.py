"""The explained function's convergence-delta ends (`TargetScalar.endpoints`) and the number
baselines' outputs a replica keeps (`LoadedModel.constant_output`): an integrated-gradients or
DeepLift batch takes F(x) from the predictions' forward and F(baseline) for a number baseline from
one forward per replica, and its deltas are still Captum's.

References: the module applied to each row alone, and Captum's own `return_convergence_delta` on
each instance alone. Batching changes float32 summation order: deltas agree within 1e-4 of the
sum of their terms' magnitudes, outputs within rtol 1e-5.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import DeepLift, IntegratedGradients

from app.errors import InternalError
from app.inference.catalog import load_catalog
from app.inference.engine import ExplainResult, ExplainWork, run_batch
from app.inference.explained import TargetScalar, blurred
from app.inference.loading import CONSTANT_OUTPUTS_KEPT, LoadedModel, load_model
from app.inference.methods import METHODS

ROOT = Path(__file__).resolve().parents[3]
CPU = torch.device("cpu")
SPECS = {s.name: s for s in load_catalog(ROOT / "models" / "catalog.toml")}


@pytest.fixture(scope="module")
def shapes() -> LoadedModel:
    return load_model(SPECS["shapes"], CPU)


@contextmanager
def _rows_forwarded(model: LoadedModel) -> Iterator[list[int]]:
    """The rows of every forward through the model's net while inside."""
    rows: list[int] = []
    handle = model.module.net.register_forward_pre_hook(lambda _m, args: rows.append(int(args[0].shape[0])))
    try:
        yield rows
    finally:
        handle.remove()


def _images(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (1, 128, 128, 3), dtype=np.uint8) for _ in range(count)]


def _alone(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.module(x[i : i + 1]) for i in range(x.shape[0])])


def test_endpoints_are_the_module_on_each_row_alone(shapes: LoadedModel) -> None:
    x = torch.rand(5, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 3, 1])
    expect_x = _alone(shapes, x).gather(1, targets.view(-1, 1)).squeeze(1)
    for baseline in (0.0, 0.25, blurred(x)):
        base_rows = baseline if isinstance(baseline, torch.Tensor) else torch.full_like(x, baseline)
        expect_base = _alone(shapes, base_rows).gather(1, targets.view(-1, 1)).squeeze(1)
        for known in (None, _alone(shapes, x)):
            end, start = TargetScalar(shapes, batch_outputs=known).endpoints(x, baseline, targets, max_rows=2)
            torch.testing.assert_close(end, expect_x, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(start, expect_base, rtol=1e-5, atol=1e-6)


def test_endpoints_take_the_given_outputs_for_the_inputs(shapes: LoadedModel) -> None:
    x = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    given = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    end, _ = TargetScalar(shapes, batch_outputs=given).endpoints(x, 0.0, torch.tensor([3, 0, 2]), max_rows=8)
    assert end.tolist() == [3.0, 4.0, 10.0]
    with pytest.raises(InternalError, match="outputs of 3 rows given for a batch of 2"):
        TargetScalar(shapes, batch_outputs=given).endpoints(x[:2], 0.0, torch.tensor([3, 0]), max_rows=8)


def test_a_number_baselines_output_is_computed_once_per_replica_and_kept_for_a_few_numbers() -> None:
    model = load_model(SPECS["shapes"], CPU)
    with _rows_forwarded(model) as rows:
        first = model.constant_output(0.0)
        again = model.constant_output(0.0)
    assert rows == [1] and again is first
    torch.testing.assert_close(first, _alone(model, torch.zeros(1, 3, 128, 128)), rtol=0, atol=0)
    for value in range(1, CONSTANT_OUTPUTS_KEPT + 3):
        model.constant_output(value / 100)
    assert len(model.constant_outputs) == CONSTANT_OUTPUTS_KEPT  # the later numbers are computed, not kept
    with _rows_forwarded(model) as rows:
        late = model.constant_output((CONSTANT_OUTPUTS_KEPT + 2) / 100)
    assert rows == [1]
    torch.testing.assert_close(late, _alone(model, torch.full((1, 3, 128, 128), (CONSTANT_OUTPUTS_KEPT + 2) / 100)))
    copy = model.replica()
    assert copy.constant_outputs == {} and model.constant_outputs


def _captum(model: LoadedModel, method: str, x: torch.Tensor, base: torch.Tensor | float, target: torch.Tensor,
            steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captum's own attribution and delta for one instance."""
    if method == "integrated_gradients":
        return IntegratedGradients(TargetScalar(model)).attribute(  # type: ignore[no-any-return]
            x, baselines=base, additional_forward_args=(target,), n_steps=steps, return_convergence_delta=True)
    with model.module.as_built():  # DeepLift's rules are per module: the net's own (app/inference/reordering.py)
        return DeepLift(TargetScalar(model)).attribute(  # type: ignore[no-any-return]
            x.requires_grad_(), baselines=base, additional_forward_args=(target,), return_convergence_delta=True)


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift"])
@pytest.mark.parametrize("baseline", ["zeros", 0.5, "blur"])
def test_a_batch_forwards_its_inputs_once_and_keeps_captums_deltas(method: str, baseline: object) -> None:
    model = load_model(SPECS["shapes"], CPU)
    steps, count = 8, 3
    prm = METHODS[method].params.model_validate(
        {"baseline": baseline, **({"n_steps": steps} if method == "integrated_gradients" else {})})
    work = [ExplainWork(image, (None,), method, prm) for image in _images(count, seed=3)]
    constant = not isinstance(baseline, str) or baseline == "zeros"
    attributed = count * steps if method == "integrated_gradients" else 2 * count  # DeepLift: inputs and baselines
    for batch in range(2):
        with _rows_forwarded(model) as rows:
            results = run_batch(model, work, max_rows=64)
        # The predictions' forward (its outputs are F(x)), the attribution's, and F(baseline): one
        # row for a number on the replica's first batch, none after; every row's own baseline otherwise.
        baseline_rows = (1 if batch == 0 else 0) if constant else count
        assert sorted(rows) == sorted([count, attributed] + ([baseline_rows] if baseline_rows else []))
    for item, result in zip(work, results, strict=True):
        assert isinstance(result, ExplainResult) and result.deltas is not None
        x = torch.from_numpy(item.inputs).permute(0, 3, 1, 2).float().div(255.0)
        base = blurred(x) if baseline == "blur" else (0.0 if baseline == "zeros" else float(baseline))  # type: ignore[arg-type]
        attr, delta = (t.detach() for t in _captum(model, method, x, base, torch.from_numpy(result.targets), steps))
        scale = float(attr.abs().sum()) + float(delta.abs().sum()) + 1e-6
        np.testing.assert_allclose(result.attributions, attr.numpy(), rtol=1e-4,
                                   atol=1e-5 * float(attr.abs().max()))
        np.testing.assert_allclose(result.deltas, delta.numpy(), rtol=0, atol=1e-4 * scale)
