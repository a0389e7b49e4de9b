"""The CPU chunk probe: real forward+backward passes of catalog-loaded models, timed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.inference.catalog import load_catalog
from app.inference.chunking import probe_chunk_rows
from app.inference.loading import LoadedModel, load_model
from tests.fixtures import faulty


def loaded(tmp_path: Path, builder: str, **args: object) -> LoadedModel:
    spec = load_catalog(faulty.catalog(tmp_path, {"m": args}, builder=builder))[0]
    return load_model(spec, torch.device("cpu"))


def test_chunks_stop_at_the_size_past_which_rows_get_slower(tmp_path: Path) -> None:
    model = loaded(tmp_path, "cache_cliff", per_row_s=0.001, cliff_rows=8)
    probe = probe_chunk_rows(model, max_rows=4096, budget_s=10.0)
    assert probe.rows == 8
    # two sizes past the cliff were slower than the best, so the sweep stopped there
    assert sorted(probe.rates) == [1, 2, 4, 8, 16, 32]
    assert probe.rates[16] < 0.5 * probe.rates[8]


def test_a_model_that_keeps_gaining_gets_the_largest_chunk(tmp_path: Path) -> None:
    # a fixed cost per forward (like kernel launches): more rows per forward is always faster
    model = loaded(tmp_path, "poisonable", sleep_s=0.002)
    probe = probe_chunk_rows(model, max_rows=48, budget_s=10.0)
    assert sorted(probe.rates) == [1, 2, 4, 8, 16, 32, 48]
    assert probe.rows == 48


def test_an_out_of_memory_size_ends_the_sweep(tmp_path: Path) -> None:
    model = loaded(tmp_path, "poisonable", oom_rows=2)
    net = model.module.net
    assert isinstance(net, faulty.Poisonable)
    probe = probe_chunk_rows(model, max_rows=4096, budget_s=10.0)
    assert net.oom_rows_seen == [4]
    assert sorted(probe.rates) == [1, 2]
    assert probe.rows in (1, 2)


def test_the_budget_bounds_the_sweep(tmp_path: Path) -> None:
    model = loaded(tmp_path, "cache_cliff", per_row_s=0.01, cliff_rows=4096)
    probe = probe_chunk_rows(model, max_rows=4096, budget_s=0.5)
    # sizes of 1..8 rows take 0.02-0.16 s each (one untimed step, then at least 20 ms timed);
    # a size that would end past the budget is not started
    assert probe.seconds <= 0.5 + 0.1
    assert max(probe.rates) <= 16
    assert probe.rows == max(probe.rates)


@pytest.mark.parametrize("max_rows", [1, 3])
def test_sizes_never_exceed_max_rows(tmp_path: Path, max_rows: int) -> None:
    model = loaded(tmp_path, "poisonable")
    probe = probe_chunk_rows(model, max_rows=max_rows, budget_s=10.0)
    assert max(probe.rates) == max_rows and 1 <= probe.rows <= max_rows
