"""Replicas of a CPU model and the intra-op threads of their batches, chosen from what a row costs.

The measure is the model's floating-point operations per row (counted once at load:
`ModelFacts.flops_per_row`), times an item's work rows: deterministic, unlike a timed probe on a
busy host. Three sizes of model (bench/results/history.md, 2 cores, channels-last, OpenMP waits
sleeping: OMP_WAIT_POLICY=PASSIVE, app/__main__.py):

- Light rows (under 10 MFLOP: a 30-feature MLP is 8 kFLOP, an integrated-gradients request of
  it 0.3 MFLOP): requests that are mostly the event loop's work. One replica; one core left out
  of its OpenMP team, since with every core in the team a team thread descheduled by the event
  loop stalls the team at its barrier (batched IG on the MLP ran 3x slower, with spinning waits),
  and a lone request gains nothing from a team it has to wake (one tabular IG request: 0.8 ms of
  CPU on one thread, 1.4-1.6 ms on two). An item of many rows (thousands of steps) is heavy and
  gets every core.
- Mid-sized rows (10 to 300 MFLOP: the shapes CNN, 25 MFLOP at 128 px): one replica per core,
  one thread each. Its convolutions are too small for the kernels to split well: two threads
  took more wall time than one (GradCAM of 32 images 14.4 vs 13.3 ms, IG of one image 25-30 vs
  20-23 ms), while two batches side by side on two cores served shapes IG at 32 concurrent at
  72-75 req/s against 58-61.
- Large rows (300 MFLOP and more: resnet18 is 3.6 GFLOP): two replicas sharing the cores. A
  batch takes the cores that the model's other replicas are not computing on when it starts:
  every core alone (resnet18 IG of one image 835 ms on one thread, 442 ms on two), half each when
  both compute (two workers of one thread: TorchServe's best variant on this host).

Applies only while torch has its default thread count (all cores); a count lowered by the
operator (OMP_NUM_THREADS) is kept, and WORKERS_PER_DEVICE, when set, fixes the replicas.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

HEAVY_ITEM_FLOPS = 10_000_000
"""Forward FLOPs per item from which a batch's items are compute rather than the event loop's
work: about 1 ms of forward and backward on one core, as much as the event loop's own work for a
request (0.6-1.2 ms on the 2-core benchmark host)."""
LARGE_ROW_FLOPS = 300_000_000
"""Forward FLOPs per row from which a network's kernels use several threads well: between the
shapes CNN (25 MFLOP, slower on two threads than on one) and resnet18 (3.6 GFLOP, 1.9x faster)."""
LARGE_MODEL_REPLICAS = 2

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


def cpu_replicas(flops_per_row: int, cores: int | None = None) -> int:
    """Replicas of a CPU model by the size of its rows (the module docstring); one where the
    operator lowered torch's thread count or the host has one core."""
    cores = host_cores() if cores is None else cores
    if cores < 2 or cores > _STARTING_THREADS or flops_per_row < HEAVY_ITEM_FLOPS:
        return 1
    if flops_per_row < LARGE_ROW_FLOPS:
        return cores
    return min(cores, LARGE_MODEL_REPLICAS)


class CoreShare:
    """The cores given to a large model's replicas, split between those computing at the time."""

    def __init__(self, cores: int):
        self.cores = cores
        self._busy = 0
        self._lock = threading.Lock()

    @contextmanager
    def computing(self) -> Iterator[int]:
        """While a batch computes: the threads it takes (the cores over the replicas computing)."""
        with self._lock:
            self._busy += 1
            threads = max(1, self.cores // self._busy)
        try:
            yield threads
        finally:
            with self._lock:
                self._busy -= 1


class CpuThreads:
    """Intra-op threads of one replica's worker thread, set per batch (on change only: a new
    count costs ~2 ms to regroup the OpenMP team)."""

    def __init__(self, every: int, spare: int, flops_per_row: int, share: CoreShare | None = None):
        self.every, self.spare = every, spare
        """Threads for a batch of heavy items; threads for a batch of light items."""
        self.flops_per_row = flops_per_row
        self.share = share
        """A large model's: heavy batches take what the other replicas leave (else `every`)."""
        self._current = 0

    @classmethod
    def for_replicas(cls, replicas: int, flops_per_row: int, cores: int | None = None,
                     share: CoreShare | None = None) -> CpuThreads | None:
        """The policy of one of `replicas` replicas on this host's cores; None where it does not
        apply (one core, or the operator lowered torch's thread count). A large model's replicas
        are given one `share`."""
        cores = host_cores() if cores is None else cores
        if cores < 2 or cores > _STARTING_THREADS:
            return None
        return cls(*shares(cores, replicas), flops_per_row, share)

    @staticmethod
    def share_for(replicas: int, flops_per_row: int, cores: int | None = None) -> CoreShare | None:
        """One CoreShare for the replicas of a large model, else None (fixed shares)."""
        cores = host_cores() if cores is None else cores
        return CoreShare(cores) if replicas > 1 and flops_per_row >= LARGE_ROW_FLOPS else None

    def heavy(self, items: int, rows: int) -> bool:
        """Whether a batch of `items` items costing `rows` work rows is compute (a model whose
        FLOPs could not be counted, 0, is light)."""
        return self.flops_per_row * rows / max(items, 1) >= HEAVY_ITEM_FLOPS

    def threads_for(self, items: int, rows: int) -> int:
        """Threads for such a batch, without a share."""
        return self.every if self.heavy(items, rows) else self.spare

    @contextmanager
    def batch(self, items: int, rows: int) -> Iterator[int]:
        """Around a batch, on the worker thread (the OpenMP thread count is per calling thread):
        sets and yields its threads."""
        if self.share is not None and self.heavy(items, rows):
            with self.share.computing() as threads:
                self._set(threads)
                yield threads
            return
        threads = self.threads_for(items, rows)
        self._set(threads)
        yield threads

    def _set(self, threads: int) -> None:
        if threads != self._current:
            torch.set_num_threads(threads)
            self._current = threads
