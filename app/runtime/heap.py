"""glibc's heap: freed memory kept for reuse while the service works, given back after large work.

glibc's defaults return freed memory to the kernel eagerly: a block above its mmap threshold
(128 KiB at first, raised as such blocks are freed, at most 32 MiB) is unmapped when freed, and
the top of a heap is trimmed once more than twice that threshold is free. A batch of activations
is exactly such blocks, freed at the end of every batch, so every batch faulted its pages in
again, zeroed by the kernel: the shapes CNN's forward and backward took 1.3-2.3 ms per image on
one core with the defaults and 0.8-1.3 ms with freed blocks kept (bench/results/history.md).
`retain_freed()` fixes the mmap threshold at its largest (32 MiB, blocks up to it come from the
heap) and stops automatic trimming: resident memory stays near the largest batch's.

A thread other than the main one (every model worker) allocates from an arena of its own, grown
in heaps of 64 MiB; a heap whose blocks are all free again is unmapped whatever the trim
threshold, unless the arena's top pad is at least a heap's size (glibc's `heap_trim` then keeps
it). A worker whose batch spanned two heaps mapped and faulted in the second on every batch
(shapes IG at 32 concurrent: 1,300 heaps mapped and unmapped in 5 s, up to 0.7 million page faults
in 8 s, 6-9% of the worker's CPU). `retain_freed()` sets the top pad to a heap's size: the main
heap then grows in steps of 64 MiB of address space, which hold no memory until written.

That would leave the process large after a burst of large images (each decoded, resized and
rendered with arenas of their own), so `malloc_trim(0)` returns the free pages of every arena's
free blocks and the main heap's free top after work that held more than LARGE_BYTES, where its
cost (milliseconds) is small beside the work's (a thread arena's free top stays: at most what its
largest batch chunk held, app/inference/chunking.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

logger = logging.getLogger(__name__)

LARGE_BYTES = 64 << 20
MMAP_THRESHOLD_MAX = 32 << 20
"""glibc's largest mmap threshold on 64-bit hosts (half its heap size): larger requests are
always mapped afresh."""
THREAD_HEAP_BYTES = 2 * MMAP_THRESHOLD_MAX
"""The size of the heaps a thread's arena grows in (glibc's HEAP_MAX_SIZE on 64-bit hosts)."""
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
"""mallopt's parameter numbers (malloc.h)."""
_NEVER_TRIM = 2**31 - 1
"""mallopt takes an int: the main heap's free top is returned only by malloc_trim (a thread
arena's free heaps stay mapped, the top pad being a heap's size)."""


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


_LIBC = _libc()
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)  # glibc's own: absent from musl and macOS
_MALLOPT = getattr(_LIBC, "mallopt", None)


def _keep_blocks(trim_threshold: int, *more: tuple[int, int]) -> bool | None:
    """Blocks of up to 32 MiB from the heap, its free top trimmed past `trim_threshold`, and the
    `more` (parameter, value) pairs: whether glibc took them all; None without glibc's mallopt."""
    if _MALLOPT is None:
        return None
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, trim_threshold), *more)
    return all(bool(_MALLOPT(parameter, value)) for parameter, value in settings)


def retain_freed() -> bool:
    """Keep freed blocks of up to 32 MiB for reuse, and the heaps of threads' arenas mapped
    (process-wide, from now on); False where the C library is not glibc or refused."""
    done = _keep_blocks(_NEVER_TRIM, (_M_TOP_PAD, THREAD_HEAP_BYTES))
    if done is False:
        logger.warning("glibc refused to keep freed memory: tensors' pages are faulted in on every batch")
    return bool(done)


def retain_freed_up_to(top_bytes: int = LARGE_BYTES) -> bool:
    """For a process of one thread (a host work process): blocks of up to 32 MiB from the heap,
    whose free top is returned to the system only past `top_bytes`; False where the C library is
    not glibc or refused. glibc's defaults there (an mmap threshold that rises with the blocks
    freed, a trim threshold twice it) returned and faulted in again the same few hundred
    kilobytes every few requests (up to 25 page faults a request, bench/results/history.md); a
    burst of large images still leaves at most `top_bytes` free behind."""
    return bool(_keep_blocks(top_bytes))


def trim() -> bool:
    """Return free heap memory to the system; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))


def worth_trimming(held_bytes: int) -> bool:
    """Whether work that held `held_bytes` was large enough for a trim after it."""
    return held_bytes > LARGE_BYTES


def trim_after(held_bytes: int) -> bool:
    """`trim()` when work that held `held_bytes` was large enough to be worth it."""
    return worth_trimming(held_bytes) and trim()
