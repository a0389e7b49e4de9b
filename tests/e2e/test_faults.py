"""Fault injection through the real serving path (HTTP -> batcher -> worker thread -> torch).

The models come from `tests.fixtures.faulty`: a linear classifier whose forward raises on a
poisoned value, raises torch.OutOfMemoryError on batches over a row limit, or blocks at a gate
the test opens. The gate makes batch formation deterministic: while one request holds the
worker, the test queues exactly the requests it wants in the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, make_settings
from tests.fixtures import faulty
from tests.fixtures.compare import assert_close
from tests.fixtures.faulty import GATE, POISON, Poisonable
from tests.fixtures.probes import total, wait_until

pytestmark = pytest.mark.anyio

MAX_QUEUE = 8
PROBLEM = "application/problem+json"
GOOD_ROWS = [[float(i), -float(i), 0.5 * i, 1.0] for i in range(1, 6)]


def write_catalog(folder: Path) -> Path:
    return faulty.catalog(folder, {
        "poison": {"poison": POISON, "gate_value": GATE},
        "oom": {"oom_rows": 2, "gate_value": GATE},
        "slow": {"gate_value": GATE},
    })


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    catalog = write_catalog(tmp_path_factory.mktemp("faulty"))
    with LiveServer(make_settings(models=catalog, max_queue=MAX_QUEUE, log_level="CRITICAL")) as live:
        yield live


def net_of(server: LiveServer, model: str) -> Poisonable:
    net = server.service.registry.models[model].primary.module.net
    assert isinstance(net, Poisonable)
    return net


def batcher_of(server: LiveServer, model: str) -> Any:
    return server.service.registry.models[model].batcher


def predict(client: httpx.AsyncClient, model: str, rows: list[list[float]],
            headers: dict[str, str] | None = None) -> Any:
    return client.post(f"/v1/models/{model}/predict", json={"instances": rows}, headers=headers or {})


@asynccontextmanager
async def occupied(server: LiveServer, client: httpx.AsyncClient, model: str) -> AsyncIterator[None]:
    """The model's only worker is blocked inside a forward until the block ends."""
    net = net_of(server, model)
    net.gate.clear()
    net.entered.clear()
    holder = asyncio.create_task(predict(client, model, [[GATE, 0.0, 0.0, 0.0]]))
    try:
        await wait_until(net.entered.is_set, "the gate request to reach the worker")
        yield
    finally:
        net.gate.set()
        response = await holder
        assert response.status_code == 200, response.text


async def queue_up(server: LiveServer, model: str, coros: list[Any], rows: int) -> list[asyncio.Task[Any]]:
    batcher = batcher_of(server, model)
    before = batcher.queued_rows
    tasks = [asyncio.create_task(c) for c in coros]
    await wait_until(lambda: batcher.queued_rows == before + rows, f"{rows} rows queued for {model}")
    return tasks


def assert_scores(response: httpx.Response, rows: list[list[float]]) -> None:
    assert response.status_code == 200, response.text
    expected = faulty.reference(rows)
    predictions = response.json()["predictions"]
    assert len(predictions) == len(rows)
    for prediction, probs in zip(predictions, expected, strict=True):
        by_index = {entry["index"]: entry["score"] for entry in prediction["top_k"]}
        for index, prob in enumerate(probs):
            assert by_index[index] == pytest.approx(prob, rel=1e-5, abs=1e-7)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["type"] == "about:blank"
    assert isinstance(body["detail"], str) and body["detail"]
    return body


