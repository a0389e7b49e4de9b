"""The benchmark matrix: our service and the naive server side by side, plus the roofline.

For each scenario (model, method, parameters) and concurrency, the same load generator runs
against our service (`python -m app`, env MODELS=bench/catalog.toml) and against the naive
server (`python -m bench.naive_server`), one right after the other (the order alternates per
cell, so slow drift in background load does not favour either). Both servers are up for the
whole run. Results go to `<out>.json` and `<out>.md`; see bench/README.md for every number.

    python -m bench.run --device cpu                       # = make bench
    python -m bench.run --device cpu --scenarios tabular-ig --concurrency 1,64 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.loadgen import LoadResult, run_load

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CATALOG = BENCH / "catalog.toml"


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    method: str
    params: dict[str, Any]
    rows_per_instance: int
    """Attribution rows (fwd+bwd rows of useful work) per instance: n_steps for IG, 1 for GradCAM."""
    roofline_mode: str
    image_size: tuple[int, int] | None = None
    """(width, height) of the submitted images; None for tabular."""
    cpu_concurrency: tuple[int, ...] = (1, 16, 64)
    gpu_concurrency: tuple[int, ...] = (1, 16, 64, 128, 256)
    cpu_duration_scale: float = 1.0
    cpu_max_requests: int | None = None
    note: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    """device type -> why some default concurrencies are not run there."""


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("tabular-ig", "breast-cancer", "integrated_gradients", {"n_steps": 32}, 32, "input"),
    Scenario("shapes-gradcam", "shapes", "gradcam", {}, 1, "layer", image_size=(128, 128)),
    Scenario("resnet50-gradcam", "resnet50", "gradcam", {}, 1, "layer", image_size=(224, 224),
             cpu_duration_scale=1.0, cpu_max_requests=160),
    Scenario("resnet50-ig", "resnet50", "integrated_gradients", {"n_steps": 32}, 32, "input",
             image_size=(224, 224), cpu_concurrency=(1,), cpu_duration_scale=1.5, cpu_max_requests=4,
             skipped={"cpu": "concurrency 16 and 64 are not run on CPU: one request is 32 resnet50 "
                             "fwd+bwd rows (seconds each on 2 cores), so a batch of 16 would take minutes "
                             "and tens of GB; time-bounded to a few requests at concurrency 1"}),
)}

TARGETS_DOC = {
    "cpu": [
        ("tabular-ig", 64, "ratio", 5.0, "CPU, 64 concurrent: tabular IG >= 5x naive"),
        ("shapes-gradcam", 64, "ratio", 2.0, "CPU, 64 concurrent: shapes GradCAM >= 2x naive"),
        ("*", 1, "p50_ratio", 1.15, "CPU, concurrency 1: our p50 <= 1.15x naive p50"),
    ],
    "cuda": [
        ("resnet50-ig", 0, "efficiency", 0.8, "GPU: resnet50 IG n_steps 32 >= 80% of the roofline"),
        ("shapes-gradcam", 64, "ratio", 10.0, "GPU, 64 concurrent: GradCAM >= 10x naive"),
        ("resnet50-gradcam", 64, "ratio", 10.0, "GPU, 64 concurrent: GradCAM >= 10x naive"),
        ("*", 64, "tail_ratio", 4.0, "GPU: our p99 at 64 concurrent < 4x our p50 at concurrency 1"),
    ],
}


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- request bodies

def _png_b64(img: Any) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def make_bodies(scenario: Scenario, count: int = 8) -> list[bytes]:
    """Distinct, deterministic request bodies (one instance each) for a scenario."""
    rng = np.random.default_rng(1234)
    instances: list[Any] = []
    if scenario.image_size is None:
        import tomllib

        catalog = tomllib.loads(CATALOG.read_text(encoding="utf-8"))
        entry = next(m for m in catalog["models"] if m["name"] == scenario.model)
        mean = np.array(entry["tabular"]["mean"])
        std = np.array(entry["tabular"]["std"])
        for _ in range(count):
            row = np.maximum(mean + 0.7 * std * rng.standard_normal(mean.size), 0.0)
            instances.append({name: round(float(v), 6) for name, v in zip(entry["features"], row, strict=True)})
    else:
        from models.shapes import draw_sample

        width, height = scenario.image_size
        instances = [{"b64": _png_b64(draw_sample(rng, width, height).image)} for _ in range(count)]
    bodies = []
    for instance in instances:
        body = {"instances": [instance], "method": scenario.method, "params": scenario.params}
        bodies.append(json.dumps(body).encode())
    return bodies


# --------------------------------------------------------------------------- servers

def _random_weights(entry: dict[str, Any], folder: Path) -> Path:
    """A seeded random initialisation of an entry's builder or torchvision architecture, saved as
    safetensors: both servers (separate processes) then serve the very same function."""
    import importlib

    import torch
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if entry["format"] == "torchvision":
            import torchvision

            net = torchvision.models.get_model(entry["architecture"], weights=None,
                                               **entry.get("builder_args", {}))
        else:
            module, _, func = entry["builder"].partition(":")
            net = getattr(importlib.import_module(module), func)(**entry.get("builder_args", {}))
    path = folder / f"{entry['name']}-random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def subset_catalog(models: Sequence[str], folder: Path, random_weights: Sequence[str] = ()) -> Path:
    """`bench/catalog.toml` with only `models`, paths made absolute, written into `folder`.

    Each server loads only what the run needs (faster start, and a model under repair
    elsewhere in the catalog does not stop the run). Models in `random_weights`, and torchvision
    entries without weights, get a seeded random initialisation written to `folder` (same speed,
    meaningless answers; the same function in both servers)."""
    import tomllib

    import tomli_w

    data = tomllib.loads(CATALOG.read_text(encoding="utf-8"))
    chosen: list[dict[str, Any]] = []
    for entry in data["models"]:
        if entry["name"] not in models:
            continue
        entry = dict(entry)
        if "weights" not in entry and entry["format"] == "torchvision" or (
                "weights" in entry and entry["name"] in random_weights):
            # Random init drawn in each server would differ: write one seeded init for both.
            entry["weights"] = str(_random_weights(entry, folder))
        elif "weights" in entry:
            entry["weights"] = str((CATALOG.parent / entry["weights"]).resolve())
        if "labels_file" in entry:
            entry["labels_file"] = str((CATALOG.parent / entry["labels_file"]).resolve())
        chosen.append(entry)
    path = folder / "catalog.toml"
    path.write_text(tomli_w.dumps({"models": chosen} if chosen else {}), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str,
                 logdir: Path):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.logfile = logdir / f"{name}.log"
        self._log = self.logfile.open("wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.logfile.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def child_env() -> dict[str, str]:
    """The environment of the servers and probes: the repository importable (builders such as
    `models.zoo:mlp` are found there, as the catalog is copied to a temporary folder)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def start_servers(device: str, catalog: Path, models: Sequence[str], service_env: dict[str, str],
                  naive_serial: bool, naive_png: str, logdir: Path) -> tuple[Server, Server]:
    base_env = child_env()
    ours_env = {**base_env, "MODELS": str(catalog), "HOST": "127.0.0.1", "DEVICE": device,
                "LOG_LEVEL": "WARNING", **service_env}
    ours_env["PORT"] = str(free_port())
    ours = Server("ours", [sys.executable, "-m", "app"], ours_env, int(ours_env["PORT"]), "/readyz", logdir)
    naive_port = free_port()
    naive_argv = [sys.executable, "-m", "bench.naive_server", "--catalog", str(catalog),
                  "--port", str(naive_port), "--device", device, "--models", ",".join(models),
                  "--png", naive_png]
    if naive_serial:
        naive_argv.append("--serial")
    naive = Server("naive", naive_argv, base_env, naive_port, "/healthz", logdir)
    try:
        ours.wait_ready(300)
        naive.wait_ready(300)
    except BaseException:
        ours.stop()
        naive.stop()
        raise
    return ours, naive


