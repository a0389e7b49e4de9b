"""The Open Inference Protocol (v2) infer route on the serving path that v1 predict uses: the
same batches, queue bound (429), deadlines (504), fault isolation (500), disconnects and
draining (503), each answered with the protocol's `{"error": "..."}` body.

The models come from `tests.fixtures.faulty` (a linear classifier that blocks at a gate the
test opens, or raises on a poisoned value): the test decides what is queued while the worker
is busy, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.test_v2 import error, scores_of, tensor
from tests.conftest import LiveServer, make_settings
from tests.e2e.test_faults import GOOD_ROWS, batcher_of, net_of, occupied, predict, queue_up, wait_until
from tests.fixtures import faulty
from tests.fixtures.faulty import GATE, POISON
from tests.fixtures.probes import total

pytestmark = pytest.mark.anyio

MAX_QUEUE = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    catalog = faulty.catalog(tmp_path_factory.mktemp("faulty-v2"), {
        "slow": {"gate_value": GATE}, "poison": {"poison": POISON, "gate_value": GATE}})
    with LiveServer(make_settings(models=catalog, max_queue=MAX_QUEUE, log_level="CRITICAL")) as live:
        yield live


def infer(client: httpx.AsyncClient, model: str, rows: list[list[float]], headers: dict[str, str] | None = None,
          **request: Any) -> Any:
    body = {"inputs": [tensor("input", [len(rows), 4], "FP32", rows)], **request}
    return client.post(f"/v2/models/{model}/infer", json=body, headers=headers or {})


def assert_reference(response: httpx.Response, rows: list[list[float]]) -> None:
    np.testing.assert_allclose(scores_of(response), faulty.reference(rows), rtol=1e-6, atol=1e-7)


async def test_scores_are_the_models_softmax(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        assert_reference(await infer(client, "slow", GOOD_ROWS), GOOD_ROWS)


async def test_v2_and_v1_requests_are_computed_in_one_batch(server: LiveServer) -> None:
    net = net_of(server, "slow")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        async with occupied(server, client, "slow"):
            calls = [infer(client, "slow", GOOD_ROWS[:2]), predict(client, "slow", GOOD_ROWS[2:3]),
                     infer(client, "slow", GOOD_ROWS[3:5])]
            tasks = await queue_up(server, "slow", calls, rows=5)
            before = len(net.batch_rows)
        v2_first, v1, v2_second = await asyncio.gather(*tasks)
    assert net.batch_rows[before:] == [1, 5]  # the gate request, then all three together
    assert_reference(v2_first, GOOD_ROWS[:2])
    assert_reference(v2_second, GOOD_ROWS[3:5])
    assert v1.status_code == 200


async def test_a_full_queue_answers_429_with_retry_after(server: LiveServer) -> None:
    rows = [[float(i), 1.0, 2.0, 3.0] for i in range(MAX_QUEUE)]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        async with occupied(server, client, "slow"):
            tasks = await queue_up(server, "slow", [infer(client, "slow", [row]) for row in rows], rows=MAX_QUEUE)
            refused = await infer(client, "slow", GOOD_ROWS[:1])
            assert "MAX_QUEUE" in error(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1
        for response, row in zip(await asyncio.gather(*tasks), rows, strict=True):
            assert_reference(response, [row])


@pytest.mark.parametrize(("headers", "parameters"), [
    ({"X-Request-Timeout": "0.2"}, {}),
    ({}, {"timeout": 200_000}),  # Triton's request parameter, in microseconds
])
async def test_a_deadline_that_passes_in_the_queue_is_504(server: LiveServer, headers: dict[str, str],
                                                          parameters: dict[str, Any]) -> None:
    batcher = batcher_of(server, "slow")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        computed = batcher.computed_items
        async with occupied(server, client, "slow"):
            late = await infer(client, "slow", GOOD_ROWS[:1], headers, parameters=parameters)
            assert "deadline" in error(late, 504)
        await wait_until(lambda: batcher.idle, "the slow model to go idle")
        assert batcher.computed_items == computed + 1  # the gate request only
        generous = await infer(client, "slow", GOOD_ROWS[:1], parameters={"timeout": 30_000_000})
        assert_reference(generous, GOOD_ROWS[:1])


async def test_a_compute_fault_fails_only_its_request_with_the_protocols_body(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        async with occupied(server, client, "poison"):
            calls = [infer(client, "poison", GOOD_ROWS[:1]), infer(client, "poison", [[POISON, 0.0, 0.0, 0.0]]),
                     infer(client, "poison", GOOD_ROWS[1:2])]
            tasks = await queue_up(server, "poison", calls, rows=3)
        good, bad, other = await asyncio.gather(*tasks)
    assert "RuntimeError" in error(bad, 500) and "666" not in bad.text
    assert_reference(good, GOOD_ROWS[:1])
    assert_reference(other, GOOD_ROWS[1:2])


async def test_a_client_that_leaves_while_queued_has_its_work_dropped(server: LiveServer) -> None:
    batcher = batcher_of(server, "slow")

    async def left() -> float:
        text = (await client.get("/metrics")).text
        return total(text, "explainserve_requests_total", route="v2_infer", model="slow", status="499")

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        before = await left()
        computed = batcher.computed_items
        async with occupied(server, client, "slow"):
            leaving = httpx.AsyncClient(base_url=server.url, timeout=60)
            tasks = await queue_up(server, "slow", [infer(leaving, "slow", GOOD_ROWS[:1])], rows=1)
            tasks[0].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
            await leaving.aclose()
            for _ in range(2000):
                if await left() >= before + 1:
                    break
                await asyncio.sleep(0.01)
            assert await left() == before + 1, "the server never noticed the disconnect"
        await wait_until(lambda: batcher.idle, "the slow model to go idle")
        assert batcher.computed_items == computed + 1


async def test_draining_answers_503_on_v2_and_finishes_accepted_work(tmp_path: Path) -> None:
    catalog = faulty.catalog(tmp_path, {"slow": {"gate_value": GATE}})
    with LiveServer(make_settings(models=catalog, shutdown_grace_s=30, log_level="CRITICAL")) as live:
        net = net_of(live, "slow")
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            holder = asyncio.create_task(infer(client, "slow", [[GATE, 0.0, 0.0, 0.0]]))
            await wait_until(net.entered.is_set, "the gate request to reach the worker")
            queued = await queue_up(live, "slow", [infer(client, "slow", [row]) for row in GOOD_ROWS[:2]], rows=2)
            drain = live.on_server_loop(live.app.state.shutdown())
            await wait_until(lambda: live.service.registry.state == "draining", "the drain to begin")
            assert not drain.done()
            for response in (await infer(client, "slow", GOOD_ROWS[:1]), await client.get("/v2/health/ready"),
                             await client.get("/v2/models/slow/ready"), await client.get("/v2/models/slow")):
                assert error(response, 503)
                assert int(response.headers["retry-after"]) >= 1
            assert (await client.get("/v2/health/live")).json() == {"live": True}
            net.gate.set()
            assert_reference(await holder, [[GATE, 0.0, 0.0, 0.0]])
            for response, row in zip(await asyncio.gather(*queued), GOOD_ROWS, strict=False):
                assert_reference(response, [row])
            assert await asyncio.wait_for(drain, 20) is True
