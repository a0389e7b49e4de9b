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
import pickle
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


def _run(fn: Any, args: tuple[Any, ...]) -> tuple[bool, Any, str]:
    try:
        return (True, fn(*args), "")
    except Exception as exc:
        return (False, exc, traceback.format_exc())


def _sendable(fn: Any, reply: tuple[bool, Any, str]) -> tuple[bool, Any, str]:
    """`reply`, or an error in its place where its value or exception cannot be pickled."""
    try:
        pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        return reply
    except Exception as exc:
        return (False, RuntimeError(f"{getattr(fn, '__name__', fn)}: unpicklable reply ({exc})"),
                traceback.format_exc())


def serve(conn: Connection) -> None:
    """Run each frame's `(fn, args)` jobs in order and send back one list of `(ok, value,
    traceback)` for it, until EOF or a None frame."""
    while True:
        try:
            frame: list[tuple[Any, tuple[Any, ...]]] | None = conn.recv()
        except (EOFError, OSError):
            return
        if frame is None:
            return
        replies = [_run(fn, args) for fn, args in frame]
        try:
            conn.send(replies)
        except (EOFError, OSError):
            return
        except Exception:  # a value or an exception cannot be pickled: only those replies replaced
            conn.send([_sendable(fn, reply) for (fn, _), reply in zip(frame, replies, strict=True)])


def main(fd: int, nice: int = 0, retain_heap: bool = False) -> None:
    if retain_heap:
        retain_freed_up_to()
    if nice:
        os.nice(nice)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Connection(fd))
