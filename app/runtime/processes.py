"""A pool of worker processes driven from the event loop: jobs in, results out, no threads.

`concurrent.futures.ProcessPoolExecutor` moves every job through two threads of this process (a
queue feeder that pickles it, a manager that unpickles its result), each taking the interpreter
lock that the event loop and the device workers need; on a 2-core host that machinery cost 0.8
ms of CPU per request of two jobs (bench/results/history.md). Here each worker process has a
socket to this one; the event loop writes jobs to the workers and reads results as they arrive
(asyncio streams: nothing blocks). Jobs travel in frames of one or more (up to FRAME_JOBS: those
asked for in one iteration of the event loop, sent at its end, or queued when a worker has room),
which the worker runs in order and answers with one reply: under load a crossing's fixed costs
(system calls, wake-ups, pickles and callbacks each way) are paid once for several jobs. A worker
holds up to FRAMES_IN_FLIGHT frames, so that under load it finds its next frame already there,
and its reply finds the event loop awake: on a virtual machine a write that wakes a sleeping
process costs 0.1-0.2 ms. A frame goes to the worker with the fewest jobs in hand, so an idle
worker takes it at once. The wire format is `multiprocessing.connection`'s (a 4-byte length, then
the pickle of a list of `(fn, args)`), so a worker (app/runtime/host_worker.py) simply loops on
`Connection.recv` and `send`.

Workers are fresh interpreters (`subprocess`, never a fork of this process, whose threads and
torch state a fork would copy half-way; nor multiprocessing's spawn, which re-imports the
parent's `__main__`). A worker that dies (killed, out of memory, a crash in a decoder) costs
only the jobs it held: retried once, each alone on a worker holding nothing else, then answered
503; a fresh worker takes its place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import InternalError, NotReady, ServiceError
from app.runtime import frames
from app.runtime.frames import Job
from app.runtime.host_worker import prepare

logger = logging.getLogger(__name__)

ATTEMPTS = 2
"""A job whose worker died is tried this many times in all."""
FRAME_JOBS = 16
"""Most jobs in one frame. Up to 16 against one each: 0.948 of the CPU per shapes GradCAM request at 64
concurrent (paired median of 24 rounds), against up to 4: 0.971 (bench/results/history.md)."""
FRAMES_IN_FLIGHT = 2
"""Most frames sent to one worker ahead of its replies."""
SOCKET_BUFFER_BYTES = 2 << 20
"""Each end's send buffer (SO_SNDBUF, which the kernel doubles and caps at net.core.wmem_max):
four render jobs of a 128 x 128 image (113 kB each) overflowed the default 208 KiB, so the
event loop's writes stopped half-way (EAGAIN) and finished from a writer callback, with a read
more in the worker: about 0.8 system calls a request more; a shapes GradCAM request took 3-13%
more CPU in eight of eleven pairs (6-12% less in the other three; bench/results/history.md)."""
_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv[2]); "
         "from app.runtime.host_worker import main; main(int(sys.argv[1]), int(sys.argv[3]), sys.argv[4] == '1')")
"""A worker's command line: this process's import path, then the worker's loop on its socket
(at its niceness, its heap's freed memory kept or not)."""


def _reap(process: subprocess.Popen[bytes], wait_s: float) -> int:
    """The worker's exit code, killing it if it has not exited within `wait_s`."""
    try:
        return process.wait(wait_s)
    except subprocess.TimeoutExpired:
        logger.warning("host work process %s did not exit in %.1f s; killing it", process.pid, wait_s)
        process.kill()
        return process.wait()


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    frames: deque[list[Job]] = field(default_factory=deque)
    """The frames sent to it and not answered yet, oldest first (it answers in order)."""
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def held(self) -> int:
        """Jobs sent to it and not answered yet."""
        return sum(len(frame) for frame in self.frames)

    @property
    def retrying(self) -> bool:
        """It holds a dead worker's job (which always travels alone)."""
        return any(len(frame) == 1 and frame[0].attempt > 1 for frame in self.frames)

    def jobs(self) -> list[Job]:  # in the order they were sent
        return [job for frame in self.frames for job in frame]


class ProcessPool:
    """`size` worker processes, each importing `modules` before its first job, `nice` levels
    below this process's priority."""

    def __init__(self, size: int, modules: Sequence[str], nice: int = 0, retain_heap: bool = False):
        self.size = size
        self.modules = list(modules)
        self.nice = nice
        self.retain_heap = retain_heap
        """Workers keep freed heap memory for reuse (app/runtime/heap.py `retain_freed_up_to`)."""
        self._workers: list[_Worker] = []
        self._ready: list[_Worker] = []
        """Workers that have imported the job modules: the ones jobs go to."""
        self._jobs: deque[Job] = deque()
        self._closed = False
        self._dispatching = False
        self.restarts = 0
        """Workers started in place of one that died."""

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._ready]

    async def start(self) -> None:
        """Start every worker and wait until each has imported the job modules."""
        await asyncio.gather(*(self._spawn() for _ in range(self.size)))

    async def _spawn(self) -> None:
        if self._closed:
            return
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        try:
            argv = [sys.executable, "-c", _BOOT, str(theirs.fileno()), json.dumps(sys.path), str(self.nice),
                    "1" if self.retain_heap else "0"]
            process = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker has its own copy; ours open would hide the worker's death
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        if self._closed:  # closed while this one started
            writer.transport.abort()
            process.kill()
            await asyncio.to_thread(process.wait)
            return
        worker = _Worker(process, reader, writer)
        worker.task = asyncio.create_task(self._read(worker), name=f"host-work-{process.pid}")
        self._workers.append(worker)
        ready = Job(prepare, (self.modules,), asyncio.get_running_loop().create_future())
        worker.frames.append([ready])
        worker.writer.write(frames.frame([(ready.fn, ready.args)]))
        await ready.future
        if worker in self._workers:  # not dead already (its first job then ran elsewhere)
            self._ready.append(worker)
            self._dispatch()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise NotReady("the service is shutting down", headers={"Retry-After": "5"})
        loop = asyncio.get_running_loop()
        job = Job(fn, args, loop.create_future())
        self._jobs.append(job)
        if not self._dispatching:  # at the end of this iteration of the loop, with the jobs asked for in it
            self._dispatching = True
            loop.call_soon(self._dispatch_asked)
        return await job.future

    def _dispatch_asked(self) -> None:
        self._dispatching = False
        self._dispatch()

    def _dispatch(self) -> None:
        """Send queued jobs to workers with room: each a frame of its share of the queue (at most
        FRAME_JOBS), the worker with the fewest jobs in hand first. A dead worker's job goes alone
        to a worker with nothing in hand, and nothing follows it there until it is answered: a job
        that kills its worker takes no other job's last attempt with it."""
        while self._jobs:
            if self._jobs[0].future.done():  # cancelled while queued
                self._jobs.popleft()
                continue
            retry = self._jobs[0].attempt > 1
            open_ = [w for w in self._ready if not w.frames] if retry else \
                [w for w in self._ready if len(w.frames) < FRAMES_IN_FLIGHT and not w.retrying]
            if not open_:
                return
            worker = min(open_, key=lambda w: w.held)
            share = 1 if retry else min(FRAME_JOBS, -(-len(self._jobs) // len(open_)))
            jobs: list[Job] = []
            while self._jobs and len(jobs) < share and (retry or self._jobs[0].attempt == 1):
                job = self._jobs.popleft()
                if not job.future.done():  # not cancelled while queued
                    jobs.append(job)
            frame = frames.framed(jobs)
            if frame is not None:
                worker.frames.append(jobs)
                worker.writer.write(frame)

    async def _read(self, worker: _Worker) -> None:
        try:
            while True:
                self._finished(worker, await frames.read_frame(worker.reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            if not self._closed:
                await self._died(worker)

    def _finished(self, worker: _Worker, payload: bytes) -> None:
        jobs = worker.frames.popleft()
        try:
            replies = pickle.loads(payload)
            if len(replies) != len(jobs):
                raise ValueError(f"{len(replies)} replies to {len(jobs)} jobs")
        except Exception as exc:
            replies = [(False, InternalError(f"host work reply unreadable ({exc})"), "")] * len(jobs)
        for job, (ok, value, remote) in zip(jobs, replies, strict=True):
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                if not isinstance(value, ServiceError):
                    logger.error("host work %s failed in process %s:\n%s", getattr(job.fn, "__name__", job.fn),
                                 worker.process.pid, remote)
                job.future.set_exception(value)
        self._dispatch()

    async def _died(self, worker: _Worker) -> None:
        """A worker's socket closed under it: retry its jobs elsewhere and start another worker."""
        self._workers.remove(worker)
        if worker in self._ready:
            self._ready.remove(worker)
        worker.writer.close()
        code = await asyncio.to_thread(_reap, worker.process, 1.0)
        logger.warning("host work process %s died (exit code %s); starting another", worker.process.pid, code)
        for job in reversed(worker.jobs()):  # back at the head of the queue, in their order
            if job.future.done():
                continue
            if job.attempt < ATTEMPTS:
                job.attempt += 1
                self._jobs.appendleft(job)
            else:
                logger.error("host work %s: its process died on every attempt", getattr(job.fn, "__name__", job.fn))
                job.future.set_exception(NotReady(
                    "a host work process died while working on this request", headers={"Retry-After": "1"}))
        worker.frames.clear()
        self.restarts += 1
        try:
            await self._spawn()
        except Exception:
            if self._closed:
                return
            logger.exception("could not start a host work process (%d left)", len(self._workers))
            if not self._workers:
                self._fail_queued(NotReady("no host work process could be started", headers={"Retry-After": "5"}))
        self._dispatch()

    def _fail_queued(self, error: ServiceError) -> None:
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(error)
        self._jobs.clear()

    def close(self, wait_s: float) -> None:
        """Answer queued jobs 503, ask every worker to exit (after its job), and kill those still
        there after `wait_s`."""
        self._closed = True
        self._fail_queued(NotReady("the service is shutting down", headers={"Retry-After": "5"}))
        for worker in self._workers:
            if worker.task is not None:
                worker.task.cancel()
            for job in worker.jobs():
                if not job.future.done():
                    job.future.set_exception(NotReady("the service is shutting down", headers={"Retry-After": "5"}))
            worker.writer.write(frames.frame(None))  # read after the jobs in hand
        deadline = time.monotonic() + wait_s
        for worker in self._workers:
            _reap(worker.process, max(0.0, deadline - time.monotonic()))
            worker.writer.transport.abort()
        self._workers.clear()
        self._ready.clear()
