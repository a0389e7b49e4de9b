"""ModelInfo's methods: resolved default params and their JSON schema, with this model's defaults."""

from __future__ import annotations

from typing import Any

from app.inference.catalog import ModelSpec
from app.inference.facts import ModelFacts
from app.runtime.model_entry import _method_info as method_info


def _spec(**changes: object) -> ModelSpec:
    entry: dict[str, object] = {
        "name": "m", "kind": "tabular", "task": "regression", "format": "state_dict",
        "builder": "models.zoo:mlp", "weights": "w.safetensors", "features": ["a", "b"]}
    return ModelSpec.model_validate(entry | changes)


def _method_info(spec: ModelSpec, name: str) -> dict[str, Any]:
    mean = spec.input_kind.mean_input(spec)
    facts = ModelFacts(spec.name, spec.input_shape, mean is not None, 4)
    return method_info(spec, facts, name).model_dump(by_alias=True)


def test_catalog_overrides_are_the_schema_defaults() -> None:
    spec = _spec(method_params={"integrated_gradients": {"n_steps": 64, "baseline": 0.5}})
    info = _method_info(spec, "integrated_gradients")
    assert info["params"] == {"n_steps": 64, "baseline": 0.5, "method": "gausslegendre"}
    props = info["schema"]["properties"]
    assert (props["n_steps"]["default"], props["baseline"]["default"]) == (64, 0.5)
    assert props["method"]["default"] == "gausslegendre"
    plain = _method_info(_spec(), "integrated_gradients")["schema"]["properties"]
    assert plain["n_steps"]["default"] == "auto"  # one model's overrides do not leak into another's schema


def test_without_a_training_mean_the_ablation_baseline_defaults_to_zeros() -> None:
    info = _method_info(_spec(), "feature_ablation")
    assert info["params"]["baseline"] == info["schema"]["properties"]["baseline"]["default"] == "zeros"
    with_mean = _spec(tabular={"mean": [0.0, 1.0], "std": [1.0, 1.0]})
    assert _method_info(with_mean, "feature_ablation")["schema"]["properties"]["baseline"]["default"] == "mean"
