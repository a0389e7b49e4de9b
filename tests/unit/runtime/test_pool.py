"""Failure isolation in the worker pool (`isolate`) and the worker's own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
import torch

from app.errors import InternalError, InvalidInput, PayloadTooLarge, ServiceError
from app.inference.memory import is_out_of_memory
from app.runtime.pool import RowBudget, Worker, isolate


class FakeRun:
    """A batch function: x -> 10 * x, failing on demand; records every call it gets."""

    def __init__(self, fail: object = None, oom_over: int | None = None, oom_alone: object = None):
        self.calls: list[list[object]] = []
        self.fail = fail
        self.oom_over = oom_over
        self.oom_alone = oom_alone

    def __call__(self, work: list[object]) -> list[object]:
        self.calls.append(list(work))
        if self.oom_over is not None and len(work) > self.oom_over:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.oom_alone is not None and self.oom_alone in work:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        if isinstance(self.fail, BaseException) and any(w == "bad" for w in work):
            raise self.fail
        return [w * 10 for w in work]  # type: ignore[operator]


def test_a_good_batch_runs_once() -> None:
    run = FakeRun()
    assert isolate(run, [1, 2, 3]) == [10, 20, 30]
    assert run.calls == [[1, 2, 3]]


def test_an_exception_for_one_item_fails_only_that_item(caplog: pytest.LogCaptureFixture) -> None:
    run = FakeRun(fail=ValueError("cannot compute this one"))
    results = isolate(run, [1, 2, "bad", 4], "request")
    assert results[:2] == [10, 20] and results[3] == 40
    error = results[2]
    assert isinstance(error, InternalError)
    assert "request" in error.detail and "ValueError" in error.detail
    assert "cannot compute" not in error.detail  # the message stays in the log
    assert run.calls[0] == [1, 2, "bad", 4]
    assert sorted(map(str, run.calls[1:])) == sorted(map(str, [[1], [2], ["bad"], [4]]))
    assert any("cannot compute" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_out_of_memory_splits_the_batch_and_recovers_every_item() -> None:
    run = FakeRun(oom_over=2)
    work = list(range(1, 8))
    assert isolate(run, work) == [10 * w for w in work]
    # halved until it fits (2 rows), each item computed exactly once
    assert run.calls == [work, [1, 2, 3], [1], [2, 3], [4, 5, 6, 7], [4, 5], [6, 7]]


def test_cpu_allocation_failure_counts_as_out_of_memory() -> None:
    cpu_oom = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    assert is_out_of_memory(cpu_oom)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    calls: list[int] = []

    def run(work: list[int]) -> list[int]:
        calls.append(len(work))
        if len(work) > 1:
            raise cpu_oom
        return work

    assert isolate(run, [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert calls == [4, 2, 1, 1, 2, 1, 1]


def test_an_item_that_alone_does_not_fit_gets_413() -> None:
    run = FakeRun(oom_alone=3)
    results = isolate(run, [1, 2, 3, 4], "request")
    assert results[0] == 10 and results[1] == 20 and results[3] == 40
    error = results[2]
    assert isinstance(error, PayloadTooLarge)
    assert error.status == 413
    assert "alone does not fit in the device's memory" in error.detail
    assert "fewer instances" in error.detail


def test_a_single_item_batch_that_does_not_fit() -> None:
    (error,) = isolate(FakeRun(oom_alone=5), [5])
    assert isinstance(error, PayloadTooLarge)


def test_a_service_error_for_one_item_stays_that_items_error() -> None:
    mine = InvalidInput("instance 0: target 9 is out of range 0..1")
    run = FakeRun(fail=mine)
    results = isolate(run, [1, "bad", 3])
    assert results[0] == 10 and results[2] == 30
    assert results[1] is mine and isinstance(results[1], ServiceError)
    assert results[1].status == 422
    (alone,) = isolate(FakeRun(fail=mine), ["bad"])
    assert alone is mine


def test_a_wrong_result_count_is_an_internal_error() -> None:
    with pytest.raises(InternalError):
        isolate(lambda work: work[:-1], [1, 2, 3])


def test_worker_handle_runs_on_its_own_thread() -> None:
    seen: list[tuple[str, int]] = []

    def run(work: list[int]) -> Sequence[int]:
        thread = threading.current_thread()
        seen.append((thread.name, thread.ident or 0))
        return [w + 1 for w in work]

    worker: Worker[int, int] = Worker("shapes-0", run)

    async def main() -> int:
        assert await worker.handle([1, 2], lambda: None) == [2, 3]
        assert await worker.handle([5], lambda: None) == [6]
        return threading.get_ident()

    try:
        loop_thread = asyncio.run(main())
    finally:
        worker.close()
    assert len(seen) == 2
    names = {name for name, _ in seen}
    idents = {ident for _, ident in seen}
    assert len(idents) == 1, "one replica, one thread"
    assert loop_thread not in idents and threading.get_ident() not in idents
    (name,) = names
    assert name.startswith("worker-shapes-0")


def test_worker_handle_isolates_failures() -> None:
    worker: Worker[object, object] = Worker("m-0", FakeRun(fail=ValueError("x")))
    try:
        results = asyncio.run(worker.handle([1, "bad"], lambda: None))
    finally:
        worker.close()
    assert results[0] == 10 and isinstance(results[1], InternalError)


def test_row_budget_halves_on_out_of_memory_and_remembers() -> None:
    budget = RowBudget("m", 64, floor=8)
    tried: list[int] = []

    def compute(rows: int) -> list[int]:
        tried.append(rows)
        if rows > 16:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [rows]

    assert budget.run(compute) == [16]
    assert tried == [64, 32, 16]
    assert budget.rows == 16
    tried.clear()
    assert budget.run(compute) == [16]
    assert tried == [16], "a later batch starts from the learnt budget"


def test_row_budget_gives_up_at_its_floor_and_passes_other_errors() -> None:
    budget = RowBudget("m", 32, floor=8)

    def always_oom(rows: int) -> list[int]:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        budget.run(always_oom)
    assert budget.rows == 8

    def broken(rows: int) -> list[int]:
        raise ValueError("not memory")

    other = RowBudget("m", 32)
    with pytest.raises(ValueError):
        other.run(broken)
    assert other.rows == 32
