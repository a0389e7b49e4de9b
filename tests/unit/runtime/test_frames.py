"""Frames of host work jobs (app/runtime/frames.py): what the standard library's reader, as a
worker process uses it, reads back; a job that cannot be pickled answered on this side."""

from __future__ import annotations

import asyncio
import socket
from multiprocessing.connection import Connection

import pytest

from app.errors import InternalError
from app.runtime.frames import Job, framed
from tests.unit.runtime import host_jobs


def _read_back(data: bytes) -> object:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(data)
        return Connection(theirs.detach()).recv()


def _jobs(loop: asyncio.AbstractEventLoop, *argss: tuple[object, ...]) -> list[Job]:
    return [Job(host_jobs.echo, args, loop.create_future()) for args in argss]


def test_a_frame_is_what_a_worker_reads_back() -> None:
    loop = asyncio.new_event_loop()
    try:
        jobs = _jobs(loop, (1,), (b"\x00" * 70_000,), ({"a": [1.5, None]},))
        frame = framed(jobs)
        assert frame is not None
        assert _read_back(frame) == [(host_jobs.echo, (1,)), (host_jobs.echo, (b"\x00" * 70_000,)),
                                     (host_jobs.echo, ({"a": [1.5, None]},))]
        assert len(jobs) == 3 and not any(job.future.done() for job in jobs)
    finally:
        loop.close()


def test_a_job_that_cannot_be_pickled_is_answered_and_left_out() -> None:
    loop = asyncio.new_event_loop()
    try:
        jobs = _jobs(loop, (1,), (lambda: None,), (3,))
        first, bad, third = jobs
        frame = framed(jobs)
        assert frame is not None and _read_back(frame) == [(host_jobs.echo, (1,)), (host_jobs.echo, (3,))]
        assert jobs == [first, third] and not first.future.done() and not third.future.done()
        with pytest.raises(InternalError, match="echo: its arguments cannot be sent"):
            bad.future.result()
        alone = _jobs(loop, (lambda: None,))
        only = alone[0]
        assert framed(alone) is None and alone == []
        assert isinstance(only.future.exception(), InternalError)
        assert framed([]) is None
    finally:
        loop.close()
