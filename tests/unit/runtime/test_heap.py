"""glibc's heap: freed memory kept for reuse (mallopt), and returned after large work (malloc_trim)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap

from app.runtime import heap

_FAULTS = textwrap.dedent("""
    import ctypes, resource, sys
    from app.runtime import heap
    if sys.argv[1] == "retain":
        assert heap.retain_freed()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 4 << 20
    def batch():  # ten 4 MiB activations, written, then all freed: a batch's tensors
        blocks = [libc.malloc(SIZE) for _ in range(10)]
        for block in blocks:
            ctypes.memset(block, 1, SIZE)
        for block in blocks:
            libc.free(block)
    for _ in range(2):
        batch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        batch()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


_THREAD_FAULTS = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from app.runtime import heap
    if sys.argv[1] == "retain":
        assert heap.retain_freed()
    elif sys.argv[1] == "no-pad":  # retain_freed's other settings, without the top pad
        assert heap._MALLOPT(heap._M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD_MAX)
        assert heap._MALLOPT(heap._M_TRIM_THRESHOLD, heap._NEVER_TRIM)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 12 << 20
    def batch():  # eight 12 MiB activations (96 MiB: more than one of the arena's 64 MiB heaps)
        blocks = [libc.malloc(SIZE) for _ in range(8)]
        for block in blocks:
            ctypes.memset(block, 1, SIZE)
        for block in blocks:
            libc.free(block)
    faults = []
    def worker():  # a thread: its blocks come from an arena of its own, not the main heap
        for _ in range(2):
            batch()
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(10):
            batch()
        faults.append((resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 10)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    print(faults[0])
""")


def _faults_per_batch(mode: str, script: str = _FAULTS) -> float:
    out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_a_batch_reuses_the_pages_the_previous_one_freed() -> None:
    # glibc's defaults: the first batch's blocks are mapped afresh and unmapped (which raises the
    # mmap threshold to 4 MiB); later ones come from the heap, whose 40 MiB of free top (over twice
    # that threshold) is trimmed at the last free, so every batch faults its 10,240 pages in again
    # (all but the 128 KiB glibc keeps at the top).
    assert _faults_per_batch("default") >= 10 * ((4 << 20) - (128 << 10)) // 4096
    assert _faults_per_batch("retain") < 100


def test_a_threads_batch_reuses_the_heaps_of_its_arena() -> None:
    # A thread's arena grows in 64 MiB heaps; without the top pad, the heap beyond the first is
    # unmapped when its blocks are freed and mapped again, pages faulted in, by the next batch.
    pages = 8 * (12 << 20) // 4096
    assert _faults_per_batch("no-pad", _THREAD_FAULTS) >= pages // 4
    assert _faults_per_batch("retain", _THREAD_FAULTS) < 100


def test_trim_runs_where_the_c_library_is_glibc() -> None:
    assert ctypes.util.find_library("c") is not None
    heap.trim()  # returns whether pages were released: either is fine, it must not fail
    assert heap._MALLOC_TRIM is not None, "this Linux machine's C library is glibc: trimming must be wired"
    assert heap._MALLOPT is not None


def test_only_large_work_is_followed_by_a_trim(monkeypatch: object) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)  # type: ignore[attr-defined]
    assert heap.trim_after(heap.LARGE_BYTES) is False and calls == []
    assert heap.trim_after(heap.LARGE_BYTES + 1) is True and calls == [0]


def test_retaining_says_so_where_glibc_refuses(monkeypatch: object) -> None:
    monkeypatch.setattr(heap, "_MALLOPT", lambda param, value: 0)  # type: ignore[attr-defined]
    assert heap.retain_freed() is False
    monkeypatch.setattr(heap, "_MALLOPT", None)  # type: ignore[attr-defined]
    assert heap.retain_freed() is False
