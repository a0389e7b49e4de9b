"""A host work process: runs the jobs its parent sends over one socket, until the socket closes.

Started by app/runtime/processes.py as a fresh interpreter (`python -c`, the parent's sys.path
given on the command line), so it holds nothing of its parent (no threads, no torch) and imports
only this module, then whatever its jobs need. It runs at the niceness its parent gives it
(HOST_NICE), and with MALLOC_RETAIN keeps freed heap memory for its next jobs, up to a bound.
It ignores SIGINT and SIGTERM: the service drains first and then closes the socket, which ends
it (as does the parent's death).
"""

from __future__ import annotations

import importlib
import os
import signal
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from app.runtime.heap import retain_freed_up_to


def prepare(modules: Sequence[str]) -> int:
    """The first job: import what the jobs need before any request waits on it."""
    for module in modules:
        importlib.import_module(module)
    return os.getpid()


def serve(conn: Connection) -> None:
    """Run `(fn, args)` jobs and send back `(ok, value, traceback)` until EOF or a None job."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        fn, args = job
        try:
            reply: tuple[bool, Any, str] = (True, fn(*args), "")
        except Exception as exc:
            reply = (False, exc, traceback.format_exc())
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # the value or the exception cannot be pickled
            conn.send((False, RuntimeError(f"{getattr(fn, '__name__', fn)}: unpicklable reply ({exc})"),
                       traceback.format_exc()))


def main(fd: int, nice: int = 0, retain_heap: bool = False) -> None:
    if retain_heap:
        retain_freed_up_to()
    if nice:
        os.nice(nice)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Connection(fd))
