"""Liveness, readiness, metrics and request ids over real HTTP."""

from __future__ import annotations

import re

import httpx

from app.inference.catalog import load_catalog
from tests.conftest import LiveServer


def catalog_names(live: LiveServer) -> list[str]:
    return [spec.name for spec in load_catalog(live.app.state.settings.models)]


def test_healthz(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"status": "ok"}


def test_root_answers_api_clients_alive(client: httpx.Client) -> None:
    for accept in (None, "application/json", "*/*", "application/json, text/html"):
        r = client.get("/", headers={"Accept": accept} if accept else {})
        assert r.status_code == 200, accept
        assert r.json() == {"status": "alive"}


def test_root_sends_browsers_to_the_page(client: httpx.Client) -> None:
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    r = client.get("/", headers={"Accept": accept})
    assert r.status_code == 307
    assert r.headers["location"] == "/ui"


def test_readyz_lists_every_model_ready(client: httpx.Client, live: LiveServer) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    names = catalog_names(live)
    assert len(names) >= 4
    assert body["models"] == {name: "ready" for name in names}


def test_request_id_is_generated_on_every_response(client: httpx.Client) -> None:
    seen = set()
    for path in ("/healthz", "/readyz", "/v1/models", "/v1/models/nope", "/no/such/route"):
        r = client.get(path)
        rid = r.headers.get("x-request-id")
        assert rid, f"{path} answered without X-Request-ID"
        assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
        seen.add(rid)
    assert len(seen) == 5, "request ids are not unique"


def test_request_id_is_echoed(client: httpx.Client) -> None:
    for path in ("/healthz", "/v1/models/nope"):
        r = client.get(path, headers={"X-Request-ID": "client-id-42.a:b"})
        assert r.headers["x-request-id"] == "client-id-42.a:b"
    r = client.post("/v1/models/breast-cancer/predict", content=b"{oops",
                    headers={"X-Request-ID": "bad-json-1", "content-type": "application/json"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "bad-json-1"


def test_an_unsafe_request_id_is_replaced(client: httpx.Client) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


def test_metrics_is_prometheus_text(client: httpx.Client) -> None:
    client.get("/v1/models")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("explainserve_requests_total", "explainserve_request_seconds_bucket",
                 "explainserve_queue_rows", "explainserve_batch_requests"):
        assert name in text, f"{name} missing from /metrics"
    assert 'route="models"' in text
