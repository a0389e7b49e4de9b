"""A worker's lanes (app/runtime/pool.py `Lanes`): a batch split by work rows across replicas that
compute side by side, each on its own thread, the results in the batch's order; the lanes' threads
watch the worker's stop reason, and every lane has finished before the batch returns or fails."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from app.errors import DeadlineExceeded
from app.inference.interrupt import Interrupted, checkpoint, watching
from app.runtime.pool import Lanes, isolate, split_by_rows
from app.runtime.threads import CpuThreads, Occupancy

SHAPES_FLOPS = 24_510_976
RESNET18_FLOPS = 3_628_146_688


@pytest.mark.parametrize(("rows", "parts", "expected"), [
    ([18] * 4, 2, [[0, 1], [2, 3]]),
    ([100, 1, 1], 2, [[0], [1, 2]]),
    ([1, 1, 100], 2, [[0, 1], [2]]),
    ([5], 2, [[0]]),
    ([1, 1, 1], 4, [[0], [1], [2]]),
    ([3, 3, 3, 3], 1, [[0, 1, 2, 3]]),
])
def test_pieces_are_consecutive_and_about_equal_in_rows(rows: list[int], parts: int,
                                                         expected: list[list[int]]) -> None:
    assert split_by_rows(list(range(len(rows))), rows, parts) == expected


class Recording:
    """A lane: x -> (lane, 10 * x), recording its thread, its OpenMP thread count and overlap."""

    def __init__(self, lane: int, barrier: threading.Barrier | None = None, fail_on: int | None = None):
        self.lane = lane
        self.barrier = barrier
        self.fail_on = fail_on
        self.threads: list[str] = []
        self.omp: list[int] = []
        self.finished = 0

    def __call__(self, work: list[int]) -> list[tuple[int, int]]:
        self.threads.append(threading.current_thread().name)
        self.omp.append(torch.get_num_threads())
        if self.barrier is not None:
            self.barrier.wait(timeout=10)  # both lanes inside at once, or this fails
        try:
            if self.fail_on is not None and self.fail_on in work:
                raise ValueError(f"lane {self.lane} failed")
            return [(self.lane, 10 * w) for w in work]
        finally:
            self.finished += 1


def _policy() -> CpuThreads:
    return CpuThreads(every=2, spare=1, flops_per_row=SHAPES_FLOPS, lanes=2)


def test_a_batch_is_split_across_the_lanes_that_compute_side_by_side() -> None:
    barrier = threading.Barrier(2)
    lanes = [Recording(0, barrier), Recording(1, barrier)]
    own = Lanes("m", lanes, _policy(), rows_of=lambda w: 1)
    before = torch.get_num_threads()
    try:
        out = own.run([1, 2, 3, 4])
    finally:
        own.close()
        torch.set_num_threads(before)
    assert out == [(0, 10), (0, 20), (1, 30), (1, 40)]
    assert lanes[0].threads == [threading.current_thread().name]  # the first on the worker's own thread
    assert lanes[1].threads[0].startswith("worker-m-lane")
    assert lanes[0].omp == [1] and lanes[1].omp == [1]


def test_a_lone_item_runs_on_the_first_lane() -> None:
    lanes = [Recording(0), Recording(1)]
    own = Lanes("m", lanes, _policy(), rows_of=lambda w: 18)
    try:
        assert own.run([7]) == [(0, 70)]
    finally:
        own.close()
    assert lanes[1].threads == []


def test_a_large_item_alone_takes_the_cores_of_the_models_idle_workers_only() -> None:
    """Two workers of one lane of a large network (the CPU layout for a ResNet), sharing a count of
    the workers computing: a lone item takes both cores while the other worker is idle, and its
    one core while the other computes."""
    occupancy = Occupancy()
    policies = [CpuThreads.for_worker(2, 1, RESNET18_FLOPS, cores=2, occupancy=occupancy) for _ in range(2)]
    inside, release = threading.Event(), threading.Event()

    class Holding(Recording):
        def __call__(self, work: list[int]) -> list[tuple[int, int]]:
            inside.set()
            release.wait(10)
            return super().__call__(work)

    held, alone = Holding(0), Recording(1)
    first = Lanes("a", [held], policies[0], rows_of=lambda w: 1)
    second = Lanes("b", [alone], policies[1], rows_of=lambda w: 1)
    before = torch.get_num_threads()
    try:
        assert second.run([1]) == [(1, 10)]
        other = threading.Thread(target=first.run, args=([5],))
        other.start()
        assert inside.wait(10)
        assert second.run([2]) == [(1, 20)]
        release.set()
        other.join(10)
    finally:
        release.set()
        torch.set_num_threads(before)
    assert alone.omp == [2, 1]
    assert held.omp == [2] and occupancy.busy == 0


def test_a_failing_lane_fails_the_batch_after_every_lane_finished() -> None:
    slow = threading.Event()

    class Slow(Recording):
        def __call__(self, work: list[int]) -> list[tuple[int, int]]:
            time.sleep(0.2)
            slow.set()
            return super().__call__(work)

    lanes = [Recording(0, fail_on=1), Slow(1)]
    own = Lanes("m", lanes, _policy(), rows_of=lambda w: 1)
    try:
        with pytest.raises(ValueError, match="lane 0 failed"):
            own.run([1, 2, 3, 4])
        assert slow.is_set() and lanes[1].finished == 1  # its replica is free before the next batch
        # isolate retries item by item, each alone on the first lane: one bad input fails alone.
        results = isolate(own.run, [1, 2, 3, 4])
    finally:
        own.close()
    assert [type(r).__name__ for r in results] == ["InternalError", "tuple", "tuple", "tuple"]
    assert results[1:] == [(0, 20), (0, 30), (0, 40)]


def test_the_lanes_watch_the_workers_stop_reason() -> None:
    class Checking(Recording):
        def __call__(self, work: list[int]) -> list[tuple[int, int]]:
            checkpoint()
            return super().__call__(work)

    own = Lanes("m", [Recording(0), Checking(1)], _policy(), rows_of=lambda w: 1)  # only the second checks
    stopped = DeadlineExceeded("past its deadline")
    try:
        with watching(lambda: None):
            assert len(own.run([1, 2])) == 2
        with watching(lambda: stopped), pytest.raises(Interrupted) as caught:
            own.run([1, 2])
    finally:
        own.close()
    assert caught.value.error is stopped
