"""Worker threads that own model replicas: a worker takes one batch at a time, computed on its
replica or split across its lanes (a replica and a thread each), so hooks on a replica's modules
are only ever touched by one thread. Failed batches are split: out-of-memory halves the batch
down to single items; any other error is retried item by item, so one bad input fails only its
own request."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Generic, TypeVar

import torch

from app.errors import InternalError, PayloadTooLarge, ServiceError
from app.inference.interrupt import Interrupted, StopReason, current, watching
from app.inference.memory import is_out_of_memory
from app.runtime.threads import CpuThreads, LaneThreads, Plan

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


def split_by_rows(work: list[W], rows: Sequence[int], parts: int) -> list[list[W]]:
    """`work` in at most `parts` consecutive pieces of about equal work rows, none empty."""
    if parts <= 1 or len(work) <= 1:
        return [work]
    total = sum(rows)
    pieces: list[list[W]] = []
    start = done = 0
    for index, count in enumerate(rows):
        done += count
        left_items, left_pieces = len(work) - index - 1, parts - len(pieces) - 1
        if left_pieces > 0 and (done * parts >= total * (len(pieces) + 1) or left_items == left_pieces):
            pieces.append(work[start:index + 1])
            start = index + 1
    pieces.append(work[start:])
    return [piece for piece in pieces if piece]


class Lanes(Generic[W, R]):
    """A worker's replicas as lanes: a batch is split by items (`CpuThreads.plan`) and each piece
    computed on its own thread with its own replica, the first on the worker's thread. Every lane
    has finished before the batch returns, so a replica is never used by two batches at once;
    checkpoints on the lanes' threads watch what the worker's do."""

    def __init__(self, name: str, lanes: Sequence[Callable[[list[W]], Sequence[R]]],
                 policy: CpuThreads | None, rows_of: Callable[[W], int]):
        self._lanes = list(lanes)
        self._policy = policy
        self._rows_of = rows_of
        self._pool = (ThreadPoolExecutor(len(lanes) - 1, thread_name_prefix=f"worker-{name}-lane")
                      if len(lanes) > 1 else None)
        self._threads = threading.local()

    def _on_lane(self, lane: int, work: list[W], threads: int, reason: StopReason | None) -> list[R]:
        if self._policy is not None:
            if not hasattr(self._threads, "count"):
                self._threads.count = LaneThreads()
            self._threads.count.set(threads)
        if reason is None:
            return list(self._lanes[lane](work))
        with watching(reason):
            return list(self._lanes[lane](work))

    def run(self, work: list[W]) -> list[R]:
        rows = [self._rows_of(w) for w in work]
        if self._policy is None:
            return self._split(work, rows, Plan(1, 0))
        with self._policy.occupancy.computing() as others_busy:
            return self._split(work, rows, self._policy.plan(len(work), sum(rows), others_busy))

    def _split(self, work: list[W], rows: list[int], plan: Plan) -> list[R]:
        pieces = split_by_rows(work, rows, min(plan.lanes, len(self._lanes)))
        if len(pieces) == 1 or self._pool is None:
            return self._on_lane(0, work, plan.threads, None)
        reason = current()
        others = [self._pool.submit(self._on_lane, lane, piece, plan.threads, reason)
                  for lane, piece in enumerate(pieces[1:], start=1)]
        try:
            results = self._on_lane(0, pieces[0], plan.threads, None)
        finally:
            wait(others)
        return results + [r for future in others for r in future.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class Worker(Generic[W, R]):
    """One thread and the replica it owns; `handle` is a batcher handler."""

    def __init__(self, name: str, run: Callable[[list[W]], Sequence[R | ServiceError]],
                 lanes: Lanes[W, R] | None = None):
        self.name = name
        self._run = run
        self._lanes = lanes
        """Closed with the worker, where `run` is theirs."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"worker-{name}")

    def _compute(self, work: list[W], stop: StopReason) -> list[R | ServiceError]:
        with watching(stop):
            return isolate(self._run, work, "request")

    async def handle(self, work: list[W], stop: StopReason) -> list[R | ServiceError]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._compute, work, stop)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._lanes is not None:
            self._lanes.close()
