"""Host work over real HTTP: answers the same whether decoding and rendering run in worker
processes (the default) or in threads; a killed worker costs no request; the workers end with
the service; start-up objects are frozen out of the garbage collector's view."""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.main import GC_YOUNG_THRESHOLD
from tests.conftest import ROOT, LiveServer, make_settings, png_b64
from tests.fixtures.compare import assert_close

EXAMPLES = ROOT / "models" / "shapes" / "examples"


@pytest.fixture(scope="module")
def thread_server() -> Iterator[LiveServer]:
    with LiveServer(make_settings(host_mode="thread")) as server:
        yield server


def _explain(url: str, body: dict[str, Any], files: dict[str, Any] | None = None) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=120) as client:
        if files is not None:
            response = client.post("/v1/models/shapes/explain", data=body, files=files)
        else:
            response = client.post("/v1/models/shapes/explain", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    answer.pop("timings_ms")
    return answer


def test_processes_and_threads_give_the_same_answers(live: LiveServer, thread_server: LiveServer) -> None:
    from PIL import Image

    assert live.service.host.mode == "process" and thread_server.service.host.mode == "thread"
    images = [{"b64": png_b64(Image.open(EXAMPLES / "circle.png"))},
              {"b64": png_b64(Image.open(EXAMPLES / "star.webp").resize((90, 60)))}]  # a resize, a crop
    bodies = [
        {"instances": images[:1], "method": "gradcam", "outputs": ["overlay", "heatmap", "attributions"]},
        {"instances": images, "method": "integrated_gradients", "params": {"n_steps": 4},  # two: two-phase decode
         "outputs": ["overlay", "attributions"], "render": {"sign": "all", "max_size": 48}},
        {"instances": images[1:], "method": "saliency", "outputs": ["attributions"], "attributions_format": "float32"},
    ]
    for body in bodies:
        ours, theirs = _explain(live.url, body), _explain(thread_server.url, body)
        for mine, other in zip(ours["explanations"], theirs["explanations"], strict=True):
            for picture in ("overlay", "heatmap"):
                assert mine.get(picture) == other.get(picture)  # the same PNG bytes
        assert_close(ours, theirs)
    files = {"file": ("triangle.jpg", (EXAMPLES / "triangle.jpg").read_bytes(), "image/jpeg")}
    assert _explain(live.url, {"method": "gradcam"}, files) == _explain(thread_server.url, {"method": "gradcam"}, files)


def test_a_killed_worker_is_replaced_and_requests_go_on() -> None:
    with LiveServer(make_settings(host_workers=2)) as server:
        pool = server.service.host.processes
        assert pool is not None and len(pool.pids) == 2
        body = {"instances": [{"b64": png_b64(image)} for image in _images()], "method": "gradcam"}
        first = _explain(server.url, body)
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        second = _explain(server.url, body)  # answered whether or not the death was noticed yet
        assert second == first
        deadline = time.monotonic() + 60
        while (pool.restarts < 1 or len(pool.pids) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.restarts == 1 and len(pool.pids) == 2 and victim not in pool.pids
        assert _explain(server.url, body) == first
        workers = [worker.process for worker in pool._workers]
    assert all(process.poll() is not None for process in workers)  # ended with the service


def _images() -> list[Any]:
    from PIL import Image

    return [Image.open(EXAMPLES / name).convert("RGB") for name in ("circle.png", "triangle.jpg")]


def test_start_up_objects_are_frozen(live: LiveServer) -> None:
    assert gc.get_freeze_count() > 10_000  # modules, models, torch's Python objects
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD  # young collections only every 10,000 allocations



def test_a_small_request_sends_no_job_to_the_host_work_pool_but_its_own(live: LiveServer,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A trim after a request is a hop to another process: only for requests whose images held
    # over LARGE_BYTES (app/runtime/heap.py); a tabular request's rows need no hop at all.
    pool = live.service.host.processes
    assert pool is not None
    sent: list[str] = []
    run = pool.run

    async def recording(fn: Any, *args: Any) -> Any:
        sent.append(fn.__name__)
        return await run(fn, *args)

    monkeypatch.setattr(pool, "run", recording)
    with httpx.Client(base_url=live.url, timeout=120) as client:
        rows = {"instances": [[14.0] * 30], "method": "integrated_gradients", "params": {"n_steps": 8}}
        assert client.post("/v1/models/breast-cancer/explain", json=rows).status_code == 200
        assert client.post("/v1/models/breast-cancer/predict", json={"instances": [[14.0] * 30]}).status_code == 200
    assert sent == []
    from PIL import Image

    _explain(live.url, {"instances": [{"b64": png_b64(Image.open(EXAMPLES / "circle.png"))}], "method": "gradcam"})
    assert sent == ["_decode_one", "_render"]
