"""Returning free heap memory to the system after large work (glibc's malloc_trim)."""

from __future__ import annotations

import ctypes.util

from app.runtime import trim


def test_trim_runs_where_the_c_library_is_glibc() -> None:
    assert ctypes.util.find_library("c") is not None
    trim.trim()  # returns whether pages were released: either is fine, it must not fail
    assert trim._MALLOC_TRIM is not None, "this Linux machine's C library is glibc: trimming must be wired"


def test_only_large_work_is_followed_by_a_trim(monkeypatch: object) -> None:
    calls: list[int] = []
    monkeypatch.setattr(trim, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)  # type: ignore[attr-defined]
    assert trim.trim_after(trim.LARGE_BYTES) is False and calls == []
    assert trim.trim_after(trim.LARGE_BYTES + 1) is True and calls == [0]
