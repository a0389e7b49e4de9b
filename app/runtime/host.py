"""Host work: the per-request CPU work around the device (decoding images, rendering overlays,
charts and PNGs), off the event loop and off the interpreter lock the device workers need.

`HostPool.run(fn, *args)` runs a job in worker processes (`HOST_MODE=process`, app/runtime/
processes.py) or in threads of this process (`thread`); `run_local` always runs it on a thread
here, for jobs whose data costs more to send to another process than the job itself (a kind
decides, from measurement: bench/results/history.md). A job is a module-level function of
picklable arguments; the processes import only what the jobs need, never torch (`app.kinds`,
`app.render` and `app.inference.inputs` stay torch-free). The processes start with the app
(`start`, in its lifespan) and end with it (`close`, after the drain).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar, cast

from app.config import Settings
from app.errors import NotReady
from app.runtime.processes import ProcessPool

logger = logging.getLogger(__name__)

T = TypeVar("T")

JOB_MODULES = ("app.kinds", "app.kinds.image", "app.kinds.tabular", "app.render", "app.inference.inputs")
"""Imported once by the fork server the worker processes start from."""
CLOSE_WAIT_S = 2.0
"""How long `close` waits for the worker processes to exit before killing them."""


def resolved_mode(settings: Settings) -> Literal["process", "thread"]:
    """`HOST_MODE`, with `auto` resolved (bench/results/history.md)."""
    return "thread" if settings.host_mode == "thread" else "process"


class HostPool:
    """Host work in `HOST_WORKERS` processes or threads (0: the host's CPU count)."""

    def __init__(self, settings: Settings):
        self.workers = settings.host_workers or os.cpu_count() or 2
        self.mode = resolved_mode(settings)
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="host")
        self.processes = (ProcessPool(self.workers, JOB_MODULES, settings.host_nice, settings.malloc_retain)
                          if self.mode == "process" else None)
        self._closed = False

    async def start(self) -> None:
        """Start the worker processes (each imports the job modules before it takes a job)."""
        if self.processes is None:
            return
        started = time.perf_counter()
        await self.processes.start()
        logger.info("host work: %d processes started in %.1f s", self.workers, time.perf_counter() - started)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the pool (a worker process, or a thread in thread mode)."""
        if self.processes is None:
            return await self.run_local(fn, *args)
        return cast(T, await self.processes.run(fn, *args))

    async def run_local(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a thread of this process."""
        if self._closed:
            raise NotReady("the service is shutting down", headers={"Retry-After": "5"})
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    def close(self) -> None:
        """Cancel queued jobs and end the worker processes (killed after CLOSE_WAIT_S)."""
        self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self.processes is not None:
            self.processes.close(CLOSE_WAIT_S)
