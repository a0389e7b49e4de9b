"""The benchmark matrix: our service and the naive server side by side, plus the roofline.

For each scenario (bench/scenarios.py) and concurrency, the same load generator (wrk by default,
bench/wrk.py) runs against our service (`python -m app`) and against the naive server (`python -m
bench.naive_server`), one right after the other (the order alternates per cell, so slow drift in
background load does not favour either), with each server's CPU sampled per thread group around
the cell (bench/procstat.py). Both servers are up for the whole run. Results go to `<out>.json`
and `<out>.md` (bench/report.py); see bench/README.md for every number.

    python -m bench.run --device cpu                       # = make bench
    python -m bench.run --device cpu --scenarios tabular-ig --concurrency 1,64 --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.answers import compare_outputs
from bench.catalogs import subset_catalog
from bench.cells import Client, run_cell, run_roofline
from bench.common import RESULTS, log, ratio
from bench.machine import machine_info, service_settings
from bench.report import describe_client, render_markdown
from bench.scenarios import SCENARIOS, Scenario, make_bodies
from bench.servers import Server, start_servers
from bench.targets import evaluate_targets
from bench.wrk import client_cpu, wrk_path

__all__ = ["main", "merge_results", "run", "slug", "write_results"]


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _client(args: argparse.Namespace) -> Client:
    if args.loadgen == "wrk":
        wrk_path()  # fails now, with the remedy, rather than after the roofline
        return Client("wrk", client_cpu(args.pin_client))
    return Client(args.client)


def _scenario_cells(scenario: Scenario, ours: Server, naive: Server, args: argparse.Namespace, client: Client,
                    device_type: str, duration: float, roof: dict[str, Any], flip: bool) -> list[dict[str, Any]]:
    bodies = make_bodies(scenario)
    explicit = [int(c) for c in args.concurrency.split(",") if c] if args.concurrency else None
    concs = explicit or (scenario.cpu_concurrency if device_type == "cpu" else scenario.gpu_concurrency)
    cells = []
    for conc in concs:
        cell_duration = duration * (scenario.cpu_duration_scale if device_type == "cpu" else 1.0)
        max_requests = args.requests
        if device_type == "cpu" and scenario.cpu_max_requests:
            max_requests = min(max_requests, max(scenario.cpu_max_requests, 2 * conc))
        cell: dict[str, Any] = {"concurrency": conc, "loadavg": list(os.getloadavg())}
        order = [naive, ours] if flip else [ours, naive]
        flip = not flip
        for server in order:
            log(f"{scenario.name} c={conc} {server.name}")
            res = run_cell(server, scenario, bodies, conc, cell_duration, max_requests, args.drain, client)
            cell[server.name] = res
            log(f"  {res['throughput_rps']:.2f} req/s, p50 {res['latency_ms'].get('p50', float('nan')):.1f} ms, "
                f"errors {res['errors'] or 0}, sent {res['sent']}, "
                f"server CPU {res['server_cpu']['ms_per_request']:.2f} ms/req")
        o, n = cell["ours"], cell["naive"]
        cell["ratio"] = ratio(o["throughput_rps"], n["throughput_rps"])
        if o["latency_ms"] and n["latency_ms"]:
            cell["p50_ratio"] = ratio(o["latency_ms"]["p50"], n["latency_ms"]["p50"])
        cell["efficiency"] = ratio(o["rows_per_s"], roof.get("rows_per_s", 0.0)) if roof else None
        cell["naive_efficiency"] = ratio(n["rows_per_s"], roof.get("rows_per_s", 0.0)) if roof else None
        cells.append(cell)
    return cells


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = _device(args.device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    names = [s for s in args.scenarios.split(",") if s] if args.scenarios else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    scenarios = [SCENARIOS[n] for n in names]
    client = _client(args)
    duration = args.duration or (8.0 if device_type == "cpu" else 15.0)
    service_env = dict(kv.split("=", 1) for kv in args.service_env)
    random_weights = [m for m in args.random_weights.split(",") if m]
    started = time.perf_counter()
    result: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "note": args.note,
        "machine": machine_info(device), "service_settings": service_settings(service_env),
        "naive_mode": ("serial (async def)" if args.naive_serial else "threads (def, FastAPI thread pool)")
        + ("; PNG with our encoder settings" if args.naive_png == "ours" else "; PNG with Pillow's defaults")
        + ("; models in our service's memory format" if args.naive_model == "ours"
           else "; models contiguous, as a tutorial loads them"),
        "load_generator": client.as_dict(), "random_weights": random_weights,
        "cell_duration_s": duration, "loadavg_start": list(os.getloadavg()),
        "roofline": {}, "scenarios": {},
    }
    log(f"load generator: {describe_client(client.as_dict())}")
    models = sorted({s.model for s in scenarios})
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        logdir = Path(tmp)
        catalog = subset_catalog(models, logdir, random_weights)
        for scenario in [] if args.no_roofline else scenarios:
            key = f"{scenario.model}/{scenario.roofline_mode}"
            if key not in result["roofline"]:
                log(f"roofline {key}")
                result["roofline"][key] = run_roofline(scenario, catalog, device, 15.0)
                log(f"  {result['roofline'][key].get('rows_per_s', 0):,.0f} rows/s at batch "
                    f"{result['roofline'][key].get('best_batch')}")
        log(f"starting servers on {device} ({', '.join(models)})")
        ours, naive = start_servers(device, catalog, models, service_env, args.naive_serial, args.naive_png,
                                    logdir, args.naive_model)
        try:
            flip = False
            for scenario in scenarios:
                log(f"{scenario.name}: checking both answer the same")
                match = compare_outputs(scenario, ours, naive, make_bodies(scenario)[0])
                roof = result["roofline"].get(f"{scenario.model}/{scenario.roofline_mode}", {})
                cells = _scenario_cells(scenario, ours, naive, args, client, device_type, duration, roof, flip)
                flip ^= len(cells) % 2 == 1
                result["scenarios"][scenario.name] = {
                    "model": scenario.model, "method": scenario.method, "params": scenario.params,
                    "rows_per_request": scenario.rows_per_instance, "image_size": scenario.image_size,
                    "outputs_match": match, "cells": cells,
                    "note": scenario.skipped.get(device_type, "") if not args.concurrency else ""}
        finally:
            ours.stop()
            naive.stop()
    result["targets"] = evaluate_targets(device_type, result["scenarios"])
    result["loadavg_end"] = list(os.getloadavg())
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    return result


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new`'s scenarios and rooflines over `old`'s (for runs split into several commands)."""
    merged = dict(new)
    merged["roofline"] = {**old.get("roofline", {}), **new["roofline"]}
    merged["scenarios"] = {**old.get("scenarios", {}), **new["scenarios"]}
    merged["loadavg_start"] = old.get("loadavg_start", new["loadavg_start"])
    merged["total_seconds"] = round(old.get("total_seconds", 0.0) + new["total_seconds"], 1)
    merged["merged_runs"] = old.get("merged_runs", [old.get("created")]) + [new["created"]]
    device_type = "cuda" if str(new["machine"]["device"]).startswith("cuda") else "cpu"
    merged["targets"] = evaluate_targets(device_type, merged["scenarios"])
    return merged


