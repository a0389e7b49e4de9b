"""The per-model batcher, with fake handlers on a plain asyncio loop (no models, no threads).

Batch formation is made deterministic with a gate: the first batch blocks inside the handler
while the test queues more work, so what the next batch holds does not depend on scheduling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

import pytest

from app.errors import DeadlineExceeded, InternalError, NotReady, QueueFull
from app.runtime.batcher import Batcher, Completed, Limits, StopReason, _Item


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


def later(seconds: float = 30.0) -> float:
    return time.perf_counter() + seconds


class Recorder:
    """A batch handler that records every batch, can be held at a gate, and doubles payloads."""

    def __init__(self, gated: bool = False):
        self.batches: list[list[Any]] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.entered = asyncio.Event()
        self.result: Callable[[list[Any]], Sequence[Any]] = lambda batch: [p * 2 for p in batch]
        self.stops: list[StopReason] = []
        """The stop reason each batch was given (polled by the compute path between chunks)."""

    async def __call__(self, batch: list[Any], stop: StopReason) -> Sequence[Any]:
        self.batches.append(list(batch))
        self.stops.append(stop)
        self.entered.set()
        await self.gate.wait()
        return self.result(batch)

    @property
    def payloads(self) -> list[Any]:
        return [p for batch in self.batches for p in batch]


class Observer:
    def __init__(self) -> None:
        self.formed: list[tuple[int, int]] = []
        self.dropped: list[str] = []
        self.queue: list[int] = []

    def batch_formed(self, model: str, items: int, rows: int) -> None:
        self.formed.append((items, rows))

    def queue_changed(self, model: str, rows: int) -> None:
        self.queue.append(rows)

    def item_dropped(self, model: str, reason: str) -> None:
        self.dropped.append(reason)


async def hold_first(batcher: Batcher[Any], handler: Recorder, payload: Any = 0,
                     key: Hashable = "k") -> asyncio.Task[Completed]:
    """Submit one item and wait until the handler is holding it at the gate."""
    task = asyncio.create_task(batcher.submit(payload, key, 1, later()))
    await asyncio.wait_for(handler.entered.wait(), 5)
    return task


async def queue_many(batcher: Batcher[Any], items: Sequence[tuple[Any, Hashable, int]],
                     deadline: float | None = None) -> list[asyncio.Task[Completed]]:
    """Submit items as tasks and let each reach the queue (the consumer is busy at the gate)."""
    tasks = []
    for payload, key, rows in items:
        tasks.append(asyncio.create_task(batcher.submit(payload, key, rows, deadline or later())))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return tasks


def test_concurrent_submits_form_one_batch() -> None:
    async def main() -> None:
        handler = Recorder()
        observer = Observer()
        batcher: Batcher[int] = Batcher("m", [handler], Limits(), observer)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i, "k", 1, later()) for i in range(8)))
        assert [r.value for r in results] == [2 * i for i in range(8)]
        assert len(handler.batches) < 8, "concurrent submits were never batched"
        assert max(len(b) for b in handler.batches) > 1
        assert sorted(handler.payloads) == list(range(8))
        assert batcher.computed_items == 8
        assert sum(items for items, _ in observer.formed) == 8
        size_of = {p: len(batch) for batch in handler.batches for p in batch}
        assert [r.batch_items for r in results] == [size_of[i] for i in range(8)]

    run(main)


def test_work_queued_behind_a_running_batch_is_taken_together() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [handler], Limits())
        batcher.start()
        first = await hold_first(batcher, handler, payload=100)
        rest = await queue_many(batcher, [(i, "k", 1) for i in range(5)])
        assert batcher.queued_rows == 5
        handler.gate.set()
        done = await asyncio.gather(first, *rest)
        assert handler.batches == [[100], [0, 1, 2, 3, 4]]
        assert [d.value for d in done] == [200, 0, 2, 4, 6, 8]
        assert [d.batch_items for d in done] == [1, 5, 5, 5, 5, 5]
        assert batcher.computed_items == 6 and batcher.dropped_items == 0
        assert batcher.queued_rows == 0 and batcher.idle

    run(main)


def test_batches_never_mix_keys() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[tuple[str, int]] = Batcher("m", [handler], Limits())
        batcher.start()
        handler.result = lambda batch: [p for p in batch]
        first = await hold_first(batcher, handler, payload=("a", -1), key="a")
        keys = ["a", "b", "a", "b", "c", "a"]
        rest = await queue_many(batcher, [((k, i), k, 1) for i, k in enumerate(keys)])
        handler.gate.set()
        done = await asyncio.gather(first, *rest)
        for batch in handler.batches:
            assert len({key for key, _ in batch}) == 1, f"a batch mixed keys: {batch}"
        assert handler.batches[1:] == [[("a", 0), ("a", 2), ("a", 5)], [("b", 1), ("b", 3)], [("c", 4)]]
        assert [d.value for d in done[1:]] == [(k, i) for i, k in enumerate(keys)]

    run(main)


def test_max_items_is_respected() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [handler], Limits(max_items=3))
        batcher.start()
        first = await hold_first(batcher, handler)
        rest = await queue_many(batcher, [(i, "k", 1) for i in range(7)])
        handler.gate.set()
        await asyncio.gather(first, *rest)
        assert [len(b) for b in handler.batches] == [1, 3, 3, 1]
        assert handler.payloads == [0, 0, 1, 2, 3, 4, 5, 6]

    run(main)


def test_max_rows_is_respected_and_a_big_item_runs_alone() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        observer = Observer()
        batcher: Batcher[int] = Batcher("m", [handler], Limits(max_rows=10), observer)
        batcher.start()
        first = await hold_first(batcher, handler, payload=-1)
        # payload == rows, so the handler's record shows the rows of every batch
        sizes = [4, 4, 4, 25, 3, 12]
        rest = await queue_many(batcher, [(r, "k", r) for r in sizes])
        handler.gate.set()
        done = await asyncio.gather(first, *rest)
        for batch in handler.batches[1:]:
            rows = sum(batch)
            assert rows <= 10 or len(batch) == 1, f"batch over max_rows: {batch}"
        assert [25] in handler.batches and [12] in handler.batches
        assert sorted(handler.payloads[1:]) == sorted(sizes)
        assert all(rows <= 10 or items == 1 for items, rows in observer.formed)
        assert [d.value for d in done[1:]] == [2 * r for r in sizes]

    run(main)


def test_an_item_over_max_rows_at_the_head_of_the_queue_runs_alone() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [handler], Limits(max_rows=10))
        batcher.start()
        first = await hold_first(batcher, handler, payload=-1)
        rest = await queue_many(batcher, [(50, "k", 50), (1, "k", 1), (2, "k", 2)])
        handler.gate.set()
        await asyncio.gather(first, *rest)
        assert handler.batches[1:] == [[50], [1, 2]]

    run(main)


def test_results_reach_the_right_futures_in_order() -> None:
    async def main() -> None:
        handler = Recorder()
        batcher: Batcher[int] = Batcher("m", [handler], Limits(max_items=5))
        batcher.start()
        payloads = list(range(23))
        done = await asyncio.gather(*(batcher.submit(p, "k", 1, later()) for p in payloads))
        assert [d.value for d in done] == [2 * p for p in payloads]
        for d in done:
            assert d.queue_s >= 0 and d.compute_s >= 0 and 1 <= d.batch_items <= 5

    run(main)


def test_per_item_exception_results_fail_only_their_item() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [handler], Limits())
        batcher.start()
        bad = InternalError("item 2 failed")
        handler.result = lambda batch: [bad if p == 2 else p * 2 for p in batch]
        first = await hold_first(batcher, handler, payload=0)
        rest = await queue_many(batcher, [(i, "k", 1) for i in (1, 2, 3)])
        handler.gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        assert [r.value for r in results if isinstance(r, Completed)] == [0, 2, 6]
        assert results[2] is bad

    run(main)


def test_wrong_result_count_fails_the_whole_batch_loudly_and_serving_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [handler], Limits())
        batcher.start()
        first = await hold_first(batcher, handler, payload=0)
        handler.result = lambda batch: [p * 2 for p in batch][:-1]  # one result short
        rest = await queue_many(batcher, [(i, "k", 1) for i in (1, 2, 3)])
        handler.gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        for r in results:
            assert isinstance(r, InternalError), r
            assert "returned" in r.detail and "results for" in r.detail
        assert any("failed" in rec.getMessage() for rec in caplog.records), "not logged"
        handler.result = lambda batch: [p * 2 for p in batch]
        again = await batcher.submit(21, "k", 1, later())
        assert again.value == 42

    run(main)


def test_a_handler_that_raises_fails_its_batch_with_internal_error_and_serving_goes_on() -> None:
    async def main() -> None:
        calls = 0

        async def flaky(batch: list[int], stop: StopReason) -> list[int]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("boom")
            return [p + 1 for p in batch]

        batcher: Batcher[int] = Batcher("m", [flaky], Limits())
        batcher.start()
        with pytest.raises(InternalError) as info:
            await batcher.submit(1, "k", 1, later())
        assert "boom" not in info.value.detail  # the traceback goes to the log, not the client
        assert (await batcher.submit(1, "k", 1, later())).value == 2

    run(main)


def test_an_item_whose_deadline_passes_while_queued_is_never_computed() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        observer = Observer()
        batcher: Batcher[int] = Batcher("m", [handler], Limits(), observer)
        batcher.start()
        first = await hold_first(batcher, handler, payload=0)
        short = asyncio.create_task(batcher.submit(7, "k", 1, time.perf_counter() + 0.05))
        patient = asyncio.create_task(batcher.submit(8, "k", 1, later()))
        with pytest.raises(DeadlineExceeded):
            await short
        handler.gate.set()
        assert (await first).value == 0
        assert (await patient).value == 16
        assert 7 not in handler.payloads
        assert handler.payloads == [0, 8]
        assert batcher.computed_items == 2
        assert batcher.dropped_items == 1
        assert len(observer.dropped) == 1

    run(main)


def test_deadline_already_passed_at_submit() -> None:
    async def main() -> None:
        handler = Recorder()
        batcher: Batcher[int] = Batcher("m", [handler], Limits())
        batcher.start()
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(1, "k", 1, time.perf_counter() - 1)
        await asyncio.sleep(0.01)
        assert handler.batches == [] and batcher.computed_items == 0

    run(main)


def test_a_queued_item_past_its_deadline_is_dropped_by_the_consumer() -> None:
    """The consumer's own check: an expired item still queued gets DeadlineExceeded, uncomputed."""

    async def main() -> None:
        handler = Recorder(gated=True)
        observer = Observer()
        batcher: Batcher[int] = Batcher("m", [handler], Limits(), observer)
        batcher.start()
        first = await hold_first(batcher, handler, payload=0)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Completed] = loop.create_future()
        expired = _Item(5, "k", 1, time.perf_counter() - 0.001, future)
        batcher._queue.append(expired)
        batcher._queued_rows += 1
        handler.gate.set()
        await first
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(future, 5)
        assert 5 not in handler.payloads
        assert batcher.computed_items == 1 and batcher.dropped_items == 1
        assert observer.dropped == ["deadline"]
        assert batcher.queued_rows == 0

    run(main)


