"""Per-model work queue: batch formation, per-request futures, deadlines, backpressure.

Each model has one `Batcher` with one consumer per worker. A consumer takes the oldest live
item and every queued item with the same key (method and resolved parameters) up to the batch
limits, counted in work rows, and hands the batch to its worker's handler. With `shared`
limits (a CPU model's several workers), a consumer takes only its share of what is queued (the
queued items and work rows over the workers, at least one item), leaving the rest to the others
as they free: taking everything, or sharing only with the idle ones, left one worker a long
batch while the other served single requests (bench/results/history.md). Items whose
deadline passed or whose caller went away are dropped before compute; a running batch is told
to stop (its handler's `StopReason`) once every one of its items is past its deadline or
abandoned, or the service stops. Every future gets exactly one answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from app.errors import ClientClosed, DeadlineExceeded, InternalError, NotReady, QueueFull, ServiceError

logger = logging.getLogger(__name__)

P = TypeVar("P")
StopReason = Callable[[], ServiceError | None]
"""Polled while a batch runs (from any thread): None to go on, else what its items are answered."""
BatchHandler = Callable[[list[P], StopReason], Awaitable[Sequence[Any]]]
"""Takes N payloads, returns N results (a result may be an exception for that item alone)."""

SHUT_DOWN = "the service shut down before this was served"


class BatchObserver(Protocol):
    def batch_formed(self, model: str, items: int, rows: int) -> None: ...
    def queue_changed(self, model: str, rows: int) -> None: ...
    def item_dropped(self, model: str, reason: str) -> None: ...


@dataclass(frozen=True)
class Limits:
    max_items: int = 64
    max_rows: int = 4096
    max_delay_s: float = 0.0
    max_queue_rows: int = 65536
    shared: bool = False
    """Each consumer takes its share of the queue (over the consumers), not all that fits."""


@dataclass(frozen=True)
class Completed:
    """A computed result with how long its item waited and how long its batch ran."""

    value: Any
    queue_s: float
    compute_s: float
    batch_items: int


@dataclass(eq=False)
class _Item(Generic[P]):
    payload: P
    key: Hashable
    rows: int
    deadline: float
    future: asyncio.Future[Completed]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher(Generic[P]):
    def __init__(self, name: str, handlers: Sequence[BatchHandler[P]], limits: Limits,
                 observer: BatchObserver | None = None):
        if not handlers:
            raise ValueError("a batcher needs at least one handler")
        self.name = name
        self.limits = limits
        self._handlers = list(handlers)
        self._observer = observer
        self._queue: deque[_Item[P]] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._stopping = False
        self._running = 0
        self.computed_items = 0
        """Items handed to a handler: proof that dropped work was never computed."""
        self.dropped_items = 0

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def idle(self) -> bool:
        return not self._queue and self._running == 0

    def start(self) -> None:
        for i, handler in enumerate(self._handlers):
            task = asyncio.create_task(self._consume(handler), name=f"batcher-{self.name}-{i}")
            self._tasks.append(task)

    async def submit(self, payload: P, key: Hashable, rows: int, deadline: float) -> Completed:
        """Queue one request's work and wait for its result until `deadline` (perf_counter time)."""
        if self._draining:
            raise NotReady("the service is shutting down", headers={"Retry-After": "5"})
        if self._queued_rows + rows > self.limits.max_queue_rows:
            raise QueueFull(
                f"model '{self.name}' queue is full ({self._queued_rows} work rows queued, "
                f"MAX_QUEUE={self.limits.max_queue_rows})",
                headers={"Retry-After": "1"},
            )
        timeout = deadline - time.perf_counter()
        if timeout <= 0:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        future: asyncio.Future[Completed] = asyncio.get_running_loop().create_future()
        item = _Item(payload, key, max(1, rows), deadline, future)
        self._queue.append(item)
        self._queued_rows += item.rows
        self._notify_queue()
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            future.cancel()
            raise DeadlineExceeded(
                f"the request's deadline ({timeout:.3g} s) passed before it was served") from None
        except asyncio.CancelledError:
            future.cancel()
            raise

    def refuse_new(self) -> None:
        """From now on, submit() answers 503; queued and running work goes on."""
        self._draining = True
        self._wakeup.set()

    async def drain(self, timeout: float, stop_grace: float = 2.0) -> bool:
        """Refuse new work and finish what is queued or running; past `timeout`, stop it: running
        work stops at its next checkpoint and everything unfinished is answered 503 (with
        Retry-After) within `stop_grace` more seconds. True if it all finished in time."""
        self.refuse_new()
        done = True
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=max(0.0, timeout))
            done = not pending
            if pending:
                self._stopping = True
                _, pending = await asyncio.wait(pending, timeout=stop_grace)
            for task in pending:
                task.cancel()
        self._stopping = True
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(NotReady(SHUT_DOWN, headers={"Retry-After": "5"}))
        self._queue.clear()
        return done

    def _notify_queue(self) -> None:
        if self._observer is not None:
            self._observer.queue_changed(self.name, self._queued_rows)

    def _drop(self, item: _Item[P], reason: str) -> None:
        self._queued_rows -= item.rows
        self.dropped_items += 1
        if self._observer is not None:
            self._observer.item_dropped(self.name, reason)

    def _take(self, share: int = 1) -> list[_Item[P]]:
        """The next batch: at most 1/`share` of the queued items and work rows (at least one item)."""
        now = time.perf_counter()
        max_items, max_rows = self.limits.max_items, self.limits.max_rows
        if share > 1:
            max_items = min(max_items, math.ceil(len(self._queue) / share))
            max_rows = min(max_rows, math.ceil(self._queued_rows / share))
        batch: list[_Item[P]] = []
        rows = 0
        kept: deque[_Item[P]] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():  # cancelled: caller gone or timed out
                self._drop(item, "cancelled")
                continue
            if item.deadline <= now:
                self._drop(item, "deadline")
                item.future.set_exception(DeadlineExceeded(
                    "the request's deadline passed while it was queued"))
                continue
            fits = (not batch) or (
                item.key == batch[0].key
                and len(batch) < max_items
                and rows + item.rows <= max_rows
            )
            if fits:
                batch.append(item)
                rows += item.rows
                self._queued_rows -= item.rows
            else:
                kept.append(item)
        self._queue = kept
        self._notify_queue()
        return batch

    async def _consume(self, handler: BatchHandler[P]) -> None:
        while True:
            if not self._queue or self._stopping:
                if self._draining:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.limits.max_delay_s > 0 and self._queued_rows < self.limits.max_rows:
                await asyncio.sleep(self.limits.max_delay_s)
            batch = self._take(share=len(self._handlers) if self.limits.shared else 1)
            if not batch:
                continue
            if self._queue:
                self._wakeup.set()  # another consumer may take the rest
            await self._run(handler, batch)

    def _stop_reason(self, batch: list[_Item[P]]) -> StopReason:
        def reason() -> ServiceError | None:
            if self._stopping:
                return NotReady(SHUT_DOWN, headers={"Retry-After": "5"})
            if all(item.future.done() for item in batch):  # nobody waits: each timed out or went away
                if all(item.deadline <= time.perf_counter() for item in batch):
                    return DeadlineExceeded("the request's deadline passed while it was computed")
                return ClientClosed("every client of this work went away")
            return None
        return reason

    async def _run(self, handler: BatchHandler[P], batch: list[_Item[P]]) -> None:
        rows = sum(item.rows for item in batch)
        if self._observer is not None:
            self._observer.batch_formed(self.name, len(batch), rows)
        self.computed_items += len(batch)
        self._running += 1
        started = time.perf_counter()
        try:
            results = await handler([item.payload for item in batch], self._stop_reason(batch))
            if len(results) != len(batch):
                raise InternalError(
                    f"batch handler returned {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:  # drain ran out of time: still answer every future once
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(NotReady(SHUT_DOWN, headers={"Retry-After": "5"}))
            raise
        except Exception as exc:  # the handler failed as a whole: every future gets this error
            logger.exception("batch of %d items for model %s failed", len(batch), self.name)
            error = exc if isinstance(exc, InternalError) else InternalError("batch failed")
            results = [error] * len(batch)
        finally:
            self._running -= 1
        compute_s = time.perf_counter() - started
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                queue_s = started - item.enqueued
                item.future.set_result(Completed(result, queue_s, compute_s, len(batch)))
