"""The largest requests the limits allow, while a prober asks /healthz every 20 ms: does the
service stay responsive, answer everything, and give its memory back?

    .venv/bin/python -m bench.stress            # -> bench/results/stress.md and stress.json

Our service runs as `python -m app` with its default limits over the demo catalog. The load is
`--clients` concurrent senders of the largest explain request the limits allow on `shapes` (two
30-megapixel PNGs, 64 MP in all, at MAX_REQUEST_PIXELS; overlay and heatmap at max_size 2048,
under MAX_OUTPUT_PIXELS), and a second group sending the largest tabular explain request (64 rows,
integrated gradients at the n_steps that reaches MAX_REQUEST_ROWS). Reported: the /healthz
latency percentiles during the load (the target is under 100 ms throughout), every answer's status,
and the server's resident memory before, at its peak, and after the load.
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
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import ROOT
from bench.machine import machine_info
from bench.servers import Server, child_env, free_port
from tests.api.test_limits import png_bomb

RESULTS = ROOT / "bench" / "results"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bodies() -> dict[str, dict[str, Any]]:
    image = {"b64": base64.b64encode(png_bomb(6000, 5000)).decode()}
    row = json.loads((ROOT / "models" / "breast_cancer" / "example.json").read_text())["instances"][0]
    return {
        "shapes": {"instances": [image, image], "method": "saliency", "outputs": ["overlay", "heatmap"],
                   "render": {"max_size": 2048}},
        "breast-cancer": {"instances": [row] * 64, "method": "integrated_gradients",
                          "params": {"n_steps": 16384 // 64 - 2}},
    }


async def _run(url: str, pid: int, clients: int, duration: float) -> dict[str, Any]:
    requests = bodies()
    statuses: Counter[str] = Counter()
    probes: list[float] = []
    peak = 0
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def sender(model: str) -> None:
            while not stop.is_set():
                response = await client.post(f"/v1/models/{model}/explain", json=requests[model])
                statuses[f"{model} {response.status_code}"] += 1

        async def prober() -> None:
            nonlocal peak
            async with httpx.AsyncClient(base_url=url, timeout=60) as own:
                while not stop.is_set():
                    started = time.perf_counter()
                    assert (await own.get("/healthz")).status_code == 200
                    probes.append((time.perf_counter() - started) * 1000)
                    peak = max(peak, _rss(pid))
                    await asyncio.sleep(0.02)

        before = _rss(pid)
        tasks = [asyncio.create_task(sender("shapes")) for _ in range(clients)]
        tasks += [asyncio.create_task(sender("breast-cancer")) for _ in range(clients)]
        tasks.append(asyncio.create_task(prober()))
        await asyncio.sleep(duration)
        stop.set()
        await asyncio.gather(*tasks)
    await asyncio.sleep(2)
    lat = np.asarray(probes)
    return {"clients_per_model": clients, "duration_s": duration, "statuses": dict(statuses),
            "healthz_ms": {"n": len(probes), "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                           "max": float(lat.max())},
            "rss_mib": {"before": before / 2**20, "peak": peak / 2**20, "after": _rss(pid) / 2**20}}


def render(result: dict[str, Any]) -> str:
    h, r, m = result["healthz_ms"], result["rss_mib"], result["machine"]
    lines = [
        "# Stress: the largest requests the limits allow", "",
        f"Run {result['created']} on {m['cpu_count']} CPUs ({m['cpu_model']}), load average before "
        f"{result['loadavg'][0]:.1f}; `python -m bench.stress` (bench/stress.py says what is sent).", "",
        f"- {result['clients_per_model']} clients per model for {result['duration_s']:.0f} s: answers "
        + ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items())),
        f"- /healthz during the load ({h['n']} probes): p50 {h['p50']:.1f} ms, p99 {h['p99']:.1f} ms, "
        f"max {h['max']:.1f} ms (target: under 100 ms throughout: {'met' if h['max'] < 100 else 'NOT met'})",
        f"- server resident memory: {r['before']:.0f} MiB before, {r['peak']:.0f} MiB at the peak, "
        f"{r['after']:.0f} MiB after ({(r['after'] / r['before'] - 1) * 100:+.0f}%; target within 20%)", "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args(argv)
    port = free_port()
    env = {**child_env(), "MODELS": str(ROOT / "models" / "catalog.toml"), "HOST": "127.0.0.1", "PORT": str(port),
           "DEVICE": "cpu", "LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as logs:
        server = Server("ours", [sys.executable, "-m", "app"], env, port, "/readyz", Path(logs))
        try:
            server.wait_ready(300)
            loadavg = os.getloadavg()
            result = asyncio.run(_run(server.url, server.proc.pid, args.clients, args.duration))
        finally:
            server.stop()
    result.update(machine=machine_info("cpu"), loadavg=loadavg, created=time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                          time.gmtime()))
    (RESULTS / "stress.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "stress.md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