async def metrics_text(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_poisoned_item_fails_alone_in_a_batch(server: LiveServer) -> None:
    net = net_of(server, "poison")
    poisoned_row = [1.0, POISON, 0.0, 0.0]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        faults_before = net.faults["poison"]
        async with occupied(server, client, "poison"):
            calls = [predict(client, "poison", [row]) for row in GOOD_ROWS[:3]]
            calls.append(predict(client, "poison", [poisoned_row], {"X-Request-ID": "poisoned-1"}))
            calls += [predict(client, "poison", [row]) for row in GOOD_ROWS[3:]]
            tasks = await queue_up(server, "poison", calls, rows=6)
            rows_before = len(net.batch_rows)
        responses = await asyncio.gather(*tasks)
    # After the gate request (1 row): the batch of six raised once, then each item ran alone,
    # five good singles and one more fault.
    assert net.faults["poison"] - faults_before == 2
    assert net.batch_rows[rows_before:] == [1, 1, 1, 1, 1, 1]
    bad = responses[3]
    body = assert_problem(bad, 500)
    assert bad.headers["x-request-id"] == "poisoned-1"
    assert "RuntimeError" in body["detail"] and "666" not in body["detail"]  # no internals leak
    good = responses[:3] + responses[4:]
    for response, row in zip(good, GOOD_ROWS, strict=True):
        assert_scores(response, [row])


async def test_poisoned_explain_fails_alone_and_others_match_serving_alone(server: LiveServer) -> None:
    def explain(client: httpx.AsyncClient, row: list[float]) -> Any:
        return client.post("/v1/models/poison/explain", json={"instances": [row], "method": "input_x_gradient"})

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        alone = [(await explain(client, row)).json() for row in GOOD_ROWS[:3]]
        async with occupied(server, client, "poison"):
            calls = [explain(client, GOOD_ROWS[0]), explain(client, [POISON, 1.0, 1.0, 1.0]),
                     explain(client, GOOD_ROWS[1]), explain(client, GOOD_ROWS[2])]
            tasks = await queue_up(server, "poison", calls, rows=4)
        responses = await asyncio.gather(*tasks)
    assert_problem(responses[1], 500)
    for response, expected in zip([responses[0], *responses[2:]], alone, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()
        assert_close(got["explanations"], expected["explanations"])
        # input x gradient of a linear model: x_i * W[target, i]
        explanation = got["explanations"][0]
        target = explanation["target"]["index"]
        for item, weight in zip(explanation["attributions"], faulty.WEIGHT[target], strict=True):
            assert item["attribution"] == pytest.approx(item["value"] * weight, rel=1e-5, abs=1e-6)


async def test_out_of_memory_splits_the_batch_and_every_request_recovers(server: LiveServer) -> None:
    net = net_of(server, "oom")
    rows = GOOD_ROWS + [[0.0, 0.0, 0.0, 0.0]]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        ooms_before = len(net.oom_rows_seen)
        async with occupied(server, client, "oom"):
            tasks = await queue_up(server, "oom", [predict(client, "oom", [row]) for row in rows], rows=6)
            rows_before = len(net.batch_rows)
        responses = await asyncio.gather(*tasks)
        for response, row in zip(responses, rows, strict=True):
            assert_scores(response, [row])
        # The six requests ran as one batch, which ran out of memory; the batch was split until
        # the parts fit (at most 2 rows), and every row was computed exactly once.
        ooms = net.oom_rows_seen[ooms_before:]
        assert ooms[0] == 6 and all(r > 2 for r in ooms)
        fitted = net.batch_rows[rows_before:]
        assert fitted[0] == 1  # the gate request
        assert all(r <= 2 for r in fitted[1:]) and sum(fitted[1:]) == 6
        # one request that alone does not fit: a clear 413, and the service keeps serving
        big = await predict(client, "oom", GOOD_ROWS)
        body = assert_problem(big, 413)
        assert "memory" in body["detail"] and "fewer instances" in body["detail"]
        after = await predict(client, "oom", GOOD_ROWS[:2])
        assert_scores(after, GOOD_ROWS[:2])


async def test_deadline_passed_in_the_queue_is_never_computed(server: LiveServer) -> None:
    batcher = batcher_of(server, "slow")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        dropped_before = total(await metrics_text(client), "explainserve_dropped_items_total", model="slow")
        computed_before = batcher.computed_items
        async with occupied(server, client, "slow"):
            started = time.monotonic()
            late = await predict(client, "slow", [GOOD_ROWS[0]], {"X-Request-Timeout": "0.2"})
            elapsed = time.monotonic() - started
            body = assert_problem(late, 504)
            assert "deadline" in body["detail"]
            # at its deadline, not after compute: the worker is still held at the gate here
            assert elapsed >= 0.2 and not net_of(server, "slow").gate.is_set()
        await wait_until(lambda: batcher.idle, "the slow model to go idle")
        assert batcher.computed_items == computed_before + 1  # the gate request only
        text = await metrics_text(client)
        assert total(text, "explainserve_dropped_items_total", model="slow") == dropped_before + 1
        # The deadline only bounds waiting: a generous one is served normally.
        ok = await predict(client, "slow", [GOOD_ROWS[1]], {"X-Request-Timeout": "30"})
        assert_scores(ok, [GOOD_ROWS[1]])


async def test_client_that_disconnects_while_queued_has_its_work_dropped(
        server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    batcher = batcher_of(server, "slow")

    def served(text: str) -> float:  # requests that ended because their client left (nginx's 499)
        return total(text, "explainserve_requests_total", route="predict", model="slow", status="499")

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        text = await metrics_text(client)
        dropped_before = total(text, "explainserve_dropped_items_total", model="slow")
        served_before = served(text)
        computed_before = batcher.computed_items
        async with occupied(server, client, "slow"):
            leaving = httpx.AsyncClient(base_url=server.url, timeout=60)
            tasks = await queue_up(server, "slow", [predict(leaving, "slow", [GOOD_ROWS[2]])], rows=1)
            tasks[0].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
            await leaving.aclose()  # the connection closes: the server sees http.disconnect

            async def finished() -> bool:
                # the gate request is still running; the abandoned one must be done with
                return served(await metrics_text(client)) >= served_before + 1

            deadline = time.monotonic() + 20
            while not await finished():
                assert time.monotonic() < deadline, "the server never noticed the disconnect"
                await asyncio.sleep(0.02)
            assert batcher.computed_items == computed_before + 1
        await wait_until(lambda: batcher.idle, "the slow model to go idle")
        assert batcher.computed_items == computed_before + 1
        text = await metrics_text(client)
        assert total(text, "explainserve_dropped_items_total", model="slow", reason="cancelled") >= 1
        assert total(text, "explainserve_dropped_items_total", model="slow") == dropped_before + 1
    # a client leaving is not a server fault
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_full_queue_answers_429_with_retry_after(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        rows = [[float(i), 1.0, 2.0, 3.0] for i in range(MAX_QUEUE)]
        async with occupied(server, client, "slow"):
            tasks = await queue_up(server, "slow", [predict(client, "slow", [row]) for row in rows],
                                   rows=MAX_QUEUE)
            text = await metrics_text(client)
            assert total(text, "explainserve_queue_rows", model="slow") == MAX_QUEUE
            refused = await predict(client, "slow", [GOOD_ROWS[0]])
            body = assert_problem(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1
            assert "MAX_QUEUE" in body["detail"]
            # other models have their own queue
            assert_scores(await predict(client, "oom", [GOOD_ROWS[0]]), [GOOD_ROWS[0]])
        responses = await asyncio.gather(*tasks)
        for response, row in zip(responses, rows, strict=True):
            assert_scores(response, [row])
        assert_scores(await predict(client, "slow", [GOOD_ROWS[0]]), [GOOD_ROWS[0]])


async def test_request_timeout_setting_applies_without_the_header(tmp_path: Path) -> None:
    catalog = faulty.catalog(tmp_path, {"slow": {"gate_value": GATE}})
    with LiveServer(make_settings(models=catalog, request_timeout_s=0.3, log_level="CRITICAL")) as live:
        net = net_of(live, "slow")
        batcher = batcher_of(live, "slow")
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            holder = asyncio.create_task(predict(client, "slow", [[GATE, 0.0, 0.0, 0.0]]))
            await wait_until(net.entered.is_set, "the gate request to reach the worker")
            queued = await predict(client, "slow", [GOOD_ROWS[0]])
            assert_problem(queued, 504)
            # a longer header does not extend the server's limit
            longer = await predict(client, "slow", [GOOD_ROWS[0]], {"X-Request-Timeout": "30"})
            assert_problem(longer, 504)
            net.gate.set()
            assert_problem(await holder, 504)  # its own deadline passed while it computed
            await wait_until(lambda: batcher.idle, "the slow model to go idle")
            assert batcher.computed_items == 1
            assert_scores(await predict(client, "slow", [GOOD_ROWS[0]]), [GOOD_ROWS[0]])


async def test_draining_answers_503_and_finishes_accepted_work(tmp_path: Path) -> None:
    catalog = faulty.catalog(tmp_path, {"slow": {"gate_value": GATE}})
    with LiveServer(make_settings(models=catalog, shutdown_grace_s=30, log_level="CRITICAL")) as live:
        net = net_of(live, "slow")
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            holder = asyncio.create_task(predict(client, "slow", [[GATE, 0.0, 0.0, 0.0]]))
            await wait_until(net.entered.is_set, "the gate request to reach the worker")
            queued = await queue_up(live, "slow", [predict(client, "slow", [row]) for row in GOOD_ROWS[:3]],
                                    rows=3)
            drain = live.on_server_loop(live.app.state.shutdown())
            await wait_until(lambda: live.service.registry.state == "draining", "the drain to begin")
            assert not drain.done()  # work is still in flight
            refused = await predict(client, "slow", [GOOD_ROWS[0]])
            assert_problem(refused, 503)
            assert int(refused.headers["retry-after"]) >= 1
            ready = await client.get("/readyz")
            assert_problem(ready, 503)
            assert int(ready.headers["retry-after"]) >= 1
            assert (await client.get("/healthz")).status_code == 200
            net.gate.set()
            assert (await holder).status_code == 200
            for response, row in zip(await asyncio.gather(*queued), GOOD_ROWS, strict=False):
                assert_scores(response, [row])
            assert await asyncio.wait_for(drain, 20) is True
