"""The frozen prediction graph (app/inference/frozen.py): built where the catalog asks for it (and,
by default, for float32 models on the CPU), the same function as the eager served module, its own
copy in every replica, used for predictions only, and refused (a log line, or a catalog error where
`predict_graph = "frozen"`) where it cannot be built or computes something else.

References are the eager modules (the served `Standardized` module, or the user's net applied by
hand to the normalised input). Freezing reorders float32 arithmetic: outputs agree to rtol 1e-5
(atol 1e-5 of the largest).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from app.errors import CatalogError
from app.inference.catalog import ModelSpec, load_catalog
from app.inference.engine import ExplainResult, ExplainWork, PredictResult, PredictWork, run_batch
from app.inference.frozen import frozen_scores
from app.inference.loading import LoadedModel, load_model
from app.inference.methods import METHODS, model_defaults
from app.inference.params import resolve_params

ROOT = Path(__file__).resolve().parents[3]
CPU = torch.device("cpu")
SPECS = {s.name: s for s in load_catalog(ROOT / "models" / "catalog.toml")}


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def _inputs(spec: ModelSpec, rows: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, *spec.input_shape, generator=generator)
    if spec.kind == "tabular":  # feature values around the model's own scale
        assert spec.tabular is not None
        x = torch.tensor(spec.tabular.mean) + (x - 0.5) * 4 * torch.tensor(spec.tabular.std)
    return x


@pytest.mark.parametrize("name", ["breast-cancer", "purchase", "diabetes", "shapes"])
def test_a_float32_model_on_the_cpu_predicts_through_a_frozen_graph_of_the_same_function(name: str) -> None:
    spec = SPECS[name]
    model = load_model(spec, CPU)
    assert isinstance(model.predictor, torch.jit.ScriptModule)
    net, mean, std = model.module.net, model.module.mean, model.module.std
    for rows in (1, 3, 17):
        x = _inputs(spec, rows, seed=rows)
        with torch.inference_mode():
            frozen = model.predict(x)
            by_hand = net(((x - mean) / std).contiguous(memory_format=model.module.memory_format)).float()
            _close(frozen, by_hand)
            _close(frozen, model.module(x))


def test_eager_and_other_precisions_keep_the_eager_module() -> None:
    spec = SPECS["shapes"]
    assert load_model(spec.model_copy(update={"predict_graph": "eager"}), CPU).predictor is None
    assert load_model(spec.model_copy(update={"precision": "bf16"}), CPU).predictor is None
    forced = load_model(spec.model_copy(update={"precision": "bf16", "predict_graph": "frozen"}), CPU)
    assert forced.predictor is not None
    x = _inputs(spec, 2)
    with torch.inference_mode():
        torch.testing.assert_close(forced.predict(x), forced.module(x), rtol=2e-2, atol=2e-2)


def test_building_the_graph_leaves_the_served_module_as_it_was() -> None:
    model = load_model(SPECS["shapes"], CPU)
    module = model.module
    before = {name: (tensor.clone(), tensor.data_ptr()) for name, tensor in module.state_dict().items()}
    probe = _inputs(SPECS["shapes"], 2)
    with torch.inference_mode():
        expected = module(probe)
    graph = frozen_scores(SPECS["shapes"], module.net, module.mean, module.std, torch.float32, probe, expected)
    assert graph is not None
    after = module.state_dict()
    assert after.keys() == before.keys()
    for name, (tensor, pointer) in before.items():
        assert torch.equal(after[name], tensor) and after[name].data_ptr() == pointer, name
    assert isinstance(module.net.get_submodule("features.0"), nn.Conv2d)  # not a scripted module in its place


def test_a_replica_has_its_own_frozen_graph_computing_the_same() -> None:
    first = load_model(SPECS["shapes"], CPU)
    second = first.replica()
    assert second.predictor is not None and second.predictor is not first.predictor
    assert second.module is not first.module
    x = _inputs(SPECS["shapes"], 4)
    with torch.inference_mode():
        torch.testing.assert_close(second.predict(x), first.predict(x), rtol=0, atol=0)


class _Unscriptable(nn.Module):
    """TorchScript refuses `**kwargs`; eager PyTorch serves it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor, **options: Any) -> torch.Tensor:
        return self.linear(x)


def _frozen_of(spec: ModelSpec, net: nn.Module, expected_offset: float = 0.0) -> torch.jit.ScriptModule | None:
    mean, std = torch.zeros(6), torch.ones(6)
    probe = torch.rand(2, 6)
    with torch.inference_mode():
        expected = net(probe) + expected_offset
    return frozen_scores(spec, net, mean, std, torch.float32, probe, expected)


def test_a_net_that_cannot_be_scripted_is_served_eagerly_or_refused_where_frozen_is_asked(
        caplog: pytest.LogCaptureFixture) -> None:
    spec = SPECS["purchase"]
    with caplog.at_level(logging.INFO, logger="app.inference.frozen"):
        assert _frozen_of(spec, _Unscriptable().eval()) is None
    assert any("predictions run eagerly: it cannot be scripted" in r.getMessage() for r in caplog.records)
    with pytest.raises(CatalogError, match="predict_graph: frozen, but it cannot be scripted"):
        _frozen_of(spec.model_copy(update={"predict_graph": "frozen"}), _Unscriptable().eval())


def test_a_graph_that_computes_something_else_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    spec = SPECS["purchase"]
    net = nn.Linear(6, 2).eval()
    assert _frozen_of(spec, net) is not None
    with caplog.at_level(logging.INFO, logger="app.inference.frozen"):
        assert _frozen_of(spec, net, expected_offset=0.5) is None
    assert any("differ from the eager module's" in r.getMessage() for r in caplog.records)
    with pytest.raises(CatalogError, match="predict_graph: frozen, but its outputs differ"):
        _frozen_of(spec.model_copy(update={"predict_graph": "frozen"}), net, expected_offset=0.5)


class _Sharpened(torch.nn.Module):
    """A stand-in predictor whose outputs tell it apart from the eager module's."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) * 2.0


def test_predictions_run_the_frozen_graph_and_attributions_the_eager_module() -> None:
    spec = SPECS["shapes"]
    model = load_model(spec, CPU)
    spied: LoadedModel = replace(model, predictor=_Sharpened(model.module))  # type: ignore[arg-type]
    x = _inputs(spec, 3)
    with torch.inference_mode():
        eager = torch.softmax(model.module(x), dim=1).numpy()
        sharpened = torch.softmax(model.module(x) * 2.0, dim=1).numpy()
    assert not np.allclose(eager, sharpened, rtol=1e-3)
    (predicted,) = run_batch(spied, [PredictWork(x.numpy())], 64)
    assert isinstance(predicted, PredictResult)
    np.testing.assert_allclose(predicted.scores, sharpened, rtol=1e-5)
    params = resolve_params(METHODS["integrated_gradients"].params,
                            model_defaults(spec, model.facts, "integrated_gradients"), {"n_steps": 4})
    (explained,) = run_batch(spied, [ExplainWork(x.numpy(), (None, None, None), "integrated_gradients", params)], 64)
    assert isinstance(explained, ExplainResult)
    np.testing.assert_allclose(explained.scores, eager, rtol=1e-5)
