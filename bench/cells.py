"""One benchmark cell against one server: warm-up, the load (wrk or the Python client), and the
server's CPU over the cell by thread group (bench/procstat.py); plus the roofline probe's process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procstat
from bench.common import ROOT, log
from bench.loadgen import LoadResult, run_load
from bench.scenarios import Scenario
from bench.servers import Server, child_env
from bench.wrk import run_wrk

__all__ = ["Client", "measure", "run_cell", "run_roofline"]


@dataclass(frozen=True)
class Client:
    """The load generator of the closed-loop cells: "wrk" (bench/wrk.py, the default) or the
    Python client of bench/loadgen.py ("raw" or "httpx")."""

    kind: str = "wrk"
    pin_cpu: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pin_cpu": self.pin_cpu}


def _per_request(seconds: float, answered: int) -> float:
    return seconds * 1000.0 / answered


def cpu_report(used: dict[str, Any], answered: int) -> dict[str, Any]:
    """procstat.usage() as ms of CPU per answered request, by group and by child process name."""
    n = max(answered, 1)
    return {"ms_per_request": _per_request(used["total_s"], n),
            "groups_ms_per_request": {g: _per_request(s, n) for g, s in used["groups_s"].items()},
            "children_ms_per_request": {c: _per_request(s, n) for c, s in sorted(used["children_s"].items())},
            "cores_busy": used["cores_busy"], "wall_s": used["wall_s"]}


def measure(server: Server, url: str, bodies: Sequence[bytes], *, concurrency: int, duration: float,
            max_requests: int, drain: float, client: Client, rows_per_request: float = 1.0,
            headers: dict[str, str] | None = None, sample_key: str | None = None) -> dict[str, Any]:
    """Warm up (a few requests from the Python client), then one closed-loop cell, with the
    server's CPU sampled around it. Returns the LoadResult's fields plus `server_cpu` and
    `client_cpu_ms_per_request`."""
    warm = min(concurrency, 4)
    asyncio.run(run_load(url, bodies, concurrency=warm, max_requests=warm, duration_s=duration, drain_s=drain,
                         rows_per_request=rows_per_request, headers=headers))
    before = server.sample()
    result: LoadResult
    if client.kind == "wrk":
        result = run_wrk(url, bodies, concurrency=concurrency, duration_s=duration, max_requests=max_requests,
                         drain_s=drain, rows_per_request=rows_per_request, headers=headers,
                         sample_key=sample_key, pin_cpu=client.pin_cpu)
    else:
        result = asyncio.run(run_load(url, bodies, concurrency=concurrency, max_requests=max_requests,
                                      duration_s=duration, drain_s=drain, rows_per_request=rows_per_request,
                                      headers=headers, sample_key=sample_key, client=client.kind))
    after = server.sample()
    answered = max(result.ok + sum(result.errors.values()), 1)
    out = result.to_dict()
    out["client_cpu_ms_per_request"] = _per_request(result.client_cpu_s or 0.0, answered)
    out["server_cpu"] = cpu_report(procstat.usage(before, after, server.proc.pid), answered)
    return out


def run_cell(server: Server, scenario: Scenario, bodies: list[bytes], concurrency: int, duration: float,
             max_requests: int, drain: float, client: Client) -> dict[str, Any]:
    """A matrix cell: the scenario's explain requests to one server."""
    return measure(server, f"{server.url}/v1/models/{scenario.model}/explain", bodies, concurrency=concurrency,
                   duration=duration, max_requests=max_requests, drain=drain, client=client,
                   rows_per_request=scenario.rows_per_instance,
                   sample_key="timings_ms" if server.name == "ours" else None)


def run_roofline(scenario: Scenario, catalog: Path, device: str, max_seconds: float) -> dict[str, Any]:
    """Best of torch's default threads and (on CPU) a single thread: the ceiling either way."""
    tries = [1, 0] if device == "cpu" else [0]
    best: dict[str, Any] = {}
    runs = []
    for threads in tries:
        argv = [sys.executable, "-m", "bench.roofline", "--catalog", str(catalog), "--model", scenario.model,
                "--mode", scenario.roofline_mode, "--device", device, "--max-seconds", str(max_seconds),
                "--seconds-per-size", "0.6" if scenario.image_size is None else "1.0",
                "--threads", str(threads)]
        try:
            proc = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                                  timeout=max_seconds * 2 + 90)
        except subprocess.TimeoutExpired:
            log(f"roofline {scenario.name} (threads {threads}) ran out of time")
            continue
        if proc.returncode != 0:
            log(f"roofline {scenario.name} (threads {threads}) failed:\n{proc.stderr[-2000:]}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(result)
        if not best or result["rows_per_s"] > best["rows_per_s"]:
            best = result
    if best:
        best = {**best, "tried_threads": [r["threads"] for r in runs],
                "rows_per_s_by_threads": {str(r["threads"]): r["rows_per_s"] for r in runs}}
    return best
