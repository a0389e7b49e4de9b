"""Frames of host work jobs (app/runtime/frames.py): what the standard library's reader, as a
worker process uses it, reads back; what `read_frame` reads of a worker's replies; a job that
cannot be pickled answered on this side."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
from multiprocessing.connection import Connection

import pytest

from app.errors import InternalError
from app.runtime.frames import Job, frame, framed, read_frame
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


def test_read_frame_reads_what_a_worker_sends() -> None:
    """Replies as a worker's `Connection.send` writes them, and frames as `frame` writes them,
    one after another on one stream: each payload read whole, in order."""
    replies: list[list[tuple[bool, object, str]]] = [
        [(True, 1, "")], [(True, b"\x01" * 300_000, ""), (False, ValueError("no"), "tb")]]

    async def read_all() -> list[object]:
        ours, theirs = socket.socketpair()
        sender = Connection(theirs.detach())

        def send() -> None:  # on a thread: a 300 kB reply fills the socket until it is read
            for reply in replies:
                sender.send(reply)
            os.write(sender.fileno(), frame([(host_jobs.echo, (2,))]))  # ours, written as it is
            sender.close()

        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            sending = asyncio.ensure_future(asyncio.to_thread(send))
            got = [pickle.loads(await read_frame(reader)) for _ in range(3)]
            with pytest.raises(asyncio.IncompleteReadError):  # the end of the stream
                await read_frame(reader)
            await sending
            return got
        finally:
            writer.close()

    got = asyncio.run(read_all())
    assert got[0] == replies[0] and got[2] == [(host_jobs.echo, (2,))]
    second = got[1]
    assert isinstance(second, list) and second[0] == replies[1][0]
    ok, exc, tb = second[1]
    assert ok is False and isinstance(exc, ValueError) and str(exc) == "no" and tb == "tb"
