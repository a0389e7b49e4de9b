"""How host work jobs cross to a worker process: a frame is one or more `(fn, args)` pickled as
one list, after its length as `multiprocessing.connection` writes it (app/runtime/host_worker.py
reads it with `Connection.recv` and answers with one list of `(ok, value, traceback)`, which
`read_frame` reads back)."""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.errors import InternalError


@dataclass(eq=False)
class Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    attempt: int = 1


def frame(obj: object) -> bytes:
    """`obj` pickled, after its length."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(payload)) + payload
    return struct.pack("!i", len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The payload of the next frame on `reader`, as `frame` (or a worker's `Connection.send`)
    writes it."""
    (size,) = struct.unpack("!i", await reader.readexactly(4))
    if size == -1:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return await reader.readexactly(size)


def _unsendable(job: Job) -> Exception | None:
    """Why `job` cannot be pickled, or None."""
    try:
        pickle.dumps((job.fn, job.args), protocol=pickle.HIGHEST_PROTOCOL)
        return None
    except Exception as exc:
        return exc


def framed(jobs: list[Job]) -> bytes | None:
    """The frame of `jobs`. A job whose arguments cannot be pickled is answered here (an
    InternalError) and taken out of `jobs`; None where no job is left to send."""
    if not jobs:
        return None
    try:
        return frame([(job.fn, job.args) for job in jobs])
    except Exception as frame_error:
        errors = {id(job): _unsendable(job) for job in jobs}
        failed = [job for job in jobs if errors[id(job)] is not None] or list(jobs)  # none alone: all
        for job in failed:
            jobs.remove(job)
            job.future.set_exception(InternalError(f"host work {getattr(job.fn, '__name__', job.fn)}: its "
                                                   f"arguments cannot be sent ({errors[id(job)] or frame_error})"))
        return framed(jobs)
