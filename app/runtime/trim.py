"""Giving memory back to the system after large requests.

glibc keeps freed memory of its arenas for reuse instead of returning it: after a burst of large
images (each decoded, resized and rendered in a host-work thread with its own arena) the process
stayed gigabytes larger while idle. `malloc_trim(0)` returns the free pages of every arena; it is
called after work that held more than LARGE_BYTES, where its cost (milliseconds) is small beside
the work's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

LARGE_BYTES = 64 << 20


def _libc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _libc_trim()


def trim() -> bool:
    """Return free heap memory to the system; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))


def trim_after(held_bytes: int) -> bool:
    """`trim()` when work that held `held_bytes` was large enough to be worth it."""
    return held_bytes > LARGE_BYTES and trim()