# --------------------------------------------------------------------------- checks and roofline

def _overlay_pixels(uri: str) -> np.ndarray:
    from PIL import Image

    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def compare_outputs(scenario: Scenario, ours: Server, naive: Server, body: bytes) -> dict[str, Any]:
    """Send one request to both and compare: same prediction, attributions, overlay."""
    path = f"/v1/models/{scenario.model}/explain"
    headers = {"content-type": "application/json"}
    a = httpx.post(ours.url + path, content=body, headers=headers, timeout=600, trust_env=False)
    b = httpx.post(naive.url + path, content=body, headers=headers, timeout=600, trust_env=False)
    if a.status_code != 200 or b.status_code != 200:
        return {"ok": False, "detail": f"status ours {a.status_code}, naive {b.status_code}: {a.text[:300]}"}
    ea, eb = a.json()["explanations"][0], b.json()["explanations"][0]
    out: dict[str, Any] = {"same_prediction": ea["prediction"]["index"] == eb["prediction"]["index"],
                           "same_target": ea["target"]["index"] == eb["target"]["index"],
                           "same_keys": sorted(ea) == sorted(eb)}
    if "overlay" in ea and "overlay" in eb:
        pa, pb = _overlay_pixels(ea["overlay"]), _overlay_pixels(eb["overlay"])
        diff = np.abs(pa - pb) if pa.shape == pb.shape else None
        out["overlay_identical_bytes"] = ea["overlay"] == eb["overlay"]
        out["overlay_max_abs_diff"] = int(diff.max()) if diff is not None else None
        out["overlay_pixels_differing"] = float((diff > 0).mean()) if diff is not None else None
    if isinstance(ea.get("attributions"), list) and ea["attributions"] and isinstance(ea["attributions"][0], dict):
        va = np.array([x["attribution"] for x in ea["attributions"]])
        vb = np.array([x["attribution"] for x in eb["attributions"]])
        out["attribution_max_abs_diff"] = float(np.abs(va - vb).max())
        out["attribution_scale"] = float(np.abs(va).max())
    if ea.get("convergence_delta") is not None and eb.get("convergence_delta") is not None:
        out["delta_ours"], out["delta_naive"] = ea["convergence_delta"], eb["convergence_delta"]
    attr_tolerance = 1e-3 * max(out.get("attribution_scale", 1.0), 1e-6)
    out["ok"] = bool(out["same_prediction"] and out["same_target"] and out["same_keys"]
                     and out.get("overlay_max_abs_diff", 0) in (0, 1, 2)
                     and out.get("attribution_max_abs_diff", 0.0) <= attr_tolerance)
    return out


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


