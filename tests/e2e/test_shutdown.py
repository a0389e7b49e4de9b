"""Graceful shutdown of `python -m app`: SIGTERM while 50 requests are in flight.

The model sleeps 80 ms per batch and batches hold one request, so the 50 requests take a few
seconds to serve and the signal lands while most of them are queued.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures import faulty
from tests.fixtures.probes import total
from tests.fixtures.process import ServerProcess

pytestmark = pytest.mark.anyio

N = 50


def rows(i: int) -> list[list[float]]:
    return [[float(i), 1.0, -0.5 * i, 2.0]]


async def test_sigterm_drains_accepted_work_then_exits_0(tmp_path: Path) -> None:
    catalog = faulty.catalog(tmp_path, {"slow": {"sleep_s": 0.08}})
    server = ServerProcess({"MODELS": str(catalog), "SHUTDOWN_GRACE_S": "20", "MAX_BATCH_SIZE": "1",
                            "LOG_LEVEL": "WARNING"})
    try:
        await asyncio.to_thread(server.wait_ready)
        limits = httpx.Limits(max_connections=N + 20, max_keepalive_connections=N + 20)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            def predict(i: int) -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(client.post("/v1/models/slow/predict", json={"instances": rows(i)}))

            tasks = [predict(i) for i in range(N)]

            async def accepted() -> float:  # queued + handed to the model (one request per batch)
                text = (await client.get("/metrics")).text
                return (total(text, "explainserve_queue_rows", model="slow")
                        + total(text, "explainserve_batch_requests_sum", model="slow"))

            deadline = time.monotonic() + 30
            while await accepted() < N:
                assert time.monotonic() < deadline, "the requests were never all queued"
                await asyncio.sleep(0.01)
            assert sum(t.done() for t in tasks) < N - 5, "the work finished before the signal"

            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            probes: list[httpx.Response] = []  # /readyz and new predict requests, in the order sent
            refused = 0
            while not all(t.done() for t in tasks):
                try:
                    probes.append(await client.get("/readyz"))
                    probes.append(await client.post("/v1/models/slow/predict", json={"instances": rows(0)}))
                except httpx.TransportError:
                    refused += 1
                await asyncio.sleep(0.05)
            answers = await asyncio.gather(*tasks)
            drain_s = time.monotonic() - signalled

        code = await asyncio.to_thread(server.wait, 60)
        assert code == 0, "\n".join(server.lines[-30:])
    finally:
        server.stop()

    # every accepted request got its own answer
    for i, response in enumerate(answers):
        assert response.status_code == 200, response.text
        probs = faulty.reference(rows(i))[0]
        scores = {e["index"]: e["score"] for e in response.json()["predictions"][0]["top_k"]}
        assert scores[0] == pytest.approx(probs[0], rel=1e-5, abs=1e-7)
        assert scores[1] == pytest.approx(probs[1], rel=1e-5, abs=1e-7)
    # Once the server has taken the signal in (its first 503), /readyz and new work answer 503
    # with Retry-After until it exits; anything sent before that was accepted and served.
    first = next((i for i, r in enumerate(probes) if r.status_code == 503), None)
    assert first is not None, f"no 503 during a drain of {drain_s:.2f} s: {[r.status_code for r in probes]}"
    assert all(r.status_code == 200 for r in probes[:first])
    draining = probes[first:]
    assert any(r.request.url.path == "/readyz" for r in draining)
    assert any(r.request.url.path.endswith("/predict") for r in draining)
    for response in draining:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) >= 1
    assert len(draining) > refused  # the server kept listening while it drained
    # after the exit: the connection is refused
    with pytest.raises(httpx.ConnectError):
        httpx.post(server.url + "/v1/models/slow/predict", json={"instances": rows(0)}, timeout=5)
    assert not any('"level": "ERROR"' in line or " ERROR " in line for line in server.lines), server.lines
