"""The largest requests the limits allow: the service stays alive and answers everything, and its
memory goes back to what it was once the burst is over (the server runs in this process)."""

from __future__ import annotations

import asyncio
import base64
import gc

import httpx
import pytest

from tests.api.test_limits import png_bomb
from tests.conftest import LiveServer
from tests.fixtures.probes import rss_bytes

pytestmark = pytest.mark.anyio


async def test_a_burst_of_the_largest_allowed_requests_leaves_no_memory_behind(live: LiveServer) -> None:
    image = {"b64": base64.b64encode(png_bomb(6000, 5000)).decode()}  # 30 MP: two fill MAX_REQUEST_PIXELS
    largest = {"instances": [image, image], "method": "saliency", "outputs": ["overlay", "heatmap"],
               "render": {"max_size": 2048}}  # 2 x 2 x 2048 x 1707 rendered pixels, under MAX_OUTPUT_PIXELS
    async with httpx.AsyncClient(base_url=live.url, timeout=600) as client:
        warm = await client.post("/v1/models/shapes/explain", json=largest)
        assert warm.status_code == 200, warm.text
        del warm
        gc.collect()
        before = rss_bytes()
        probes: list[int] = []
        done = asyncio.Event()

        async def probe() -> None:  # the service stays alive throughout
            while not done.is_set():
                probes.append((await client.get("/healthz")).status_code)
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probe())
        answers = await asyncio.gather(*(client.post("/v1/models/shapes/explain", json=largest) for _ in range(6)))
        done.set()
        await prober
    assert [a.status_code for a in answers] == [200] * 6  # nothing lost
    assert all(len(a.json()["explanations"]) == 2 for a in answers)
    assert probes and set(probes) == {200}
    del answers
    gc.collect()
    after = rss_bytes()
    assert after < before * 1.2, f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
