"""The recipes of docs/architecture.md work as written: a method is one row, an input kind is one
module. Each test adds a toy one the way its recipe says (registering it where the recipe says,
here for the test's duration) and serves a model with it over real HTTP, end to end."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tomli_w
import torch
from captum.attr import Saliency
from numpy.typing import NDArray
from pydantic import Field
from safetensors.torch import save_file

from app.errors import ErrorItem, InvalidInput
from app.inference import methods as method_table
from app.inference.explained import TargetScalar
from app.inference.methods.base import Attribution, Method, grad_leaf, in_chunks, summed
from app.inference.params import MethodParams
from app.kinds import KINDS, Decoded, ExplainOptions, HostWork, Rendered, RequestLimits
from app.schemas import FeatureAttribution
from models.zoo import mlp
from tests.conftest import LiveServer, make_settings
from tests.fixtures.catalogs import demo_subset

# --------------------------------------------------------------------------- a toy method


class ScaledGradientParams(MethodParams):
    scale: float = Field(2.0, gt=0.0, le=100.0, description="Multiplies the gradient")


def _scaled_gradient(forward: TargetScalar, x: torch.Tensor, targets: torch.Tensor, prm: ScaledGradientParams,
                     max_rows: int) -> Attribution:
    saliency = summed(Saliency(forward))
    return in_chunks(lambda xs, ts: (prm.scale * saliency.attribute(grad_leaf(xs), additional_forward_args=(ts,),
                                                                    abs=False), None), x, targets, max_rows)


SCALED_GRADIENT = Method("scaled_gradient", frozenset({"tabular"}), ScaledGradientParams, _scaled_gradient,
                         passes=lambda prm, shape: 1, single_forward=True)


def test_a_method_is_one_row(monkeypatch: pytest.MonkeyPatch, client_of: Any) -> None:
    monkeypatch.setitem(method_table.METHODS, SCALED_GRADIENT.name, SCALED_GRADIENT)
    with client_of("breast-cancer") as (http, live):
        info = http.get("/v1/models/breast-cancer").json()
        offered = {m["name"]: m for m in info["methods"]}
        assert offered["scaled_gradient"]["params"] == {"scale": 2.0}
        row = [14.0, 19.0, 92.0, 650.0, 0.1, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.8, 40.0, 0.007, 0.025, 0.03,
               0.012, 0.02, 0.004, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29, 0.08]
        answer = http.post("/v1/models/breast-cancer/explain", json={
            "instances": [row], "method": "scaled_gradient", "params": {"scale": 3.0}, "target": 1})
        assert answer.status_code == 200, answer.text
        got = np.array([a["attribution"] for a in answer.json()["explanations"][0]["attributions"]])
        model = live.service.registry.models["breast-cancer"].primary
        x = torch.tensor([row], requires_grad=True)
        expected = 3.0 * Saliency(model.module).attribute(x, target=1, abs=False)[0].detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
        refused = http.post("/v1/models/breast-cancer/explain", json={
            "instances": [row], "method": "scaled_gradient", "params": {"scale": 0}})
        assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["params", "scale"]


# --------------------------------------------------------------------------- a toy input kind


class DigitsKind:
    """Instances are strings of digits ("31415"), one per model input; each digit's contribution."""

    name = "digits"
    method_kinds: frozenset[str] = frozenset({"tabular"})  # a vector of numbers: the tabular methods fit
    outputs: frozenset[str] = frozenset({"summary"})
    default_outputs: frozenset[str] = frozenset()
    shape_key = "features"
    example_suffixes: tuple[str, ...] = (".json",)
    attributions_formats: frozenset[str] = frozenset({"list"})

    def check_spec(self, spec: Any) -> None:
        if not spec.features:
            raise ValueError("digits models name their positions in 'features'")

    def input_shape(self, spec: Any) -> tuple[int, ...]:
        return (len(spec.features),)

    def normalisation(self, spec: Any) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        n = len(spec.features)
        return np.full((1, n), 4.5, np.float32), np.full((1, n), 3.0, np.float32)

    def mean_input(self, spec: Any) -> NDArray[np.float32] | None:
        return np.full(len(spec.features), 4.5, np.float32)

    def tensor_inputs(self, spec: Any) -> dict[str, tuple[str, list[int]]]:
        return {"digits": ("BYTES", [-1])}

    def describe(self, spec: Any) -> dict[str, Any]:
        return {"features": [{"name": f} for f in spec.features], "input": None}

    async def decode(self, spec: Any, instances: Sequence[Any], files: Sequence[bytes], limits: RequestLimits,
                     host: HostWork, options: ExplainOptions | None,
                     pixels: Sequence[NDArray[np.uint8]] = ()) -> Decoded:
        n = len(spec.features)
        rows = []
        for i, instance in enumerate(instances):
            if not (isinstance(instance, str) and len(instance) == n and instance.isdigit()):
                raise InvalidInput(f"instance {i}: expected {n} digits", [ErrorItem(("instances", i), "not digits")])
            rows.append([float(c) for c in instance])
        return Decoded(np.asarray(rows, np.float32), list(instances))

    async def answer(self, spec: Any, decoded: Decoded, attributions: NDArray[np.float32], predictions: Any,
                     options: ExplainOptions, host: HostWork) -> list[Rendered]:
        parts = []
        for text, attr in zip(decoded.items, attributions, strict=True):
            fields: dict[str, Any] = {"attributions": [
                FeatureAttribution(feature=f, value=float(d), attribution=float(a))
                for f, d, a in zip(spec.features, text, attr, strict=True)]}
            if "summary" in options.outputs:
                top = int(np.argmax(np.abs(attr)))
                fields["summary"] = f"digit {top} ({text[top]}) matters most"
            parts.append(Rendered(fields))
        return parts