# --------------------------------------------------------------------------- the matrix

def run_cell(server: Server, scenario: Scenario, bodies: list[bytes], concurrency: int, duration: float,
             max_requests: int, drain: float, client: str) -> LoadResult:
    url = f"{server.url}/v1/models/{scenario.model}/explain"
    rows = scenario.rows_per_instance
    warm = min(concurrency, 4)
    asyncio.run(run_load(url, bodies, concurrency=warm, max_requests=warm, duration_s=duration,
                         drain_s=drain, rows_per_request=rows, client=client))
    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
    result = asyncio.run(run_load(
        url, bodies, concurrency=concurrency, max_requests=max_requests, duration_s=duration, drain_s=drain,
        rows_per_request=rows, sample_key="timings_ms" if server.name == "ours" else None, client=client))
    server_cpu, client_cpu = server.cpu_seconds() - server_cpu, time.process_time() - client_cpu
    answered = max(result.ok + sum(result.errors.values()), 1)
    result.sampled["server_cpu_ms_per_request"] = server_cpu * 1000 / answered
    result.sampled["client_cpu_ms_per_request"] = client_cpu * 1000 / answered
    return result


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def evaluate_targets(device_type: str, scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, conc, metric, threshold, text in TARGETS_DOC.get(device_type, []):
        names = [name] if name != "*" else list(scenarios)
        for scen in names:
            if scen not in scenarios:
                continue
            cells = scenarios[scen]["cells"]
            value: float | None = None
            if metric == "efficiency":
                effs = [c["efficiency"] for c in cells if c.get("efficiency") is not None]
                value = max(effs) if effs else None
            elif metric == "tail_ratio":
                one = next((c for c in cells if c["concurrency"] == 1), None)
                top = next((c for c in cells if c["concurrency"] == conc), None)
                if one and top and one["ours"]["latency_ms"] and top["ours"]["latency_ms"]:
                    value = top["ours"]["latency_ms"]["p99"] / one["ours"]["latency_ms"]["p50"]
            else:
                cell = next((c for c in cells if c["concurrency"] == conc), None)
                value = cell.get(metric) if cell else None
            if value is None:
                continue
            lower_is_better = metric in ("p50_ratio", "tail_ratio")
            passed = value <= threshold if lower_is_better else value >= threshold
            if metric == "tail_ratio":
                passed = value < threshold
            out.append({"target": text, "scenario": scen, "concurrency": conc or None, "metric": metric,
                        "value": round(value, 3), "threshold": threshold, "pass": passed})
    return out


def machine_info(device: str) -> dict[str, Any]:
    import captum
    import torch

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)), "cpu_model": cpu_model,
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "captum": captum.__version__,
        "device": device, "device_name": cpu_model or platform.processor(),
    }
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["memory_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "app"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["git_commit"] = commit + ("+dirty(app)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def service_settings(overrides: dict[str, str]) -> dict[str, Any]:
    from app.config import Settings

    keys = ("max_batch_size", "max_batch_rows", "max_batch_delay_ms", "workers_per_device", "max_queue",
            "host_workers", "cpu_chunk_mb")
    env_backup = dict(os.environ)
    try:
        os.environ.update(overrides)
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    return {k: getattr(settings, k) for k in keys} | {"env_overrides": overrides}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    names = [s for s in args.scenarios.split(",") if s] if args.scenarios else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    scenarios = [SCENARIOS[n] for n in names]
    explicit_conc = [int(c) for c in args.concurrency.split(",") if c] if args.concurrency else None
    duration = args.duration or (8.0 if device_type == "cpu" else 15.0)
    service_env = dict(kv.split("=", 1) for kv in args.service_env)
    random_weights = [m for m in args.random_weights.split(",") if m]
    started = time.perf_counter()
    result: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "note": args.note,
        "machine": machine_info(device), "service_settings": service_settings(service_env),
        "naive_mode": ("serial (async def)" if args.naive_serial else "threads (def, FastAPI thread pool)")
        + ("; PNG with our encoder settings" if args.naive_png == "ours" else "; PNG with Pillow's defaults"),
        "client": args.client, "random_weights": random_weights,
        "cell_duration_s": duration, "loadavg_start": list(os.getloadavg()),
        "roofline": {}, "scenarios": {},
    }
    models = sorted({s.model for s in scenarios})
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        logdir = Path(tmp)
        catalog = subset_catalog(models, logdir, random_weights)
        if not args.no_roofline:
            for scenario in scenarios:
                key = f"{scenario.model}/{scenario.roofline_mode}"
                if key not in result["roofline"]:
                    log(f"roofline {key}")
                    limit = 15.0
                    result["roofline"][key] = run_roofline(scenario, catalog, device, limit)
                    log(f"  {result['roofline'][key].get('rows_per_s', 0):,.0f} rows/s at batch "
                        f"{result['roofline'][key].get('best_batch')}")
        log(f"starting servers on {device} ({', '.join(models)})")
        ours, naive = start_servers(device, catalog, models, service_env, args.naive_serial, args.naive_png,
                                    logdir)
        try:
            flip = False
            for scenario in scenarios:
                bodies = make_bodies(scenario)
                log(f"{scenario.name}: checking both answer the same")
                match = compare_outputs(scenario, ours, naive, bodies[0])
                entry: dict[str, Any] = {
                    "model": scenario.model, "method": scenario.method, "params": scenario.params,
                    "rows_per_request": scenario.rows_per_instance, "image_size": scenario.image_size,
                    "outputs_match": match, "cells": [],
                    "note": scenario.skipped.get(device_type, "") if explicit_conc is None else ""}
                roof = result["roofline"].get(f"{scenario.model}/{scenario.roofline_mode}", {})
                concs = explicit_conc or (scenario.cpu_concurrency if device_type == "cpu"
                                          else scenario.gpu_concurrency)
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
                        res = run_cell(server, scenario, bodies, conc, cell_duration, max_requests,
                                       drain=args.drain, client=args.client)
                        cell[server.name] = res.to_dict()
                        log(f"  {res.throughput_rps:.2f} req/s, p50 {res.latency_ms.get('p50', float('nan')):.1f} ms, "
                            f"errors {res.errors or 0}, sent {res.sent}")
                    o, n = cell["ours"], cell["naive"]
                    cell["ratio"] = _ratio(o["throughput_rps"], n["throughput_rps"])
                    if o["latency_ms"] and n["latency_ms"]:
                        cell["p50_ratio"] = _ratio(o["latency_ms"]["p50"], n["latency_ms"]["p50"])
                    cell["efficiency"] = _ratio(o["rows_per_s"], roof.get("rows_per_s", 0.0)) if roof else None
                    cell["naive_efficiency"] = (_ratio(n["rows_per_s"], roof.get("rows_per_s", 0.0))
                                                if roof else None)
                    entry["cells"].append(cell)
                result["scenarios"][scenario.name] = entry
        finally:
            ours.stop()
            naive.stop()
    result["targets"] = evaluate_targets(device_type, result["scenarios"])
    result["loadavg_end"] = list(os.getloadavg())
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    return result


