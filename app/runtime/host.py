"""Host work: the per-request CPU work around the device (decoding images, rendering overlays,
charts and PNGs), run off the event loop and off the device workers' threads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from app.config import Settings

T = TypeVar("T")


class HostPool:
    """A pool of threads sized to the host (`HOST_WORKERS`, default the CPU count)."""

    def __init__(self, settings: Settings):
        workers = settings.host_workers or os.cpu_count() or 2
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="host")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
