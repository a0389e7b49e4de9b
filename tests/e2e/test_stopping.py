"""A 504 means the work stopped: running work checks, between chunks, whether anybody still waits
for it (deadline, client gone) and frees its worker at once; and large sampling methods run in
chunks, like integrated gradients.

The model sleeps 50 ms in every forward (`tests.fixtures.faulty`) and chunks hold 4 rows, so an
integrated-gradients request of 1,000 steps is 250 forwards: 12.5 s of compute however fast the
machine, against a deadline of a fraction of that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer, make_settings
from tests.fixtures import faulty
from tests.fixtures.faulty import Poisonable
from tests.fixtures.probes import total, wait_until

pytestmark = pytest.mark.anyio

ROW = [[1.0, -2.0, 0.5, 3.0]]
LONG = {"instances": ROW, "method": "integrated_gradients", "params": {"n_steps": 1000}}
FORWARDS_IF_NOT_STOPPED = 1 + 1002 // 4  # the prediction, then the integral's steps 4 rows at a time


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    catalog = faulty.catalog(tmp_path_factory.mktemp("stopping"), {"slow": {"sleep_s": 0.05}, "plain": {}})
    with LiveServer(make_settings(models=catalog, max_batch_rows=4, log_level="CRITICAL")) as live:
        yield live


def net_of(server: LiveServer, model: str) -> Poisonable:
    net = server.service.registry.models[model].primary.module.net
    assert isinstance(net, Poisonable)
    return net


async def test_a_deadline_stops_the_running_work(server: LiveServer) -> None:
    net, batcher = net_of(server, "slow"), server.service.registry.models["slow"].batcher
    before = len(net.batch_rows)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        late = await client.post("/v1/models/slow/explain", json=LONG, headers={"X-Request-Timeout": "0.5"})
        assert late.status_code == 504, late.text
        await wait_until(lambda: batcher.idle, "the worker to be free")
        ran = len(net.batch_rows) - before
        assert 0 < ran < FORWARDS_IF_NOT_STOPPED // 2, ran  # it started, and stopped long before the end
        # the worker takes the next request at once
        ok = await client.post("/v1/models/slow/predict", json={"instances": ROW})
        assert ok.status_code == 200


async def test_a_client_that_goes_away_stops_the_running_work(server: LiveServer) -> None:
    net, batcher = net_of(server, "slow"), server.service.registry.models["slow"].batcher
    before = len(net.batch_rows)
    closed_before = _closed(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        request = asyncio.create_task(client.post("/v1/models/slow/explain", json=LONG))
        await wait_until(lambda: len(net.batch_rows) > before + 2, "the computation to start")
        request.cancel()  # the client closes its connection
        with pytest.raises(asyncio.CancelledError):
            await request
    await wait_until(lambda: batcher.idle, "the worker to be free")
    assert len(net.batch_rows) - before < FORWARDS_IF_NOT_STOPPED // 2
    await wait_until(lambda: _closed(server) == closed_before + 1, "the request to be counted as 499")


def _closed(server: LiveServer) -> float:
    """Explain requests of the slow model whose client went away (499, nginx's code)."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return total(text, "explainserve_requests_total", route="explain", model="slow", status="499")


async def test_work_others_still_wait_for_goes_on(server: LiveServer) -> None:
    """One client of a shared batch leaving does not stop the batch for the others."""
    batcher = server.service.registry.models["plain"].batcher
    short = {"instances": ROW, "method": "integrated_gradients", "params": {"n_steps": 64}}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        kept = asyncio.create_task(client.post("/v1/models/plain/explain", json=short))
        dropped = asyncio.create_task(client.post("/v1/models/plain/explain", json=short,
                                                  headers={"X-Request-Timeout": "0.000001"}))
        assert (await dropped).status_code == 504
        assert (await kept).status_code == 200
    await wait_until(lambda: batcher.idle, "the worker to be free")


async def test_gradient_shap_samples_run_in_chunks(server: LiveServer) -> None:
    """1,024 samples used to go through the model in one forward (+2.1 GB per image on a CNN)."""
    net = net_of(server, "plain")
    before = len(net.batch_rows)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        response = await client.post("/v1/models/plain/explain", json={
            "instances": ROW, "method": "gradient_shap", "params": {"n_samples": 64, "stdevs": 0.1}})
    assert response.status_code == 200, response.text
    forwards = net.batch_rows[before:]
    assert max(forwards) <= 4 and sum(forwards) >= 64  # chunks of MAX_BATCH_ROWS rows at most
    explanation = response.json()["explanations"][0]
    assert all(isinstance(a["attribution"], float) for a in explanation["attributions"])