# --------------------------------------------------------------------------- report

def _f(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    if value is None or value != value:
        return "–"
    return f"{value:{spec}}{suffix}"


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    s = result["service_settings"]
    lines = [
        f"# Benchmark: {m['device_name']} ({m['device']})", "",
        f"Run {result['created']}, commit {m.get('git_commit', '?')}, {result['total_seconds']} s in all."
        + (f" Note: {result['note']}" if result.get("note") else ""), "",
        f"- Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m.get('memory_gib', '?')} GiB, "
        f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), captum {m['captum']}"
        + (f", CUDA {m['cuda']}, {m['gpu_memory_gib']} GiB" if "cuda" in m else ""),
        f"- Load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in result['loadavg_start'])}, "
        f"at end {', '.join(f'{x:.2f}' for x in result['loadavg_end'])} "
        "(the host is shared: other processes compete for the same cores)",
        f"- Our service: MAX_BATCH_SIZE={s['max_batch_size']}, MAX_BATCH_ROWS={s['max_batch_rows']}, "
        f"MAX_BATCH_DELAY_MS={s['max_batch_delay_ms']}, WORKERS_PER_DEVICE={s['workers_per_device']}"
        + (f", CPU_CHUNK_MB={s['cpu_chunk_mb']}" if "cpu_chunk_mb" in s else "")
        + (f", overrides {s['env_overrides']}" if s["env_overrides"] else ""),
        f"- Naive server: {result['naive_mode']}; load generator client: {result.get('client', 'raw')}; "
        f"cells of {result['cell_duration_s']} s "
        "(bounded by time and request count; in-flight requests are drained and counted)",
        *([f"- Random weights (seeded initialisation of the builder, weights file not used): "
           f"{', '.join(result['random_weights'])}"] if result.get("random_weights") else []),
        "",
        "## Targets (issue 5)", "",
        "| target | scenario | value | threshold | |", "|---|---|---|---|---|",
    ]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['scenario']} | {t['value']} | {t['threshold']} | "
                     f"{'PASS' if t['pass'] else 'FAIL'} |")
    if not result["targets"]:
        lines.append("| (none measured) | | | | |")
    lines += ["", "## Results", "",
              "Throughput in requests/s (one instance per request); attribution rows/s = requests/s x rows "
              "per request (IG: n_steps, GradCAM: 1); efficiency = our rows/s / roofline rows/s.", "",
              "| scenario | conc | ours req/s | naive req/s | ratio | ours p50 / p99 ms | naive p50 / p99 ms "
              "| p50 ratio | ours rows/s | efficiency | errors ours / naive | n ours / naive | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in result["scenarios"].items():
        for c in entry["cells"]:
            o, n = c["ours"], c["naive"]
            lo, ln = o["latency_ms"] or {}, n["latency_ms"] or {}
            tb = " (t)" if o["time_bounded"] or n["time_bounded"] else ""
            lines.append(
                f"| {name} | {c['concurrency']} | {_f(o['throughput_rps'], '.2f')} | "
                f"{_f(n['throughput_rps'], '.2f')} | {_f(c['ratio'], '.2f', 'x')} | "
                f"{_f(lo.get('p50'))} / {_f(lo.get('p99'))} | {_f(ln.get('p50'))} / {_f(ln.get('p99'))} | "
                f"{_f(c.get('p50_ratio'), '.2f', 'x')} | {_f(o['rows_per_s'], ',.0f')} | "
                f"{_f(c['efficiency'] * 100 if c['efficiency'] is not None else None, '.1f', '%')} | "
                f"{sum(o['errors'].values())} / {sum(n['errors'].values())} | {o['ok']} / {n['ok']}{tb} | "
                f"{c['loadavg'][0]:.1f} |")
    lines += ["", "(t): the cell's time bound, not its request count, ended it.", "",
              "## Where our time goes (means of `timings_ms` in sampled answers)", "",
              "Server CPU ms per request is the server process's CPU time (all threads) over the cell divided "
              "by the answers; client CPU is the load generator's. On a shared host these are steadier than "
              "wall-clock numbers.", "",
              "| scenario | conc | queue ms | compute ms | render ms | total ms | server CPU ms/req ours / naive "
              "| client CPU ms/req | bytes/response ours / naive |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in result["scenarios"].items():
        for c in entry["cells"]:
            t = c["ours"].get("sampled") or {}
            tn = c["naive"].get("sampled") or {}
            lines.append(f"| {name} | {c['concurrency']} | {_f(t.get('queue'))} | {_f(t.get('compute'))} | "
                         f"{_f(t.get('render'))} | {_f(t.get('total'))} | "
                         f"{_f(t.get('server_cpu_ms_per_request'), '.2f')} / "
                         f"{_f(tn.get('server_cpu_ms_per_request'), '.2f')} | "
                         f"{_f(t.get('client_cpu_ms_per_request'), '.2f')} | "
                         f"{_f(c['ours']['bytes_per_response'], ',.0f')} / "
                         f"{_f(c['naive']['bytes_per_response'], ',.0f')} |")
    lines += ["", "## Roofline (raw fwd+bwd, in-process, best batch size)", "",
              "| model / mode | rows/s | best batch | threads tried | sweep (batch: rows/s) |", "|---|---|---|---|---|"]
    for key, r in result["roofline"].items():
        if not r:
            lines.append(f"| {key} | failed | | | |")
            continue
        sweep = ", ".join(f"{x['batch']}: {'OOM' if x.get('oom') else format(x['rows_per_s'], ',.0f')}"
                          for x in r["sweep"])
        threads = ", ".join(f"{k}: {v:,.0f}" for k, v in r.get("rows_per_s_by_threads", {}).items())
        lines.append(f"| {key} | {r['rows_per_s']:,.0f} | {r['best_batch']} | {threads} | {sweep} |")
    lines += ["", "## Same answers", "",
              "One identical request to both servers before the cells: prediction, target and output keys "
              "equal; overlays compared pixel by pixel; tabular attributions compared numerically.", ""]
    for name, entry in result["scenarios"].items():
        match = {k: v for k, v in entry["outputs_match"].items()}
        lines.append(f"- {name}: {'same' if match.get('ok') else 'DIFFERENT'} {json.dumps(match)}")
        if entry.get("note"):
            lines.append(f"  - {entry['note']}")
    return "\n".join(lines) + "\n"


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark our service against the naive server and the roofline")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--scenarios", default="", help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    parser.add_argument("--concurrency", default="", help="comma-separated levels for every scenario "
                        "(default: 1,16,64 on CPU with resnet50-ig at 1 only; 1,16,64,128,256 on CUDA)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds per cell (default 8 CPU, 15 CUDA)")
    parser.add_argument("--requests", type=int, default=20000, help="most requests per cell")
    parser.add_argument("--drain", type=float, default=60.0, help="most seconds to wait for in-flight requests")
    parser.add_argument("--out", type=Path, default=None, help="results path without suffix "
                        "(default bench/results/cpu, or bench/results/<gpu name> on CUDA)")
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for our service (e.g. MAX_BATCH_DELAY_MS=2)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="load generator client (bench/loadgen.py): raw asyncio HTTP/1.1 or httpx")
    parser.add_argument("--naive-png", choices=["default", "ours"], default="default",
                        help="naive PNG encoding: Pillow's defaults (default) or our settings (identical bytes)")
    parser.add_argument("--naive-serial", action="store_true", help="naive endpoint as async def (one at a time)")
    parser.add_argument("--random-weights", default="", metavar="MODEL,...",
                        help="serve these state_dict models with a seeded random initialisation of their builder "
                        "(when their weights file is absent or does not fit; same speed)")
    parser.add_argument("--no-roofline", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="merge these scenarios into an existing results file instead of replacing it")
    parser.add_argument("--note", default="", help="free text recorded with the results")
    args = parser.parse_args(argv)
    result = run(args)
    out = args.out
    if out is None:
        name = "cpu" if result["machine"]["device"] == "cpu" else slug(result["machine"]["device_name"])
        out = BENCH / "results" / name
    if args.merge and out.with_suffix(".json").is_file():
        result = merge_results(json.loads(out.with_suffix(".json").read_text(encoding="utf-8")), result)
    write_results(result, out)
    log(f"wrote {out.with_suffix('.md')} and .json in {result['total_seconds']} s")
    sys.stdout.write(render_markdown(result))
    return 0


def slug(text: str) -> str:
    out = "".join(ch.lower() if ch.isalnum() else "-" for ch in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "gpu"


if __name__ == "__main__":
    sys.exit(main())
