"""Worker threads that own model replicas: one thread per replica, so hooks on a replica's
modules are only ever touched by one thread. Failed batches are split: out-of-memory halves
the batch down to single items; any other error is retried item by item, so one bad input
fails only its own request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import torch

from app.errors import InternalError, PayloadTooLarge, ServiceError
from app.inference.interrupt import Interrupted, StopReason, watching
from app.inference.memory import is_out_of_memory

logger = logging.getLogger(__name__)

W = TypeVar("W")
R = TypeVar("R")

def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def isolate(run: Callable[[list[W]], Sequence[R | ServiceError]], work: list[W],
            what: str = "item") -> list[R | ServiceError]:
    """`run(work)`, answering every item even when the batch as a whole fails. Stopped work
    (`Interrupted`) is not retried: every item gets the reason it was stopped."""
    try:
        results: list[R | ServiceError] = list(run(work))
    except Interrupted as stopped:
        logger.info("stopped a batch of %d %ss: %s", len(work), what, stopped.error.detail)
        return [stopped.error] * len(work)
    except ServiceError as exc:
        if len(work) == 1:
            return [exc]
        return [outcome for w in work for outcome in isolate(run, [w], what)]
    except Exception as exc:
        if is_out_of_memory(exc):
            _release_cached_memory()
            if len(work) == 1:
                rid = getattr(work[0], "request_id", "-")
                logger.warning("one %s alone does not fit in device memory (request id %s): %s", what,
                               rid, exc, extra={"request_id": rid})
                return [PayloadTooLarge(
                    f"this {what} alone does not fit in the device's memory; send fewer instances "
                    "or lighter parameters (e.g. fewer n_steps / n_samples)")]
            half = len(work) // 2
            logger.info("out of memory on a batch of %d; splitting", len(work))
            return isolate(run, work[:half], what) + isolate(run, work[half:], what)
        if len(work) == 1:
            rid = getattr(work[0], "request_id", "-")
            logger.exception("computing one %s failed (request id %s)", what, rid, extra={"request_id": rid})
            return [InternalError(f"computing this {what} failed: {type(exc).__name__}")]
        logger.warning("batch of %d failed (%s); retrying item by item", len(work), exc)
        return [outcome for w in work for outcome in isolate(run, [w], what)]
    if len(results) != len(work):
        raise InternalError(f"batch function returned {len(results)} results for {len(work)} items")
    return results


class RowBudget:
    """A replica's work rows per Captum chunk, halved for good when the device runs out of memory.

    Chunking bounds the memory of multi-pass methods (IG steps, occlusion windows) whatever the
    batch; the first out-of-memory error teaches the replica a smaller chunk, so later batches
    don't fail the same way. Below `floor` the error goes up and the batch is split instead.
    """

    def __init__(self, model: str, rows: int, floor: int = 8):
        self.model = model
        self.rows = rows
        self.floor = floor

    def run(self, compute: Callable[[int], Sequence[R]]) -> Sequence[R]:
        while True:
            try:
                return compute(self.rows)
            except Exception as exc:
                if not is_out_of_memory(exc) or self.rows <= self.floor:
                    raise
                _release_cached_memory()
                self.rows //= 2
                logger.warning("model %s: out of memory; chunks are now %d work rows", self.model, self.rows)


class Worker(Generic[W, R]):
    """One thread and the replica it owns; `handle` is a batcher handler."""

    def __init__(self, name: str, run: Callable[[list[W]], Sequence[R | ServiceError]]):
        self.name = name
        self._run = run
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"worker-{name}")

    def _compute(self, work: list[W], stop: StopReason) -> list[R | ServiceError]:
        with watching(stop):
            return isolate(self._run, work, "request")

    async def handle(self, work: list[W], stop: StopReason) -> list[R | ServiceError]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._compute, work, stop)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
