"""Prometheus metrics and structured logs, read the way an operator reads them."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import httpx
import pytest

from app.inference.methods import METHODS
from app.inference.params import resolve_params
from tests.conftest import LiveServer, make_settings
from tests.fixtures import faulty
from tests.fixtures.probes import samples, total
from tests.fixtures.process import ServerProcess

ROW = [14.0, 19.0, 92.0, 650.0, 0.1, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.8, 40.0, 0.007, 0.025, 0.03,
       0.012, 0.02, 0.004, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29, 0.08]
REQUESTS = "explainserve_requests_total"
LATENCY = "explainserve_request_seconds"


def metrics(client: httpx.Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def count(text: str, **labels: str) -> float:
    return total(text, REQUESTS, **labels)


def test_requests_are_counted_by_route_model_method_and_status(client: httpx.Client) -> None:
    before = metrics(client)
    for _ in range(2):
        assert client.post("/v1/models/breast-cancer/predict", json={"instances": [ROW]}).status_code == 200
    purchase_row = [30, 100, 5, 1, 0, 0.1]
    assert client.post("/predict", json={"model": "purchase", "instances": [purchase_row]}).status_code == 200
    explained = client.post("/v1/models/breast-cancer:explain", json={"instances": [ROW], "params": {"n_steps": 4}})
    assert explained.status_code == 200
    assert client.post("/v1/models/purchase/explain", json={
        "instances": [purchase_row], "method": "saliency"}).status_code == 200
    assert client.post("/v1/models/breast-cancer/explain", json={
        "instances": [ROW], "params": {"n_steps": 0}}).status_code == 422
    assert client.post("/v1/models/breast-cancer/predict", json={"instances": [ROW[:3]]}).status_code == 422
    assert client.post("/v1/models/nope/predict", json={"instances": [ROW]}).status_code == 404
    assert client.get("/readyz").status_code == 200
    after = metrics(client)

    def delta(**labels: str) -> float:
        return count(after, **labels) - count(before, **labels)

    assert delta(route="predict", model="breast-cancer", method="", status="200") == 2
    assert delta(route="predict", model="purchase", status="200") == 1
    assert delta(route="explain", model="breast-cancer", method="integrated_gradients", status="200") == 1
    assert delta(route="explain", model="purchase", method="saliency", status="200") == 1
    assert delta(route="explain", model="breast-cancer", status="422") == 1
    assert delta(route="predict", model="breast-cancer", status="422") == 1
    assert delta(route="predict", status="404") == 1
    assert delta(route="readyz", status="200") == 1


def test_latency_histograms_by_phase(client: httpx.Client) -> None:
    before = metrics(client)
    assert client.post("/v1/models/breast-cancer/explain", json={
        "instances": [ROW], "outputs": ["chart"], "params": {"n_steps": 4}}).status_code == 200
    assert client.post("/v1/models/diabetes/predict", json={"instances": [[1.0] * 10]}).status_code == 200
    after = metrics(client)

    def observed(route: str, model: str, phase: str) -> float:
        name = f"{LATENCY}_count"
        return total(after, name, route=route, model=model, phase=phase) - total(
            before, name, route=route, model=model, phase=phase)

    for phase in ("queue", "compute", "render", "total", "request"):
        assert observed("explain", "breast-cancer", phase) == 1, phase
    for phase in ("queue", "compute", "request"):
        assert observed("predict", "diabetes", phase) == 1, phase
    # histogram buckets are cumulative and end in +Inf == count
    buckets = samples(after, f"{LATENCY}_bucket", route="explain", model="breast-cancer", phase="render")
    assert buckets == sorted(buckets)
    assert buckets[-1] == total(after, f"{LATENCY}_count", route="explain", model="breast-cancer", phase="render")
    render_sum = total(after, f"{LATENCY}_sum", route="explain", model="breast-cancer", phase="render")
    assert render_sum > 0


def test_batch_and_queue_metrics(client: httpx.Client, live: LiveServer) -> None:
    before = metrics(client)
    rows = [ROW, [v * 1.1 for v in ROW], [v * 0.9 for v in ROW]]
    assert client.post("/v1/models/breast-cancer/predict", json={"instances": rows}).status_code == 200
    params = resolve_params(METHODS["integrated_gradients"].params, {}, {"n_steps": 5})
    passes = METHODS["integrated_gradients"].passes(params, (30,))
    assert client.post("/v1/models/breast-cancer/explain", json={
        "instances": rows[:2], "params": {"n_steps": 5}}).status_code == 200
    after = metrics(client)

    def delta(name: str) -> float:
        return total(after, name, model="breast-cancer") - total(before, name, model="breast-cancer")

    assert delta("explainserve_batch_requests_count") == 2
    assert delta("explainserve_batch_requests_sum") == 2  # each request ran in a batch of its own
    assert delta("explainserve_batch_rows_count") == 2
    assert delta("explainserve_batch_rows_sum") == 3 + 2 * passes
    for name in live.service.registry.models:
        assert samples(after, "explainserve_queue_rows", model=name) == [0.0]
    assert "# TYPE explainserve_device_memory_bytes gauge" in after
    assert "# TYPE explainserve_dropped_items_total counter" in after or "explainserve_dropped_items" in after


def test_invented_names_do_not_grow_the_metrics(client: httpx.Client) -> None:
    def invent(name: str) -> None:
        assert client.post(f"/v1/models/{name}/predict", json={"instances": [ROW]}).status_code == 404
        assert client.post("/explain", json={"model": name, "instances": [ROW]}).status_code == 404
        assert client.post("/v1/models/breast-cancer/explain", json={
            "instances": [ROW], "method": name}).status_code == 422

    def series(text: str) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith(REQUESTS)}

    invent("first-made-up-name")
    before = metrics(client)
    names = [f"made-up-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    for name in names:
        invent(name)
    after = metrics(client)
    assert not any(name in after for name in names + ["first-made-up-name"])
    assert series(after) == series(before)  # no new series, however many names were invented
    assert count(after, model="unknown", status="404") - count(before, model="unknown", status="404") == 40
    assert count(after, method="unknown", status="422") - count(before, method="unknown", status="422") == 20


def test_json_logs_carry_the_request_id(tmp_path: Path) -> None:
    catalog = faulty.catalog(tmp_path, {"poison": {"poison": faulty.POISON}})
    server = ServerProcess({"MODELS": str(catalog), "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"})
    failing_id = f"trace-{uuid.uuid4().hex}"
    good_id = f"good-{uuid.uuid4().hex}"
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            bad = http.post("/v1/models/poison/predict", json={"instances": [[1.0, faulty.POISON, 0.0, 0.0]]},
                            headers={"X-Request-ID": failing_id})
            assert bad.status_code == 500 and bad.headers["x-request-id"] == failing_id
            assert failing_id not in bad.text and "injected" not in bad.text  # internals stay in the log
            good = http.post("/v1/models/poison/predict", json={"instances": [[1.0, 2.0, 3.0, 4.0]]},
                             headers={"X-Request-ID": good_id})
            assert good.status_code == 200
    finally:
        server.stop()
    records = []
    for line in server.lines:
        if not line.strip():
            continue
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "request_id", "message"} <= set(record), record
        records.append(record)
    failing = [r for r in records if r["request_id"] == failing_id]
    assert any(r["level"] == "ERROR" for r in failing), failing
    # the worker's traceback is findable by the request id
    tracebacks = [r for r in failing if "traceback" in r]
    assert tracebacks and "injected fault" in tracebacks[0]["traceback"]
    assert any(r["request_id"] == good_id for r in records)  # e.g. the access log line
    assert not any(r["level"] == "ERROR" for r in records if r["request_id"] == good_id)
    assert any("ready" in r["message"] for r in records)


@pytest.mark.parametrize("sent", ["abc-123", "a" * 128, "trace/1:2@x"])
def test_request_id_is_echoed_on_errors_too(client: httpx.Client, sent: str) -> None:
    response = client.post("/v1/models/nope/predict", json={"instances": [ROW]}, headers={"X-Request-ID": sent})
    assert response.status_code == 404 and response.headers["x-request-id"] == sent


def test_an_unexpected_error_is_a_problem_with_the_request_id(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    catalog = faulty.catalog(tmp_path, {"tiny": {}})
    server = LiveServer(make_settings(models=catalog))

    async def broken() -> None:
        raise RuntimeError("a bug in a handler")

    server.app.add_api_route("/v1/broken", broken, methods=["GET"])
    with server, httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.get("/v1/broken", headers={"X-Request-ID": "bug-42"})
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["x-request-id"] == "bug-42"
        assert response.json() == {"type": "about:blank", "title": "Internal Server Error", "status": 500,
                                   "detail": "internal server error"}  # nothing about the bug leaks
        assert http.get("/healthz").status_code == 200  # the same connection still works
        assert count(metrics(http), route="other", status="500") == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("unhandled error on GET /v1/broken" in r.getMessage() and r.exc_info for r in errors)
    assert not any("Exception in ASGI application" in r.getMessage() for r in errors)
