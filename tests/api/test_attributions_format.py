"""`attributions_format`: image attributions as nested lists (6 significant digits) or as float32
bytes with their shape (docs/api.md "Explain"), read back by the Python client."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from PIL import Image

from app.client import Client
from app.kinds.image import round_significant
from tests.conftest import ROOT, LiveServer, png_b64
from tests.fixtures.compare import assert_close

CIRCLE = ROOT / "models" / "shapes" / "examples" / "circle.png"
BODY = {"instances": [{"b64": png_b64(Image.open(CIRCLE))}], "method": "integrated_gradients",
        "params": {"n_steps": 4}, "outputs": ["attributions"]}


def _attributions(client: httpx.Client, **extra: object) -> object:
    response = client.post("/v1/models/shapes/explain", json={**BODY, **extra})
    assert response.status_code == 200, response.text
    return response.json()["explanations"][0]["attributions"]


def test_float32_bytes_carry_the_values_the_lists_round(client: httpx.Client) -> None:
    listed = np.asarray(_attributions(client))
    encoded = _attributions(client, attributions_format="float32")
    assert isinstance(encoded, dict) and set(encoded) == {"dtype", "shape", "b64"}
    assert encoded["dtype"] == "float32" and encoded["shape"] == [128, 128]
    raw = base64.b64decode(encoded["b64"], validate=True)
    assert len(raw) == 128 * 128 * 4
    values = np.frombuffer(raw, dtype="<f4").reshape(128, 128)
    assert listed.shape == values.shape and np.abs(values).max() > 0
    np.testing.assert_allclose(listed, round_significant(values), rtol=1e-5, atol=1e-9)


def test_list_is_the_default(client: httpx.Client) -> None:
    default = _attributions(client)
    assert isinstance(default, list) and len(default) == 128 and all(len(row) == 128 for row in default)
    assert_close(default, _attributions(client, attributions_format="list"))


@pytest.mark.parametrize("value", ["float64", "", None])
def test_unknown_formats_are_422(client: httpx.Client, value: object) -> None:
    response = client.post("/v1/models/shapes/explain", json={**BODY, "attributions_format": value})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "attributions_format"


def test_tabular_models_answer_lists_only(client: httpx.Client) -> None:
    row = [35.0, 900.0, 4.0, 6.0, 1.0, 0.3]
    response = client.post("/v1/models/purchase/explain", json={"instances": [row], "attributions_format": "float32"})
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"] == [{"loc": ["attributions_format"], "msg": "not available"}]
    assert "tabular" in problem["detail"]


def test_the_client_decodes_both_forms(live: LiveServer) -> None:
    with Client(live.url, timeout=120) as api:
        listed = api.explain("shapes", [str(CIRCLE)], method="integrated_gradients", params={"n_steps": 4},
                             outputs=["attributions"]).explanations[0].attributions
        encoded = api.explain("shapes", [str(CIRCLE)], method="integrated_gradients", params={"n_steps": 4},
                              outputs=["attributions"], attributions_format="float32").explanations[0].attributions
    assert isinstance(listed, np.ndarray) and isinstance(encoded, np.ndarray)
    assert encoded.dtype == np.float32 and encoded.shape == (128, 128)
    np.testing.assert_allclose(listed, encoded, rtol=1e-5, atol=1e-9)
