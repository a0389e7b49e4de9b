"""bench/cells.py: cells against real server processes, with either load generator, and the servers'
CPU attributed to their thread groups."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.catalogs import subset_catalog
from bench.cells import Client, run_cell
from bench.procstat import GROUPS
from bench.scenarios import SCENARIOS, make_bodies
from bench.servers import Server, free_port, server_env


@pytest.fixture(scope="module")
def naive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The naive server process on a subset catalog, as bench/run.py starts it."""
    folder = tmp_path_factory.mktemp("naive")
    catalog = subset_catalog(["breast-cancer"], folder)
    port = free_port()
    argv = [sys.executable, "-m", "bench.naive_server", "--catalog", str(catalog), "--port", str(port),
            "--device", "cpu", "--models", "breast-cancer", "--png", "default"]
    server = Server("naive", argv, server_env(), port, "/healthz", folder)
    try:
        server.wait_ready(120)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("client", [Client("wrk"), Client("raw")], ids=["wrk", "python"])
def test_a_cell_against_the_naive_server(naive: Server, client: Client) -> None:
    scenario = SCENARIOS["tabular-ig"]
    # /proc counts a thread's CPU in whole clock ticks (10 ms), rounded down: 48 requests of 2-3 ms
    # give the request threads (two, at concurrency 2) several ticks each, where 12 could leave both
    # under one tick and the group at 0.
    result = run_cell(naive, scenario, make_bodies(scenario, 4), concurrency=2, duration=30.0, max_requests=48,
                      drain=30.0, client=client)
    assert result["client"] == ("wrk" if client.kind == "wrk" else "raw")
    assert result["sent"] == result["ok"] == 48 and result["errors"] == {}
    assert not result["time_bounded"]
    assert result["rows_per_request"] == 32
    assert result["rows_per_s"] == pytest.approx(result["throughput_rps"] * 32)
    assert result["sampled"] == {}  # the naive server's answers are not sampled
    assert result["client_cpu_ms_per_request"] >= 0.0
    cpu = result["server_cpu"]
    groups = cpu["groups_ms_per_request"]
    assert list(groups) == list(GROUPS)
    assert cpu["ms_per_request"] > 0
    assert cpu["ms_per_request"] == pytest.approx(sum(groups.values()))
    # FastAPI runs the naive server's `def` route in its thread pool; it has no workers or pools.
    assert groups["request threads"] > 0
    assert groups["workers"] == groups["host work"] == 0.0
    assert cpu["cores_busy"] > 0 and cpu["wall_s"] > 0


def test_a_cell_against_our_service_sees_its_threads(tmp_path: Path) -> None:
    catalog = subset_catalog(["shapes"], tmp_path)
    port = free_port()
    env = {**server_env(), "MODELS": str(catalog), "HOST": "127.0.0.1", "PORT": str(port), "DEVICE": "cpu",
           "LOG_LEVEL": "WARNING"}
    server = Server("ours", [sys.executable, "-m", "app"], env, port, "/readyz", tmp_path)
    try:
        server.wait_ready(300)
        scenario = SCENARIOS["shapes-gradcam"]
        result = run_cell(server, scenario, make_bodies(scenario, 4), concurrency=4, duration=30.0,
                          max_requests=24, drain=30.0, client=Client("wrk"))
    finally:
        server.stop()
    assert result["ok"] == 24 and result["errors"] == {}
    assert {"queue", "compute", "render", "total"} <= set(result["sampled"])  # our timings_ms, sampled
    groups = result["server_cpu"]["groups_ms_per_request"]
    assert groups["workers"] > 0  # the device worker and the intra-op threads it started
    assert groups["event loop"] > 0
    # Decoding and rendering happen in the host-work pool, or in child processes.
    assert groups["host work"] + groups["child processes"] > 0
    assert groups["request threads"] == 0.0
