"""How many work rows one forward+backward carries on a CPU.

On a CPU a large chunk is slower per row, not faster: glibc's malloc serves every block over its
mmap threshold (32 MiB at most) with fresh pages from the kernel and hands them back on free, so
each step page-faults (and zero-fills) all of its large activations again. ResNet-50 on 2 cores:
about 500 minor page faults per row in chunks of 2, 45,000 in chunks of 32, where integrated
gradients (32 steps) takes 5.9 s instead of 3.3 s in chunks of 8 (bench/results/history.md).
So a CPU model's chunks are capped where its largest activation (`ModelFacts.bytes_per_row`,
measured at load) would reach that size. GPUs are not capped: they want the largest chunk that
fits, which `MAX_BATCH_ROWS` and the out-of-memory halving already give.

Since freed heap memory is kept for the next batch (MALLOC_RETAIN) and a batch is split across
lanes of one thread each, the cap is a cache's size more than the allocator's: the shapes CNN's
integrated gradients at 64 concurrent spent 28.7 ms of worker CPU per request in chunks of 127
rows (32 MiB), 20.7-21.6 in chunks of 31 or 7 (8 or 2 MiB). Too few rows starve the convolutions'
matrix kernels instead (ResNet-50 GradCAM: 6% more CPU per request in chunks of 2 rows than of 9),
so a chunk keeps at least `MIN_ROWS` rows while their largest activation stays within
`FLOOR_SHARE` times the cap (bench/results/history.md).
"""

from __future__ import annotations

MIN_ROWS = 8
"""Rows a CPU chunk keeps, even over the cap, while within `FLOOR_SHARE` times it."""
FLOOR_SHARE = 4
"""How far over the cap `MIN_ROWS` may take a chunk's largest activation."""


def cpu_chunk_rows(bytes_per_row: int, limit_bytes: int, max_rows: int) -> int:
    """The most rows whose largest activation stays below `limit_bytes`, but at least `MIN_ROWS`
    where those stay below `FLOOR_SHARE` x `limit_bytes` (at least 1, at most `max_rows`);
    `limit_bytes` 0 means no cap."""
    if limit_bytes <= 0 or bytes_per_row <= 0:
        return max_rows
    capped = (limit_bytes - 1) // bytes_per_row
    floor = min(MIN_ROWS, (FLOOR_SHARE * limit_bytes - 1) // bytes_per_row)
    return max(1, min(max_rows, max(capped, floor)))
