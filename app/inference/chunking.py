"""How many work rows one forward+backward carries on a CPU.

On a CPU a large chunk is slower per row, not faster: glibc's malloc serves every block over its
mmap threshold (32 MiB at most) with fresh pages from the kernel and hands them back on free, so
each step page-faults (and zero-fills) all of its large activations again. ResNet-50 on 2 cores:
about 500 minor page faults per row in chunks of 2, 45,000 in chunks of 32, where integrated
gradients (32 steps) takes 5.9 s instead of 3.3 s in chunks of 8 (bench/results/history.md).
So a CPU model's chunks are capped where its largest activation (`ModelFacts.bytes_per_row`,
measured at load) would reach that size. GPUs are not capped: they want the largest chunk that
fits, which `MAX_BATCH_ROWS` and the out-of-memory halving already give.
"""

from __future__ import annotations


def cpu_chunk_rows(bytes_per_row: int, limit_bytes: int, max_rows: int) -> int:
    """The most rows whose largest activation stays below `limit_bytes` (at least 1, at most
    `max_rows`); `limit_bytes` 0 means no cap."""
    if limit_bytes <= 0 or bytes_per_row <= 0:
        return max_rows
    return max(1, min(max_rows, (limit_bytes - 1) // bytes_per_row))
