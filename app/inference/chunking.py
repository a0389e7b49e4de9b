"""How many work rows one forward+backward should carry on a CPU: measured, not guessed.

On a CPU a large chunk is not faster per row: once a chunk's activations outgrow the caches,
every layer streams them from memory. ResNet-50 integrated gradients (32 steps, 2 cores) runs in
3.3 s with chunks of 4-8 rows and in 5.9 s as one chunk of 32 (bench/results/history.md), while a
small MLP keeps gaining up to thousands of rows. So at start-up each CPU model is timed at
growing chunk sizes and its chunks are capped at the best one. GPUs are not probed: they want
the largest chunk that fits, which `MAX_BATCH_ROWS` and the out-of-memory halving already give.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from app.inference.loading import LoadedModel, example_input
from app.inference.memory import is_out_of_memory

logger = logging.getLogger(__name__)

_MIN_TIMED_S = 0.02
"""Each size is timed over repeated steps for at least this long (after one untimed step)."""
_NEAR_BEST = 0.9
"""The largest size within this share of the best rate wins: the sizes around the best are
within the timing noise, and fewer chunks mean fewer Captum calls and hook set-ups."""


@dataclass(frozen=True)
class ChunkProbe:
    rows: int
    """The chosen chunk: the largest probed size within 10% of the best rows/s."""
    rates: dict[int, float]
    """Probed size -> forward+backward rows per second."""
    seconds: float


def _step_seconds(model: LoadedModel, rows: int, min_seconds: float) -> float:
    """Mean seconds of one forward+backward (gradient with respect to the input) over `rows`."""
    x = example_input(model.spec, rows).to(model.device)
    x = (x + 0.01 * torch.rand_like(x)).requires_grad_(True)

    def step() -> None:
        (grad,) = torch.autograd.grad(model.module(x).sum(), x)
        del grad

    step()  # first use of this size: allocations, kernel selection
    steps, started = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return elapsed / steps


def probe_chunk_rows(model: LoadedModel, max_rows: int, budget_s: float) -> ChunkProbe:
    """Time sizes 1, 2, 4, ... up to `max_rows` (torch's current intra-op threads); stop early when
    two sizes in a row are slower than the best so far, when a size runs out of memory, or when
    the next size would not finish within `budget_s` (a step of twice the rows takes about twice
    as long)."""
    started = time.perf_counter()
    rates: dict[int, float] = {}
    sizes = [1 << i for i in range(max_rows.bit_length()) if (1 << i) < max_rows] + [max_rows]
    with torch.enable_grad():
        worse = 0
        for rows in sizes:
            if rates:
                last = max(rates)
                next_step = rows / rates[last]  # at the last size's rate
                if time.perf_counter() - started + next_step + max(next_step, _MIN_TIMED_S) > budget_s:
                    break
            try:
                rates[rows] = rows / _step_seconds(model, rows, _MIN_TIMED_S)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if model.device.type == "cuda":
                    torch.cuda.empty_cache()
                break
            if rates[rows] < max(rates.values()):
                worse += 1
                if worse == 2:
                    break
            else:
                worse = 0
    if not rates:  # not even one row fits: requests will say so (413), the start-up goes on
        return ChunkProbe(1, rates, time.perf_counter() - started)
    best = max(rates.values())
    chosen = max(rows for rows, rate in rates.items() if rate >= _NEAR_BEST * best)
    return ChunkProbe(chosen, rates, time.perf_counter() - started)