def test_an_input_kind_is_one_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(KINDS, "digits", DigitsKind())  # type: ignore[arg-type]
    net = mlp(in_features=5, hidden=[8], out_features=2)
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p)
    save_file(net.state_dict(), str(tmp_path / "digits.safetensors"))
    entry = {"name": "digits", "kind": "digits", "task": "classification", "format": "state_dict",
             "builder": "models.zoo:mlp", "builder_args": {"in_features": 5, "hidden": [8], "out_features": 2},
             "weights": "digits.safetensors", "labels": ["odd", "even"], "features": [f"d{i}" for i in range(5)],
             "default_method": "saliency"}
    (tmp_path / "catalog.toml").write_text(tomli_w.dumps({"models": [entry]}))
    with LiveServer(make_settings(models=tmp_path / "catalog.toml", log_level="CRITICAL")) as live, \
            httpx.Client(base_url=live.url, timeout=60) as http:
        info = http.get("/v1/models/digits").json()
        assert info["kind"] == "digits" and "saliency" in {m["name"] for m in info["methods"]}
        predicted = http.post("/v1/models/digits/predict", json={"instances": ["31415"]})
        assert predicted.status_code == 200, predicted.text
        answer = http.post("/v1/models/digits/explain", json={"instances": ["31415", "27182"], "target": 0,
                                                               "outputs": ["summary"]})
        assert answer.status_code == 200, answer.text
        x = torch.tensor([[3.0, 1, 4, 1, 5], [2.0, 7, 1, 8, 2]], requires_grad=True)
        expected = Saliency(lambda v: net((v - 4.5) / 3.0)).attribute(x, target=0, abs=False).detach().numpy()
        for explanation, want in zip(answer.json()["explanations"], expected, strict=True):
            got = np.array([a["attribution"] for a in explanation["attributions"]])
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
            assert explanation["summary"].startswith("digit ")
        refused = http.post("/v1/models/digits/predict", json={"instances": ["31a15"]})
        assert refused.status_code == 422 and refused.json()["errors"][0]["msg"] == "not digits"
        asked = http.post("/v1/models/digits/explain", json={"instances": ["31415"], "outputs": ["overlay"]})
        assert asked.status_code == 422  # not an output this kind offers


@pytest.fixture()
def client_of(tmp_path: Path) -> Any:
    """`with client_of(model) as (http, live)`: a fresh server over the demo catalog's `model`."""

    @contextmanager
    def open_client(model: str) -> Iterator[tuple[httpx.Client, LiveServer]]:
        with LiveServer(make_settings(models=demo_subset(tmp_path, [model]), log_level="CRITICAL")) as live, \
                httpx.Client(base_url=live.url, timeout=60) as http:
            yield http, live

    return open_client


def test_the_recipes_do_not_leak_into_other_tests() -> None:
    assert "scaled_gradient" not in method_table.METHODS and "digits" not in KINDS
