"""Cluster mode's cost and gain on one host: the Ray Serve path against the embedded server.

    python -m bench.ray_bench                 # CPU: about 8 minutes -> bench/results/ray.md and ray.json
    python -m bench.ray_bench --device cuda   # on a GPU host (two replicas share the GPU, half each)

1. Extra latency at concurrency 1 (p50), embedded vs one Ray replica behind Serve's proxy, for a
   light request (breast-cancer predict) and a compute-bound one (shapes, integrated gradients).
2. Throughput of the compute-bound request at concurrency 8: embedded, then 1 and 2 replicas on a
   one-node Ray cluster with this host's cores (each CPU replica takes one core, so on 2 cores
   two replicas bound the ratio at 2x; the embedded server uses both cores in one process).

Not part of `make bench` (it starts a Ray cluster); not a test. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.loadgen import run_load
from bench.machine import machine_info
from bench.servers import Server, child_env, free_port
from tests.fixtures.ray_cluster import RayCluster, wait_for
from tests.fixtures.ray_service import ServiceOnRay

BREAST = [14.0, 19.0, 92.0, 650.0, 0.1, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.8, 40.0, 0.007, 0.025, 0.03,
          0.012, 0.02, 0.004, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29, 0.08]
CIRCLE = base64.b64encode((ROOT / "models/shapes/examples/circle.png").read_bytes()).decode()
LIGHT = ("/v1/models/breast-cancer/predict", json.dumps({"instances": [BREAST]}).encode())
HEAVY = ("/v1/models/shapes/explain", json.dumps({"instances": [{"b64": CIRCLE}], "method": "integrated_gradients",
                                                  "params": {"n_steps": 32}, "outputs": ["overlay"]}).encode())
OUT = ROOT / "bench" / "results" / "ray"


def measure(url: str, duration: float, repeats: int) -> dict[str, Any]:
    """Each cell `repeats` times, the best run kept (other programs share the host's cores)."""
    def once(request: tuple[str, bytes], concurrency: int, seconds: float) -> dict[str, Any]:
        result = asyncio.run(run_load(url + request[0], [request[1]], concurrency=concurrency,
                                      duration_s=seconds, max_requests=100_000))
        return {"p50_ms": result.latency_ms.get("p50"), "p95_ms": result.latency_ms.get("p95"),
                "throughput_rps": result.throughput_rps, "ok": result.ok, "errors": result.errors}

    def best(request: tuple[str, bytes], concurrency: int) -> dict[str, Any]:
        runs = [once(request, concurrency, duration) for _ in range(repeats)]
        return max(runs, key=lambda run: run["throughput_rps"]) | {"runs": runs}

    once(LIGHT, 1, 2.0)  # warm-up
    once(HEAVY, 2, 2.0)
    return {"light_c1": best(LIGHT, 1), "heavy_c1": best(HEAVY, 1), "heavy_c8": best(HEAVY, 8)}


def service_env(device: str) -> dict[str, str]:
    return {"MODELS": str(ROOT / "models" / "catalog.toml"), "DEVICE": device, "LOG_LEVEL": "WARNING"}


def run(device: str, duration: float, repeats: int) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0))
    result: dict[str, Any] = {"machine": machine_info(device), "cores_used": cores, "device": device,
                              "repeats": repeats, "duration_s": duration, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as logs:
        port = free_port()
        embedded = Server("embedded", [sys.executable, "-m", "app"],
                          {**child_env(), **service_env(device), "HOST": "127.0.0.1", "PORT": str(port)},
                          port, "/readyz", Path(logs))
        try:
            embedded.wait_ready(300)
            result["embedded"] = measure(embedded.url, duration, repeats)
        finally:
            embedded.stop()
    cluster = RayCluster(nodes=1, cpus_per_node=cores).start()
    try:
        gpus = {"RAY_REPLICA_GPUS": "0.5"} if device != "cpu" else {}
        service = ServiceOnRay(cluster, replicas=1, env={**service_env("cuda" if device != "cpu" else "cpu"),
                                                         **gpus, "RAY_REPLICA_CPUS": "1"})
        try:
            wait_for(service.ready, "one replica", timeout=600)
            result["ray_1_replica"] = measure(service.url, duration, repeats)
            service.deploy(ray_replicas=2)
            wait_for(lambda: service.running(2), "two replicas", timeout=600)
            result["ray_2_replicas"] = measure(service.url, duration, repeats)
        finally:
            service.stop()
    finally:
        cluster.stop()
    result["load_average_after"] = os.getloadavg()
    return result


def _cell(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    rows = [("embedded (one process, all cores)", result["embedded"]),
            ("Ray, 1 replica (1 core)", result["ray_1_replica"]),
            ("Ray, 2 replicas (1 core each)", result["ray_2_replicas"])]
    light_extra = result["ray_1_replica"]["light_c1"]["p50_ms"] - result["embedded"]["light_c1"]["p50_ms"]
    one, two = (result[k]["heavy_c8"]["throughput_rps"] for k in ("ray_1_replica", "ray_2_replicas"))
    scale = two / one
    lines = [
        "# Cluster mode (Ray Serve) on one host",
        "",
        f"Machine: {m['device_name']}, {result['cores_used']} cores used, device `{result['device']}`, "
        f"torch {m['torch']}, commit {m.get('git_commit', '?')}. Load average before "
        f"{result['load_average_before'][0]:.2f}, after {result['load_average_after'][0]:.2f}: other "
        "programs share this machine while it measures, so the numbers move between runs.",
        "",
        f"Ray path's extra p50 at concurrency 1 (light request): **{light_extra:+.1f} ms**. "
        f"Throughput 2 replicas / 1 replica (compute-bound, concurrency 8): **{scale:.2f}x** "
        f"(bounded by {result['cores_used']} cores: one replica per core).",
        "",
        "| server | light p50 c1 (ms) | IG p50 c1 (ms) | IG c8 (req/s) | IG p50 c8 (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, cell in rows:
        lines.append(f"| {name} | {_cell(cell['light_c1']['p50_ms'])} | {_cell(cell['heavy_c1']['p50_ms'])} | "
                     f"{_cell(cell['heavy_c8']['throughput_rps'], '.2f')} | {_cell(cell['heavy_c8']['p50_ms'])} |")
    lines += ["", "Light: `breast-cancer` predict, one row. IG: `shapes` integrated gradients, n_steps 32, "
              f"with the overlay PNG. Each cell ran {result['repeats']} times for {result['duration_s']:g} s after "
              "a warm-up, the run of highest throughput kept (every run is in the JSON); errors: "
              + json.dumps({name: cell["heavy_c8"]["errors"] for name, cell in rows}), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell, the best kept")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(args.device, args.duration, args.repeats)
    result["wall_s"] = round(time.monotonic() - started, 1)
    suffix = "" if args.device == "cpu" else f"-{args.device.replace(':', '')}"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{OUT}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(f"{OUT}{suffix}.md").write_text(render(result))
    sys.stdout.write(render(result))


if __name__ == "__main__":
    main()