def test_a_cancelled_submit_is_dropped_before_compute() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        observer = Observer()
        batcher: Batcher[int] = Batcher("m", [handler], Limits(), observer)
        batcher.start()
        first = await hold_first(batcher, handler, payload=0)
        (gone,) = await queue_many(batcher, [(9, "k", 1)])
        assert batcher.queued_rows == 1
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        handler.gate.set()
        await first
        assert (await batcher.submit(3, "k", 1, later())).value == 6
        assert 9 not in handler.payloads
        assert handler.payloads == [0, 3]
        assert batcher.computed_items == 2
        assert batcher.dropped_items == 1
        assert observer.dropped == ["cancelled"]
        assert batcher.queued_rows == 0

    run(main)


def test_queue_full_is_429_with_retry_after() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [handler], Limits(max_queue_rows=5))
        batcher.start()
        first = await hold_first(batcher, handler, payload=0)
        queued = await queue_many(batcher, [(1, "k", 3)])
        with pytest.raises(QueueFull) as info:
            await batcher.submit(2, "k", 3, later())
        assert info.value.status == 429
        assert int(info.value.headers["Retry-After"]) >= 1
        assert "queue is full" in info.value.detail
        # what still fits is accepted
        small = await queue_many(batcher, [(3, "k", 2)])
        handler.gate.set()
        done = await asyncio.gather(first, *queued, *small)
        assert [d.value for d in done] == [0, 2, 6]
        assert 2 not in handler.payloads

    run(main)


