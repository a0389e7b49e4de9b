"""The CPU thread policy (app/runtime/threads.py): light items on one lane with a core spare (a lone
one too), mid-sized ones split across a lane per core, large ones on a worker per core, a lone
heavy item on every core only for a large network whose other workers are idle, the cores shared
between workers; the work rows it weighs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from app.inference.engine import ExplainWork, PredictWork, work_rows
from app.inference.methods import METHODS
from app.inference.params import resolve_params
from app.runtime import threads
from app.runtime.threads import HEAVY_ITEM_FLOPS, CpuThreads, LaneThreads, Occupancy, Plan, cpu_layout, shares

MLP_FLOPS = 2 * (30 * 64 + 64 * 32 + 32 * 2)
"""breast-cancer's MLP 30-64-32-2: two floating-point operations per multiply-add."""
SHAPES_FLOPS = 24_510_976
"""The shapes CNN at 128 x 128, as FlopCounterMode counts it."""
RESNET18_FLOPS = 3_628_146_688


@pytest.mark.parametrize(("cores", "replicas", "expected"), [
    (2, 1, (2, 1)), (16, 1, (16, 15)), (16, 4, (4, 3)), (2, 2, (1, 1)), (3, 4, (1, 1)),
])
def test_cores_are_shared_between_replicas(cores: int, replicas: int, expected: tuple[int, int]) -> None:
    assert shares(cores, replicas) == expected


def test_one_core_or_an_operator_limit_means_no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CpuThreads.for_worker(1, 1, MLP_FLOPS, cores=1) is None
    assert cpu_layout(SHAPES_FLOPS, cores=1) == (1, 1)
    monkeypatch.setattr(threads, "_STARTING_THREADS", 1)  # OMP_NUM_THREADS=1 before torch loaded
    assert CpuThreads.for_worker(1, 1, MLP_FLOPS, cores=2) is None
    assert cpu_layout(SHAPES_FLOPS, cores=2) == (1, 1)
    assert cpu_layout(RESNET18_FLOPS, cores=2) == (1, 1)


def test_workers_and_lanes_follow_the_size_of_a_row() -> None:
    assert cpu_layout(MLP_FLOPS, cores=2) == (1, 1)  # requests that are mostly the event loop's work
    assert cpu_layout(SHAPES_FLOPS, cores=2) == (1, 2)  # one worker, its batches split across two lanes
    assert cpu_layout(SHAPES_FLOPS, cores=16) == (1, 16)
    assert cpu_layout(RESNET18_FLOPS, cores=2) == (2, 1)  # a worker per core, each taking its share
    assert cpu_layout(RESNET18_FLOPS, cores=16) == (16, 1)


def test_light_items_leave_a_core_for_the_event_loop() -> None:
    tabular_ig = CpuThreads(every=2, spare=1, flops_per_row=MLP_FLOPS)
    assert tabular_ig.plan(items=32, rows=32 * 34) == Plan(1, 1)  # 32 IG requests of 34 rows: 0.27 MFLOP each
    assert tabular_ig.plan(items=64, rows=64) == Plan(1, 1)  # predictions
    assert tabular_ig.plan(items=1, rows=34) == Plan(1, 1)  # alone too: a team to wake gains it nothing
    assert tabular_ig.plan(items=1, rows=64 * 1000) == Plan(1, 2)  # 64 rows at 1000 steps: 500 MFLOP


def test_heavy_items_are_split_across_the_lanes_one_thread_each() -> None:
    shapes = CpuThreads(every=2, spare=1, flops_per_row=SHAPES_FLOPS, lanes=2)
    assert shapes.plan(items=64, rows=64) == Plan(2, 1)  # GradCAM: one 25 MFLOP row per request
    assert shapes.plan(items=16, rows=16 * 18) == Plan(2, 1)  # IG: 18 rows per request
    wide = CpuThreads(every=16, spare=15, flops_per_row=SHAPES_FLOPS, lanes=16)
    assert wide.plan(items=4, rows=4) == Plan(4, 4)  # fewer items than lanes: the cores shared by those used


