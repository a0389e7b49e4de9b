"""TorchServe for the comparison: loopback only, free ports, one model, its own temporary folder.

`torchserve --start --foreground` from bench/.torchserve-venv stays the parent of the Java frontend,
which starts the Python workers: the whole tree is one Server (bench/servers.py), so its CPU is
sampled like our service's (by process name: `java`, the frontend; `python`, the workers) and
stop() ends all of it. Token authorisation is off (TorchServe 0.12 turns it on by default);
system metrics (a Python process the frontend starts every minute) are off; the gRPC ports and
the workers' socket numbers are free ones, so runs never collide with another TorchServe.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.servers import Server, free_port
from bench.torchserve import venv

__all__ = ["Variant", "config_properties", "start_torchserve"]


@dataclass(frozen=True)
class Variant:
    """How TorchServe is set up: `workers` Python workers for the model, each with torch's default
    intra-op threads (every core) or `threads` (OMP_NUM_THREADS) when given."""

    workers: int
    threads: int | None = None

    @property
    def name(self) -> str:
        return f"torchserve-w{self.workers}" + (f"t{self.threads}" if self.threads else "")

    @classmethod
    def parse(cls, text: str) -> Variant:
        """"2" (2 workers) or "2x1" (2 workers of 1 thread)."""
        workers, _, threads = text.partition("x")
        return cls(int(workers), int(threads) if threads else None)


def config_properties(*, ports: dict[str, int], store: Path, workers: int) -> str:
    return "\n".join([
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        "grpc_inference_address=127.0.0.1",
        f"grpc_inference_port={ports['grpc_inference']}",
        "grpc_management_address=127.0.0.1",
        f"grpc_management_port={ports['grpc_management']}",
        f"initial_worker_port={ports['workers']}",
        "disable_token_authorization=true",
        f"model_store={store}",
        f"default_workers_per_model={workers}",
        "job_queue_size=1000",
        "default_response_timeout=600",
        "disable_system_metrics=true",
        "install_py_dep_per_model=false",
    ]) + "\n"


def _wait_for_workers(management: str, model: str, workers: int, server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"TorchServe exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            answer = httpx.get(f"{management}/models/{model}", timeout=5.0, trust_env=False)
            if answer.status_code == 200:
                states = [w.get("status") for w in answer.json()[0].get("workers", [])]
                if len(states) == workers and all(s == "READY" for s in states):
                    return
        except (httpx.HTTPError, ValueError, IndexError, KeyError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"TorchServe's {workers} worker(s) for {model} not ready after {timeout:.0f} s:\n"
                       f"{server.tail()}")


def start_torchserve(store: Path, model: str, variant: Variant, folder: Path, timeout: float = 600.0) -> Server:
    """TorchServe serving `store/<model>` (see archive.py), ready: every worker loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    ports = {key: free_port() for key in ("inference", "management", "metrics", "grpc_inference",
                                         "grpc_management", "workers")}
    config = folder / "config.properties"
    config.write_text(config_properties(ports=ports, store=store, workers=variant.workers), encoding="utf-8")
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    # TEMP/TMPDIR: the CLI's pid file and the workers' sockets go there, not to the shared /tmp.
    env = {**os.environ, "TEMP": str(folder), "TMPDIR": str(folder), "LOG_LOCATION": str(logs),
           "METRICS_LOCATION": str(logs)}
    env.pop("PYTHONPATH", None)
    if variant.threads:
        env["OMP_NUM_THREADS"] = str(variant.threads)
    argv = [str(venv.tool("torchserve")), "--start", "--foreground", "--ncs", "--disable-token-auth",
            "--ts-config", str(config), "--model-store", str(store), "--models", f"{model}={model}"]
    server = Server(variant.name, argv, env, ports["inference"], "/ping", folder, cwd=folder)
    try:
        server.wait_ready(timeout)
        _wait_for_workers(f"http://127.0.0.1:{ports['management']}", model, variant.workers, server, timeout)
    except BaseException:
        server.stop()
        raise
    return server
