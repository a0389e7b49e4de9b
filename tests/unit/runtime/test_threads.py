"""The CPU thread policy (app/runtime/threads.py): every core for a batch of one or of heavy items,
one core spare for light items, the cores shared between replicas; the work rows it weighs."""

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


def test_a_batch_of_one_takes_every_core_whatever_it_costs() -> None:
    threads = CpuThreads(every=8, spare=7, flops_per_row=MLP_FLOPS)
    assert threads.threads_for(items=1, rows=34) == 8


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


def test_for_batch_sets_the_threads_of_the_calling_thread() -> None:
    before = torch.get_num_threads()
    try:
        threads = CpuThreads(every=2, spare=1, flops_per_row=MLP_FLOPS)
        threads.for_batch(items=8, rows=8)
        assert torch.get_num_threads() == 1
        threads.for_batch(items=1, rows=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_work_rows_are_instances_times_the_methods_passes() -> None:
    x = np.zeros((3, 30), dtype=np.float32)
    assert work_rows(PredictWork(x)) == 3
    params = resolve_params(METHODS["integrated_gradients"].params, {}, {"n_steps": 16})
    assert work_rows(ExplainWork(x, (None,) * 3, "integrated_gradients", params)) == 3 * (16 + 2)