def test_drain_finishes_queued_work_then_refuses_new_work() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [handler], Limits(max_items=2))
        batcher.start()
        first = await hold_first(batcher, handler, payload=0)
        queued = await queue_many(batcher, [(i, "k", 1) for i in (1, 2, 3)])
        draining = asyncio.create_task(batcher.drain(timeout=10))
        await asyncio.sleep(0)
        with pytest.raises(NotReady) as info:
            await batcher.submit(4, "k", 1, later())
        assert info.value.status == 503 and "Retry-After" in info.value.headers
        handler.gate.set()
        assert await draining is True
        done = await asyncio.gather(first, *queued)
        assert [d.value for d in done] == [0, 2, 4, 6]
        assert batcher.idle and batcher.computed_items == 4
        with pytest.raises(NotReady):
            await batcher.submit(5, "k", 1, later())
        assert 4 not in handler.payloads and 5 not in handler.payloads

    run(main)


def test_drain_that_runs_out_of_time_answers_what_is_left() -> None:
    async def main() -> None:
        handler = Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [handler], Limits())
        batcher.start()
        first = await hold_first(batcher, handler, payload=0)
        (queued,) = await queue_many(batcher, [(1, "k", 1)])
        assert await batcher.drain(timeout=0.05) is False
        with pytest.raises(NotReady):
            await queued
        with pytest.raises(NotReady):  # the running batch is answered too, not left hanging
            await asyncio.wait_for(first, 5)

    run(main)


