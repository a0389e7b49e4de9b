"""Intra-op threads of a CPU replica's worker, chosen per batch from what the batch costs.

Every core goes to compute when the batch is all there is to do (a batch of one: the service
is idle) or when each of its items is real compute (a convolutional network: resnet18 is 3.6
GFLOP per row; GradCAM on the small shapes CNN one 25 MFLOP row per request, integrated
gradients on it 18 such rows): such an item costs as much CPU as its request's HTTP, JSON,
decoding and rendering or more, and those run in other processes and threads the scheduler
fits around the compute (OpenMP threads that wait sleep: OMP_WAIT_POLICY=PASSIVE, app/__main__.py).

One core is left out of the OpenMP team for a batch of light items (a 30-feature MLP: 8 kFLOP
per row, 0.3 MFLOP for an integrated-gradients request), which is mostly the event loop's work:
with every core in the team, a team thread descheduled by the event loop stalls the team at its
barrier (on 2 cores, batched integrated gradients on the MLP ran 3x slower, with spinning waits).

The measure is the model's floating-point operations per row (counted once at load:
`ModelFacts.flops_per_row`) times the item's work rows: deterministic, unlike a timed probe on
a busy host. Applies only while torch has its default thread count (all cores); a count lowered
by the operator (OMP_NUM_THREADS) is kept. Several replicas share the cores evenly.
"""

from __future__ import annotations

import os

import torch

HEAVY_ITEM_FLOPS = 10_000_000
"""Forward FLOPs per item from which a batch takes every core: about 1 ms of forward and
backward on one core (~30 GFLOP/s in float32 for a small convolution), as much as the event
loop's own work for a request (0.6-1.2 ms on the 2-core benchmark host). On 2 cores, shapes
GradCAM at 64 concurrent: 228-279 req/s with a core spare, 311-346 with both (history.md)."""

_STARTING_THREADS = torch.get_num_threads()
"""Torch's intra-op thread count before any worker changed it (OMP_NUM_THREADS, else all cores)."""


def host_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def shares(cores: int, replicas: int) -> tuple[int, int]:
    """A replica's threads for a batch that takes every core, and for one that leaves one spare:
    the cores shared evenly between `replicas` replicas, at least one each."""
    return max(1, cores // replicas), max(1, (cores - 1) // replicas)


class CpuThreads:
    """Intra-op threads of one replica's worker thread, set per batch (on change only: a new
    count costs ~2 ms to regroup the OpenMP team)."""

    def __init__(self, every: int, spare: int, flops_per_row: int):
        self.every, self.spare = every, spare
        """Threads for a batch of one or of heavy items; threads for a batch of light items."""
        self.flops_per_row = flops_per_row
        self._current = 0

    @classmethod
    def for_replicas(cls, replicas: int, flops_per_row: int, cores: int | None = None) -> CpuThreads | None:
        """The policy of one of `replicas` replicas on this host's cores; None where it does not
        apply (one core, or the operator lowered torch's thread count)."""
        cores = host_cores() if cores is None else cores
        if cores < 2 or cores > _STARTING_THREADS:
            return None
        return cls(*shares(cores, replicas), flops_per_row)

    def threads_for(self, items: int, rows: int) -> int:
        """Threads for a batch of `items` items costing `rows` work rows in all. A model whose
        FLOPs could not be counted (0) is treated as light."""
        if items <= 1:
            return self.every
        per_item = self.flops_per_row * rows / items
        return self.every if per_item >= HEAVY_ITEM_FLOPS else self.spare

    def for_batch(self, items: int, rows: int) -> None:
        """Call on the worker thread (the OpenMP thread count is per calling thread)."""
        want = self.threads_for(items, rows)
        if want != self._current:
            torch.set_num_threads(want)
            self._current = want
