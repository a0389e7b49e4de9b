"""The hot routes are served by their plain twins (app/api/fast.py), documented by their APIRoutes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match, Route

from app.api import explain, predict
from tests.conftest import LiveServer

HOT = [(route.path, route.endpoint) for router in (explain.router, predict.router)
       for route in router.routes if isinstance(route, APIRoute)]


def _scope(path: str, method: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def _concrete(path: str) -> str:
    return path.replace("{model}", "some-model")


@pytest.mark.parametrize(("path", "endpoint"), HOT, ids=[path for path, _ in HOT])
def test_a_hot_path_is_matched_first_by_its_plain_twin(live: LiveServer, path: str, endpoint: Any) -> None:
    scope = _scope(_concrete(path), "POST")
    first = next(route for route in live.app.router.routes if route.matches(scope)[0] == Match.FULL)
    assert type(first) is Route  # a Starlette route, not FastAPI's
    assert first.endpoint.__wrapped__ is endpoint  # type: ignore[attr-defined]
    params = first.matches(scope)[1]["path_params"]
    assert params == ({"model": "some-model"} if "{model}" in path else {})


def test_the_openapi_document_lists_each_hot_path_once_from_its_apiroute(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, _ in HOT:
        operation = paths[path]["post"]
        assert not operation["operationId"].endswith("_plain")
        assert "200" in operation["responses"] and "422" in operation["responses"]
    assert not [p for p, ops in paths.items() for op in ops.values() if op.get("operationId", "").endswith("_plain")]


@pytest.mark.parametrize("path", ["/v1/models/breast-cancer/explain", "/v1/models/breast-cancer/predict", "/explain"])
def test_other_methods_on_a_hot_path_are_405_problems(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 405


def test_a_model_name_with_a_colon_route_still_reaches_the_endpoint(client: httpx.Client) -> None:
    body = {"instances": [[0.0] * 30], "method": "saliency"}
    response = client.post("/v1/models/no-such-model:explain", json=body)
    assert response.status_code == 404
    assert "no-such-model" in response.json()["detail"]
