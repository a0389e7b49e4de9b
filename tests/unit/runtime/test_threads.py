"""The CPU thread policy (app/runtime/threads.py): every core for a batch of heavy items, one core
spare for light items (a lone one too), the cores shared between replicas; the work rows it weighs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.inference.engine import ExplainWork, PredictWork, work_rows
from app.inference.methods import METHODS
from app.inference.params import resolve_params
from app.runtime.threads import HEAVY_ITEM_FLOPS, CpuThreads, shares

MLP_FLOPS = 2 * (30 * 64 + 64 * 32 + 32 * 2)
"""breast-cancer's MLP 30-64-32-2: two floating-point operations per multiply-add."""
SHAPES_FLOPS = 24_510_976
"""The shapes CNN at 128 x 128, as FlopCounterMode counts it."""


@pytest.mark.parametrize(("cores", "replicas", "expected"), [
    (2, 1, (2, 1)), (16, 1, (16, 15)), (16, 4, (4, 3)), (2, 2, (1, 1)), (3, 4, (1, 1)),
])
def test_cores_are_shared_between_replicas(cores: int, replicas: int, expected: tuple[int, int]) -> None:
    assert shares(cores, replicas) == expected


def test_one_core_or_an_operator_limit_means_no_policy() -> None:
    assert CpuThreads.for_replicas(1, MLP_FLOPS, cores=1) is None
    assert CpuThreads.for_replicas(1, MLP_FLOPS, cores=torch.get_num_threads() + 1) is None


def test_a_lone_item_takes_every_core_only_if_it_is_heavy() -> None:
    tabular_ig = CpuThreads(every=8, spare=7, flops_per_row=MLP_FLOPS)
    assert tabular_ig.threads_for(items=1, rows=34) == 7  # one IG request of 34 rows: 0.27 MFLOP
    assert tabular_ig.threads_for(items=1, rows=64 * 1000) == 8  # 64 rows at 1000 steps: 500 MFLOP
    assert CpuThreads(every=8, spare=7, flops_per_row=SHAPES_FLOPS).threads_for(items=1, rows=1) == 8


def test_light_items_leave_a_core_for_the_event_loop() -> None:
    tabular_ig = CpuThreads(every=2, spare=1, flops_per_row=MLP_FLOPS)
    assert tabular_ig.threads_for(items=32, rows=32 * 34) == 1  # 32 IG requests of 34 rows: 0.27 MFLOP each
    assert tabular_ig.threads_for(items=64, rows=64) == 1  # predictions


def test_heavy_items_take_every_core() -> None:
    shapes_gradcam = CpuThreads(every=2, spare=1, flops_per_row=SHAPES_FLOPS)
    assert shapes_gradcam.threads_for(items=64, rows=64) == 2  # one 25 MFLOP row per request
    shapes_ig = CpuThreads(every=2, spare=1, flops_per_row=SHAPES_FLOPS)
    assert shapes_ig.threads_for(items=16, rows=16 * 18) == 2  # 18 rows of 25 MFLOP per request
    resnet = CpuThreads(every=16, spare=15, flops_per_row=3_628_146_688)
    assert resnet.threads_for(items=8, rows=8) == 16  # resnet18 predictions


def test_the_threshold_is_per_item_not_per_batch() -> None:
    per_row = HEAVY_ITEM_FLOPS // 10
    threads = CpuThreads(every=4, spare=3, flops_per_row=per_row)
    assert threads.threads_for(items=64, rows=64 * 9) == 3  # a big batch of light items
    assert threads.threads_for(items=2, rows=2 * 10) == 4  # a small batch of heavy ones


def test_uncounted_flops_count_as_light() -> None:
    assert CpuThreads(every=2, spare=1, flops_per_row=0).threads_for(items=4, rows=400) == 1


def test_a_batch_sets_the_threads_of_the_calling_thread() -> None:
    before = torch.get_num_threads()
    try:
        threads = CpuThreads(every=2, spare=1, flops_per_row=HEAVY_ITEM_FLOPS // 4)
        with threads.batch(items=8, rows=8):
            assert torch.get_num_threads() == 1
        with threads.batch(items=1, rows=4):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_work_rows_are_instances_times_the_methods_passes() -> None:
    x = np.zeros((3, 30), dtype=np.float32)
    assert work_rows(PredictWork(x)) == 3
    params = resolve_params(METHODS["integrated_gradients"].params, {}, {"n_steps": 16})
    assert work_rows(ExplainWork(x, (None,) * 3, "integrated_gradients", params)) == 3 * (16 + 2)


def test_replicas_follow_the_size_of_a_row() -> None:
    from app.runtime.threads import cpu_replicas

    assert cpu_replicas(MLP_FLOPS, cores=2) == 1  # requests that are mostly the event loop's work
    assert cpu_replicas(SHAPES_FLOPS, cores=2) == 2  # a batch per core, one thread each
    assert cpu_replicas(3_628_146_688, cores=2) == 2  # resnet18: two replicas sharing the cores
    assert cpu_replicas(SHAPES_FLOPS, cores=1) == 1
    assert cpu_replicas(SHAPES_FLOPS, cores=torch.get_num_threads() + 1) == 1  # the operator's OMP_NUM_THREADS


def test_a_mid_sized_model_runs_one_thread_per_replica() -> None:
    threads = CpuThreads.for_replicas(2, SHAPES_FLOPS, cores=2, share=CpuThreads.share_for(2, SHAPES_FLOPS, cores=2))
    assert threads is not None and threads.share is None
    with threads.batch(items=32, rows=32) as count:
        assert count == 1


def test_a_large_models_replicas_share_the_cores_they_compute_on() -> None:
    resnet = 3_628_146_688
    share = CpuThreads.share_for(2, resnet, cores=2)
    assert share is not None
    first, second = (CpuThreads.for_replicas(2, resnet, cores=2, share=share) for _ in range(2))
    assert first is not None and second is not None
    before = torch.get_num_threads()
    try:
        with first.batch(items=1, rows=17) as alone:
            assert alone == 2  # every core while the other replica is idle
            with second.batch(items=8, rows=8) as beside:
                assert beside == 1  # both computing: one each
        with second.batch(items=8, rows=8) as again:
            assert again == 2
    finally:
        torch.set_num_threads(before)