def test_several_consumers_share_the_queue() -> None:
    async def main() -> None:
        a, b = Recorder(gated=True), Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [a, b], Limits(max_items=2))
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i, "k", 1, later())) for i in range(6)]
        await asyncio.wait_for(a.entered.wait(), 5)
        await asyncio.wait_for(b.entered.wait(), 5)
        a.gate.set()
        b.gate.set()
        done = await asyncio.gather(*tasks)
        assert [d.value for d in done] == [2 * i for i in range(6)]
        assert a.batches and b.batches
        assert sorted(a.payloads + b.payloads) == list(range(6))

    run(main)


@pytest.mark.parametrize("shared", [True, False])
def test_a_consumer_takes_its_share_and_leaves_the_rest_to_the_others(shared: bool) -> None:
    """Two consumers with shared limits (a CPU model's workers): a freed one takes half of what is
    queued (items and work rows), not all of it, so the other can start on the rest when it
    frees instead of waiting for one long batch. Without (a GPU's workers), all that fits."""
    async def main() -> None:
        a, b = Recorder(gated=True), Recorder(gated=True)
        batcher: Batcher[int] = Batcher("m", [a, b], Limits(shared=shared))
        batcher.start()
        first = await hold_first(batcher, a, payload=100)
        second = await hold_first(batcher, b, payload=200)
        rest = await queue_many(batcher, [(i, "k", 1) for i in range(7)] + [(7, "k", 5)])
        assert batcher.queued_rows == 12
        a.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *rest[:7]), 5)
        # 8 queued, 12 rows: half is 4 items and 6 rows; then 2 of the 4 left, 1 of the 2 left,
        # and item 7 (5 rows, over half of what is queued: the head of a batch always runs).
        assert a.batches == ([[100], [0, 1, 2, 3], [4, 5], [6], [7]] if shared else [[100], list(range(8))])
        b.gate.set()
        assert (await asyncio.wait_for(second, 5)).value == 400
        assert b.batches == [[200]] and (await rest[7]).value == 14

    run(main)


def test_max_delay_waits_for_more_work() -> None:
    async def main() -> None:
        handler = Recorder()
        batcher: Batcher[int] = Batcher("m", [handler], Limits(max_delay_s=0.3))
        batcher.start()
        one = asyncio.create_task(batcher.submit(1, "k", 1, later()))
        await asyncio.sleep(0.01)
        two = asyncio.create_task(batcher.submit(2, "k", 1, later()))
        await asyncio.gather(one, two)
        assert handler.batches == [[1, 2]]

    run(main)


def test_a_batcher_needs_a_handler() -> None:
    with pytest.raises(ValueError):
        Batcher("m", [], Limits())
