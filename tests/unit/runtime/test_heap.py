"""glibc's heap: freed memory kept for reuse (mallopt), and returned after large work (malloc_trim)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap

import pytest

from app.runtime import heap

_FAULTS = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from app.runtime import heap
    mode, where, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) << 20
    if mode != "default":
        assert heap.retain_freed()
    if mode == "no-pad":  # retain_freed's other settings, the top pad back at glibc's default
        assert heap._MALLOPT(heap._M_TOP_PAD, 0)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    def batch():  # `count` activations of `size`, written, then all freed: a batch's tensors
        blocks = [libc.malloc(size) for _ in range(count)]
        for block in blocks:
            ctypes.memset(block, 1, size)
        for block in blocks:
            libc.free(block)
    faults = []
    def run():
        for _ in range(2):
            batch()
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(10):
            batch()
        faults.append((resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 10)
    if where == "thread":  # its blocks come from an arena of its own, not the main heap
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    else:
        run()
    print(faults[0])
""")


def _faults_per_batch(mode: str, where: str = "main", count: int = 10, size_mib: int = 4) -> float:
    """Minor page faults per batch of `count` blocks of `size_mib` MiB, on the main thread or another."""
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode, where, str(count), str(size_mib)],
                         capture_output=True, text=True, check=True)
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
    # Eight 12 MiB blocks: 96 MiB, more than one heap.
    pages = 8 * (12 << 20) // 4096
    assert _faults_per_batch("no-pad", "thread", 8, 12) >= pages // 4
    assert _faults_per_batch("retain", "thread", 8, 12) < 100


def test_trim_runs_where_the_c_library_is_glibc() -> None:
    assert ctypes.util.find_library("c") is not None
    heap.trim()  # returns whether pages were released: either is fine, it must not fail
    assert heap._MALLOC_TRIM is not None, "this Linux machine's C library is glibc: trimming must be wired"
    assert heap._MALLOPT is not None


def test_only_large_work_is_followed_by_a_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    monkeypatch.setattr(heap, "_MALLOC_TRIM", trim)
    assert heap.trim_after(heap.LARGE_BYTES) is False and calls == []
    assert heap.trim_after(heap.LARGE_BYTES + 1) is True and calls == [0]


def test_retaining_says_so_where_glibc_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_MALLOPT", lambda param, value: 0)
    assert heap.retain_freed() is False
    monkeypatch.setattr(heap, "_MALLOPT", None)
    assert heap.retain_freed() is False