def write_results(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(render_markdown(result), encoding="utf-8")


def slug(text: str) -> str:
    out = "".join(ch.lower() if ch.isalnum() else "-" for ch in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "gpu"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="benchmark our service against the naive server and the roofline")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--scenarios", default="", help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    p.add_argument("--concurrency", default="", help="comma-separated levels for every scenario "
                   "(default: each scenario's own, on CPU and on CUDA; see bench/scenarios.py)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds per cell (default 8 CPU, 15 CUDA)")
    p.add_argument("--requests", type=int, default=20000, help="most requests per cell")
    p.add_argument("--drain", type=float, default=60.0, help="most seconds to wait for in-flight requests")
    p.add_argument("--out", type=Path, default=None, help="results path without suffix "
                   "(default bench/results/cpu, or bench/results/<gpu name> on CUDA)")
    p.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for our service (e.g. MAX_BATCH_DELAY_MS=2)")
    p.add_argument("--loadgen", choices=["wrk", "python"], default="wrk",
                   help="closed-loop load generator: wrk (C, bench/wrk.py) or the Python one (bench/loadgen.py)")
    p.add_argument("--pin-client", default="auto", metavar="auto|none|CPU",
                   help="pin wrk to a CPU (auto: the last one, on hosts with at least 4)")
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="with --loadgen python: raw asyncio HTTP/1.1 or httpx")
    p.add_argument("--naive-png", choices=["default", "ours"], default="default",
                   help="naive PNG encoding: Pillow's defaults (default) or our settings (identical bytes)")
    p.add_argument("--naive-serial", action="store_true", help="naive endpoint as async def (one at a time)")
    p.add_argument("--naive-model", choices=["tutorial", "ours"], default="tutorial",
                   help="the naive server's models: contiguous as a tutorial loads them (default), or in our "
                   "service's memory format (channels-last for a CPU convolutional net)")
    p.add_argument("--random-weights", default="", metavar="MODEL,...",
                   help="serve these state_dict models with a seeded random initialisation of their builder "
                   "(when their weights file is absent or does not fit; same speed)")
    p.add_argument("--no-roofline", action="store_true")
    p.add_argument("--merge", action="store_true",
                   help="merge these scenarios into an existing results file instead of replacing it")
    p.add_argument("--note", default="", help="free text recorded with the results")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    out = args.out
    if out is None:
        name = "cpu" if result["machine"]["device"] == "cpu" else slug(result["machine"]["device_name"])
        out = RESULTS / name
    if args.merge and out.with_suffix(".json").is_file():
        result = merge_results(json.loads(out.with_suffix(".json").read_text(encoding="utf-8")), result)
    write_results(result, out)
    log(f"wrote {out.with_suffix('.md')} and .json in {result['total_seconds']} s")
    sys.stdout.write(render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
