"""What the results record about the machine and our service's settings."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.common import ROOT

__all__ = ["machine_info", "service_settings"]


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
    return {k: getattr(settings, k) for k in keys if hasattr(settings, k)} | {"env_overrides": overrides}
