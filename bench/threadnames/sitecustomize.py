"""Benchmark instrumentation: every Python thread gets its `threading` name at the OS level.

bench/servers.py puts this folder first on the PYTHONPATH of the servers it starts (and so of
their child processes), where Python imports it at start-up. Python 3.11 names threads only for
Python itself; the kernel knows every thread of a process by the process's name. Here each
`threading.Thread` calls prctl(PR_SET_NAME) with its name (cut to the kernel's 15 bytes) as it
starts, so /proc/<pid>/task/<tid>/comm tells a service's threads apart (bench/procstat.py) and
the threads a thread starts (torch's intra-op threads) inherit its name. It costs one system
call per thread start. Afterwards the next `sitecustomize` on the path, if any, is imported.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import sys
import threading
from pathlib import Path
from typing import Any

PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)
_start = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def set_os_name(name: str) -> None:
    """Name the calling thread at the OS level (first 15 bytes of its UTF-8 name)."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode("utf-8", "replace")[:15]), 0, 0, 0)


def _bootstrap_inner(self: threading.Thread) -> Any:
    with contextlib.suppress(OSError, AttributeError):
        set_os_name(self.name)
    return _start(self)


threading.Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[attr-defined]


def _chain() -> None:
    here = str(Path(__file__).resolve().parent)
    rest = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    saved, sys.path[:] = sys.path[:], rest
    module = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if module is not None:
            sys.modules["sitecustomize"] = module


_chain()