def test_a_heavy_item_alone_takes_every_core_only_for_a_large_network() -> None:
    assert CpuThreads(every=2, spare=1, flops_per_row=SHAPES_FLOPS, lanes=2).plan(items=1, rows=18) == Plan(1, 1)
    assert CpuThreads(every=2, spare=1, flops_per_row=RESNET18_FLOPS, lanes=2).plan(items=1, rows=17) == Plan(1, 2)
    # Workers of one lane (WORKERS_PER_DEVICE set): heavy batches take their share of the cores.
    assert CpuThreads(every=4, spare=3, flops_per_row=SHAPES_FLOPS).plan(items=1, rows=1) == Plan(1, 4)


def test_a_large_item_alone_takes_the_cores_of_idle_workers_only() -> None:
    one_of_two = CpuThreads.for_worker(2, 1, RESNET18_FLOPS, cores=2)
    assert one_of_two is not None and (one_of_two.every, one_of_two.cores) == (1, 2)
    assert one_of_two.plan(items=1, rows=17, others_busy=0) == Plan(1, 2)  # IG of one image, nothing else running
    assert one_of_two.plan(items=1, rows=17, others_busy=1) == Plan(1, 1)  # the other worker computes: its share
    assert one_of_two.plan(items=2, rows=2, others_busy=0) == Plan(1, 1)  # a batch: the other may start any moment
    one_of_four = CpuThreads.for_worker(4, 1, SHAPES_FLOPS, cores=16)
    assert one_of_four is not None
    assert one_of_four.plan(items=1, rows=18, others_busy=0) == Plan(1, 4)  # mid-sized rows: never more than its share


def test_occupancy_counts_the_workers_computing() -> None:
    occupancy = Occupancy()
    started, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def other() -> None:
        with occupancy.computing() as others:
            seen.append(others)
            started.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert started.wait(10)
    with occupancy.computing() as others:
        assert (others, occupancy.busy) == (1, 2)
    release.set()
    thread.join(10)
    assert seen == [0] and occupancy.busy == 0
    with pytest.raises(RuntimeError), occupancy.computing():
        raise RuntimeError("a failed batch")
    assert occupancy.busy == 0


def test_the_threshold_is_per_item_not_per_batch() -> None:
    per_row = HEAVY_ITEM_FLOPS // 10
    threads = CpuThreads(every=4, spare=3, flops_per_row=per_row)
    assert threads.plan(items=64, rows=64 * 9) == Plan(1, 3)  # a big batch of light items
    assert threads.plan(items=2, rows=2 * 10) == Plan(1, 4)  # a small batch of heavy ones


def test_uncounted_flops_count_as_light() -> None:
    assert CpuThreads(every=2, spare=1, flops_per_row=0, lanes=2).plan(items=4, rows=400) == Plan(1, 1)


def test_workers_share_the_cores() -> None:
    policy = CpuThreads.for_worker(4, 1, SHAPES_FLOPS, cores=16)
    assert policy is not None and (policy.every, policy.spare, policy.lanes) == (4, 3, 1)


def test_work_rows_are_instances_times_the_methods_passes() -> None:
    x = np.zeros((3, 30), dtype=np.float32)
    assert work_rows(PredictWork(x)) == 3
    params = resolve_params(METHODS["integrated_gradients"].params, {}, {"n_steps": 16})
    assert work_rows(ExplainWork(x, (None,) * 3, "integrated_gradients", params)) == 3 * (16 + 2)


def test_a_lanes_count_is_not_replaced_by_one_another_thread_set_later() -> None:
    """ATen gives a thread the count last set by any thread on the thread's first use of torch: a
    lane's count, set on a fresh thread, must still be its own after another thread set another."""
    before = torch.get_num_threads()
    counted, go = threading.Event(), threading.Event()
    seen: list[int] = []

    def lane() -> None:
        LaneThreads().set(3)
        counted.set()
        go.wait(10)
        seen.append(torch.get_num_threads())  # the thread's first use of torch after setting its count

    thread = threading.Thread(target=lane)
    try:
        thread.start()
        assert counted.wait(10)
        torch.set_num_threads(1)
        go.set()
        thread.join(10)
    finally:
        go.set()
        torch.set_num_threads(before)
    assert seen == [3]
