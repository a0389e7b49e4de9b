"""Overload on loopback: 64 concurrent clients against one CPU worker with a short queue and a
short deadline, mixing valid and invalid predict / explain requests on breast-cancer.

Only 200, the expected 4xx, 429, 503 and 504 may occur; 429 and 503 carry Retry-After; every 200
equals the answer the same request got when served alone; and the process's resident memory
(the server runs in it) grows by less than 10% over 2,000 requests after a warm-up.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, make_settings
from tests.fixtures.probes import rss_bytes

pytestmark = pytest.mark.anyio

CLIENTS = 64
WARM_UP = 200
MEASURED = 2000
MAX_QUEUE = 48  # work rows: about ten IG explains with n_steps=4
FEATURES = 30
BASE = [14.0, 19.0, 92.0, 650.0, 0.1, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.8, 40.0, 0.007, 0.025, 0.03,
        0.012, 0.02, 0.004, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29, 0.08]
POOL = [[v * (0.6 + 0.1 * i) for v in BASE] for i in range(8)]
JSON = {"content-type": "application/json"}


@dataclass(frozen=True, eq=False)  # hashed by identity: answers are keyed by the call object
class Call:
    kind: str
    path: str
    body: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    expect: int = 200
    """200 for valid requests (which may also meet 429 / 503 / 504), else the one 4xx they get."""


def valid_calls(names: list[str]) -> list[Call]:
    calls = []
    for i, row in enumerate(POOL):
        calls.append(Call("predict", "/v1/models/breast-cancer/predict", {"instances": [row]}))
        calls.append(Call("predict2", "/predict", {"model": "breast-cancer", "instances": [row, POOL[-1 - i]],
                                                   "top_k": 1}))
        calls.append(Call("explain", "/v1/models/breast-cancer/explain",
                          {"instances": [row], "params": {"n_steps": 4}}))
        named = dict(zip(names, row, strict=True))
        calls.append(Call("explain-label", "/v1/models/breast-cancer:explain",
                          {"instances": [named], "target": "benign", "params": {"n_steps": 4},
                           "outputs": ["summary"]}))
    return calls


def invalid_calls(names: list[str]) -> list[Call]:
    row = POOL[0]
    missing = dict(zip(names[1:], row[1:], strict=True))
    nan_row = ("[" + ", ".join(["1.0"] * (FEATURES - 1) + ["NaN"]) + "]").encode()
    return [
        Call("missing-feature", "/v1/models/breast-cancer/predict", {"instances": [missing]}, expect=422),
        Call("nan", "/v1/models/breast-cancer/explain", content=b'{"instances": [' + nan_row + b"]}",
             headers=JSON, expect=422),
        Call("malformed", "/v1/models/breast-cancer/predict", content=b'{"instances": [[1, 2', headers=JSON,
             expect=400),
        Call("unknown-model", "/v1/models/nope/explain", {"instances": [row]}, expect=404),
        Call("unknown-method", "/v1/models/breast-cancer/explain", {"instances": [row], "method": "magic"},
             expect=422),
        Call("too-many", "/v1/models/breast-cancer/predict", {"instances": [row] * 65}, expect=413),
        Call("text", "/v1/models/breast-cancer/predict", content=b"hello", headers={"content-type": "text/plain"},
             expect=415),
        Call("bad-timeout", "/v1/models/breast-cancer/predict", {"instances": [row]},
             headers={"X-Request-Timeout": "soon"}, expect=400),
    ]


def schedule(valid: list[Call], invalid: list[Call], n: int) -> Iterator[Call]:
    """Deterministic mix: 7 valid requests for every 3 invalid ones."""
    for i in range(n):
        if i % 10 < 7:
            yield valid[(i * 7 + i // 10) % len(valid)]
        else:
            yield invalid[(i * 3 + i // 10) % len(invalid)]


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "timings_ms"}


def same(got: Any, want: Any, where: str = "") -> None:
    """Equal, floats to 1e-5 relative (batched matrix products may differ in the last bits)."""
    if isinstance(want, float) or isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-6), f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys differ"
        for key in want:
            same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


async def send(client: httpx.AsyncClient, call: Call) -> httpx.Response:
    if call.content is not None:
        return await client.post(call.path, content=call.content, headers=call.headers or {})
    return await client.post(call.path, json=call.body, headers=call.headers or {})


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.checked_200 = 0

    def check(self, call: Call, response: httpx.Response, alone: dict[Call, dict[str, Any]]) -> None:
        status = response.status_code
        self.statuses[(call.kind, status)] += 1
        assert response.headers.get("x-request-id")
        if status == 200:
            assert call.expect == 200, (call.kind, response.text)
            same(comparable(response.json()), alone[call], call.kind)
            self.checked_200 += 1
            return
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        if call.expect == 200:
            assert status in (429, 503, 504), (call.kind, status, response.text)
        else:
            assert status == call.expect, (call.kind, status, response.text)
        if status in (429, 503):
            assert int(response.headers["retry-after"]) >= 1


async def hammer(client: httpx.AsyncClient, calls: list[Call], alone: dict[Call, dict[str, Any]],
                 tally: Tally) -> None:
    queue = iter(calls)

    async def worker() -> None:
        for call in queue:  # the iterator is shared: each call is sent once
            tally.check(call, await send(client, call), alone)

    await asyncio.gather(*(worker() for _ in range(CLIENTS)))


@pytest.fixture(scope="module")
def loaded() -> Iterator[LiveServer]:
    settings = make_settings(max_queue=MAX_QUEUE, request_timeout_s=1.0, max_instances=64,
                             max_batch_delay_ms=2.0, log_level="CRITICAL")
    with LiveServer(settings) as server:
        yield server


async def test_overload_mixing_valid_and_invalid_requests(loaded: LiveServer) -> None:
    names = [f["name"] for f in loaded.service.registry.models["breast-cancer"].info["features"]]
    valid, invalid = valid_calls(names), invalid_calls(names)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=loaded.url, timeout=60, limits=limits) as client:
        alone: dict[Call, dict[str, Any]] = {}
        started = time.perf_counter()
        for call in valid:  # one at a time: each request served alone
            response = await send(client, call)
            assert response.status_code == 200, response.text
            alone[call] = comparable(response.json())
        serial_rate = len(valid) / (time.perf_counter() - started)

        warm = Tally()
        await hammer(client, list(schedule(valid, invalid, WARM_UP)), alone, warm)
        gc.collect()
        rss_before = rss_bytes()

        tally = Tally()
        started = time.perf_counter()
        await hammer(client, list(schedule(valid, invalid, MEASURED)), alone, tally)
        elapsed = time.perf_counter() - started
        gc.collect()
        rss_after = rss_bytes()

    statuses = Counter(status for (_, status), n in tally.statuses.items() for _ in range(n))
    assert sum(statuses.values()) == MEASURED
    assert set(statuses) <= {200, 400, 404, 413, 415, 422, 429, 503, 504}, statuses
    assert statuses[429] > 0, f"the service was never overloaded: {statuses}"
    assert tally.checked_200 > MEASURED // 10, statuses
    growth = (rss_after - rss_before) / rss_before
    summary = (f"{MEASURED} requests in {elapsed:.1f} s ({MEASURED / elapsed:.0f}/s, alone {serial_rate:.0f}/s), "
               f"statuses {dict(sorted(statuses.items()))}, RSS {rss_before / 2**20:.0f} -> "
               f"{rss_after / 2**20:.0f} MiB ({growth:+.1%})")
    print(summary)
    assert growth < 0.10, summary
    # the service is healthy afterwards: nothing queued, answers as before
    batcher = loaded.service.registry.models["breast-cancer"].batcher
    assert batcher.queued_rows == 0
    async with httpx.AsyncClient(base_url=loaded.url, timeout=60) as client:
        for call in valid[:4]:
            response = await send(client, call)
            assert response.status_code == 200
            same(comparable(response.json()), alone[call], call.kind)
