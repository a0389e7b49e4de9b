"""How a CPU model's batches use the cores: its workers (each takes batches from the model's
queue), its lanes (replicas one worker splits a batch across) and the intra-op threads of each,
chosen from what a row costs.

The measure is the model's floating-point operations per row (counted once at load:
`ModelFacts.flops_per_row`), times an item's work rows: deterministic, unlike a timed probe on a
busy host. Measured on 2 cores, channels-last, OpenMP waits sleeping (OMP_WAIT_POLICY=PASSIVE,
app/__main__.py; bench/results/history.md):

- Light rows (under 10 MFLOP: a 30-feature MLP is 8 kFLOP, an integrated-gradients request of
  it 0.3 MFLOP): requests that are mostly the event loop's work. One worker of one lane; one core
  left out of its OpenMP team, since with every core in the team a team thread descheduled by the
  event loop stalls the team at its barrier (batched IG on the MLP ran 3x slower, with spinning
  waits), and a lone request gains nothing from a team it has to wake (one tabular IG request:
  0.8 ms of CPU on one thread, 1.4-1.6 ms on two). An item of many rows (thousands of steps) is
  heavy.
- Mid-sized rows (10-300 MFLOP: the shapes CNN, 25 MFLOP): one worker whose batches are split
  across one lane per core, each on one thread (two batches side by side served shapes IG at 32
  concurrent at 72-75 req/s against 58-61 for one batch on two threads). The worker takes the
  batches in order, whole: batching is worth most where a row is cheap (shapes GradCAM at 32
  concurrent 474 req/s against 407 with a worker per core).
- Large rows (300 MFLOP and more: resnet18 is 3.6 GFLOP): one worker per core, of one thread
  each, each taking its share of the queue (app/runtime/batcher.py), so a core never waits for
  the other to finish a batch split unevenly (TorchServe's best variant for resnet18 here is two
  workers of one thread; resnet18 predictions at 8 concurrent kept 1.90 cores busy against
  1.71, IG n_steps 15 1.93 against 1.75).
- A heavy item alone: every core for a large network while the model's other workers are idle
  (resnet18 ran IG of one image in 835 ms on one thread, 442 ms on two), one thread for a
  mid-sized one, whose convolutions are too small to split well (the shapes CNN: IG of one image
  20-23 ms on one thread, 25-30 ms on two).

Applies only while torch has its default thread count (all cores): a count lowered by the
operator (OMP_NUM_THREADS) is kept, and WORKERS_PER_DEVICE, when set, gives that many workers of
one lane each, the cores shared evenly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

HEAVY_ITEM_FLOPS = 10_000_000
"""Forward FLOPs per item from which a batch's items are compute rather than the event loop's
work: about 1 ms of forward and backward on one core, as much as the event loop's own work for a
request (0.6-1.2 ms on the 2-core benchmark host)."""
LARGE_ROW_FLOPS = 300_000_000
"""Forward FLOPs per row from which a network's kernels use several threads well: between the
shapes CNN (25 MFLOP, slower on two threads than on one) and resnet18 (3.6 GFLOP, 1.9x faster)."""

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


def policy_applies(cores: int) -> bool:
    """More than one core, and torch's thread count not lowered by the operator."""
    return cores >= 2 and host_cores() <= _STARTING_THREADS


def cpu_layout(flops_per_row: int, cores: int | None = None) -> tuple[int, int]:
    """Workers, and lanes per worker, of a CPU model under the default policy: one of one lane for
    light rows, one of a lane per core for mid-sized rows, one per core for large rows."""
    cores = host_cores() if cores is None else cores
    if not policy_applies(cores) or flops_per_row < HEAVY_ITEM_FLOPS:
        return 1, 1
    if flops_per_row >= LARGE_ROW_FLOPS:
        return cores, 1
    return 1, cores


@dataclass(frozen=True)
class Plan:
    lanes: int
    """Lanes the batch is split across (at most one per item)."""
    threads: int
    """Intra-op threads of each lane."""


@dataclass
class Occupancy:
    """How many of one model's workers are computing now: shared by their policies, so a large
    item that finds the others idle may take their cores."""

    busy: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def computing(self) -> Iterator[int]:
        """Count this worker as computing; yields how many others were then."""
        with self._lock:
            others = self.busy
            self.busy += 1
        try:
            yield others
        finally:
            with self._lock:
                self.busy -= 1


class CpuThreads:
    """The policy of one worker on a CPU: its cores (`every`, `spare`: with every core, with one
    left out) shared between the worker's lanes; `cores`, the host's, which a large item alone
    takes while the model's other workers (`occupancy`) are idle."""

    def __init__(self, every: int, spare: int, flops_per_row: int, lanes: int = 1,
                 cores: int | None = None, occupancy: Occupancy | None = None):
        self.every, self.spare = every, spare
        self.flops_per_row = flops_per_row
        self.lanes = lanes
        self.cores = every if cores is None else cores
        self.occupancy = occupancy or Occupancy()

    @classmethod
    def for_worker(cls, workers: int, lanes: int, flops_per_row: int, cores: int | None = None,
                   occupancy: Occupancy | None = None) -> CpuThreads | None:
        """The policy of one of `workers` workers of `lanes` lanes on this host's cores (the
        workers share `occupancy`); None where it does not apply (one core, or the operator
        lowered torch's thread count)."""
        cores = host_cores() if cores is None else cores
        if not policy_applies(cores):
            return None
        return cls(*shares(cores, workers), flops_per_row, lanes, cores, occupancy)

    def heavy(self, items: int, rows: int) -> bool:
        """Whether a batch of `items` items costing `rows` work rows is compute (a model whose
        FLOPs could not be counted, 0, is light)."""
        return self.flops_per_row * rows / max(items, 1) >= HEAVY_ITEM_FLOPS

    def plan(self, items: int, rows: int, others_busy: int = 0) -> Plan:
        """Lanes and threads for a batch of `items` items costing `rows` work rows in all, begun
        while `others_busy` of the model's other workers compute."""
        if not self.heavy(items, rows):
            return Plan(1, self.spare)
        lanes = min(self.lanes, items)
        if lanes > 1:
            return Plan(lanes, max(1, self.every // lanes))
        large = self.flops_per_row >= LARGE_ROW_FLOPS
        if items == 1 and large and not others_busy:
            return Plan(1, self.cores)
        return Plan(1, self.every if large or self.lanes == 1 else 1)


class LaneThreads:
    """Sets a lane's intra-op threads on its own thread (OpenMP's count is per calling thread),
    on change only: a new count costs ~2 ms to regroup the OpenMP team. Made on the lane's thread.

    ATen gives a thread the count last set by any thread on the thread's first use of torch
    (`lazy_init_num_threads`), which would silently replace a count set before it; asking for the
    count here makes that first use happen now."""

    def __init__(self) -> None:
        torch.get_num_threads()
        self._current = 0

    def set(self, threads: int) -> None:
        if threads != self._current:
            torch.set_num_threads(threads)
            self._current = threads
