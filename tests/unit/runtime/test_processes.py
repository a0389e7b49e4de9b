"""The host work process pool (app/runtime/processes.py, host.py): results and errors come back as
from a call in place; the workers never import torch; a worker that dies costs only its own job
(retried once, then 503) and is replaced; closing ends every worker, busy or not."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from app.errors import InternalError, InvalidInput, NotReady
from app.runtime import frames
from app.runtime.host import JOB_MODULES, HostPool
from app.runtime.processes import FRAME_JOBS, FRAMES_IN_FLIGHT, SOCKET_BUFFER_BYTES, ProcessPool
from tests.conftest import make_settings
from tests.unit.runtime import host_jobs

T = TypeVar("T")
MODULES = [*JOB_MODULES, "tests.unit.runtime.host_jobs"]


def with_pool(test: Callable[[ProcessPool], Awaitable[T]], size: int = 2) -> T:
    async def body() -> T:
        pool = ProcessPool(size, MODULES)
        await pool.start()
        try:
            return await test(pool)
        finally:
            pool.close(5.0)
    return asyncio.run(body())


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_results_come_back_from_other_processes() -> None:
    async def test(pool: ProcessPool) -> None:
        payload = {"bytes": b"\x00" * 200_000, "text": "é" * 10, "numbers": [1.5, -2, None]}
        assert await pool.run(host_jobs.echo, payload) == payload
        pids = set(await asyncio.gather(*(pool.run(host_jobs.pid) for _ in range(20))))
        assert pids <= set(pool.pids) and os.getpid() not in pids
    with_pool(test)


def test_workers_never_import_torch() -> None:
    import torch  # noqa: F401  (this process has it; its workers must not)

    async def test(pool: ProcessPool) -> None:
        assert await pool.run(host_jobs.loaded, "app.kinds.image")  # the job modules are imported
        assert not await pool.run(host_jobs.loaded, "torch")
    with_pool(test)


def test_workers_run_at_the_niceness_they_are_given() -> None:
    async def body() -> tuple[list[int], int]:
        pool = ProcessPool(2, MODULES, nice=7)
        await pool.start()
        try:
            return list(await asyncio.gather(*(pool.run(host_jobs.niceness) for _ in range(4)))), os.nice(0)
        finally:
            pool.close(5.0)

    levels, ours = asyncio.run(body())
    assert levels == [min(19, ours + 7)] * 4  # below this process's priority, which stays as it was
    assert HostPool(make_settings()).processes.nice == 0  # type: ignore[union-attr]  # the default
    assert HostPool(make_settings(host_nice=4)).processes.nice == 4  # type: ignore[union-attr]


def test_workers_keep_freed_heap_memory_when_asked() -> None:
    """MALLOC_RETAIN reaches the workers: 16 MB written, freed and written again faults its pages
    in again by default (glibc returns the heap's free top past 256 KiB) and not when kept."""
    async def body(retain: bool) -> int:
        pool = ProcessPool(1, MODULES, retain_heap=retain)
        await pool.start()
        try:
            return int(await pool.run(host_jobs.refault_pages))
        finally:
            pool.close(5.0)

    assert asyncio.run(body(True)) < 100
    assert asyncio.run(body(False)) > 1000
    assert HostPool(make_settings()).processes.retain_heap  # type: ignore[union-attr]  # the default
    assert not HostPool(make_settings(malloc_retain=False)).processes.retain_heap  # type: ignore[union-attr]


def test_the_sockets_hold_a_pipeline_of_large_jobs() -> None:
    """Each end's send buffer is SOCKET_BUFFER_BYTES (doubled by the kernel, capped by
    net.core.wmem_max): twice the jobs a worker holds (FRAMES_IN_FLIGHT frames of FRAME_JOBS), each
    a picture's data, are written and come back."""
    cap = int(Path("/proc/sys/net/core/wmem_max").read_text())

    async def test(pool: ProcessPool) -> None:
        sock = pool._workers[0].writer.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * min(SOCKET_BUFFER_BYTES, cap)
        payloads = [bytes([i]) * 150_000 for i in range(2 * FRAME_JOBS * FRAMES_IN_FLIGHT)]
        assert await asyncio.gather(*(pool.run(host_jobs.echo, p) for p in payloads)) == payloads
    with_pool(test, size=1)


def test_errors_come_back_as_raised() -> None:
    async def test(pool: ProcessPool) -> None:
        with pytest.raises(InvalidInput) as refused:
            await pool.run(host_jobs.refuse)
        assert refused.value.detail == "instance 0: not an image"
        assert [item.loc for item in refused.value.errors] == [("instances", 0)]
        with pytest.raises(ValueError, match="a bug in a job"):
            await pool.run(host_jobs.crash)
        with pytest.raises(InternalError, match="cannot be sent"):
            await pool.run(host_jobs.echo, lambda: None)
        assert await pool.run(host_jobs.echo, 7) == 7  # the pool goes on
        # asked for together, so framed together: the job that cannot be sent is answered here,
        # its frame goes without it
        together = await asyncio.gather(*(pool.run(host_jobs.echo, value)
                                          for value in (1, 2, 3, 4, lambda: None, 6)), return_exceptions=True)
        assert together[:4] + together[5:] == [1, 2, 3, 4, 6]
        assert isinstance(together[4], InternalError) and "cannot be sent" in str(together[4])
    with_pool(test)


def test_jobs_asked_for_together_or_queued_travel_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs asked for in one iteration of the event loop cross in one frame (up to FRAME_JOBS);
    those queued while the worker holds FRAMES_IN_FLIGHT frames go FRAME_JOBS to a frame when it
    answers one; each still gets its own result, in the order asked."""
    sizes: list[int] = []
    framed = frames.frame

    def recording(obj: object) -> bytes:
        if isinstance(obj, list):
            sizes.append(len(obj))
        return framed(obj)

    async def test(pool: ProcessPool) -> None:
        sizes.clear()  # the start's own frame
        held = asyncio.ensure_future(pool.run(host_jobs.hold, str(tmp_path), "held"))
        await _until(lambda: any(tmp_path.glob("pid-*")))
        assert sizes == [1]
        asked = 2 * FRAME_JOBS + 1
        together = asyncio.gather(*(pool.run(host_jobs.echo, i) for i in range(asked)))
        await _until(lambda: len(sizes) == FRAMES_IN_FLIGHT)
        assert sizes == [1, FRAME_JOBS]  # the second frame the worker may hold; the rest queued
        (tmp_path / "go").touch()
        assert await held == "held"
        assert await together == list(range(asked))
        assert sizes == [1, FRAME_JOBS, FRAME_JOBS, 1]
    monkeypatch.setattr(frames, "frame", recording)
    with_pool(test, size=1)


def test_each_job_of_a_frame_gets_its_own_answer() -> None:
    """Results, errors and a reply that cannot be pickled, side by side in one frame: each job
    answered as if it had gone alone."""
    async def test(pool: ProcessPool) -> None:
        done = await asyncio.gather(*(pool.run(fn, *args) for fn, args in (
            (host_jobs.echo, (1,)), (host_jobs.crash, ()), (host_jobs.unpicklable, ()), (host_jobs.refuse, ()),
            (host_jobs.pid, ()))), return_exceptions=True)
        assert done[0] == 1
        assert isinstance(done[1], ValueError) and str(done[1]) == "a bug in a job"
        assert isinstance(done[2], RuntimeError) and "unpicklable: unpicklable reply" in str(done[2])
        assert isinstance(done[3], InvalidInput) and done[3].detail == "instance 0: not an image"
        assert done[4] == pool.pids[0]  # one worker: all in one frame, and it goes on
        assert await pool.run(host_jobs.echo, 7) == 7
    with_pool(test, size=1)


def test_a_killed_worker_costs_nothing_but_a_retry(tmp_path: Path) -> None:
    async def test(pool: ProcessPool) -> None:
        job = asyncio.ensure_future(pool.run(host_jobs.hold, str(tmp_path), "done"))
        await _until(lambda: any(tmp_path.glob("pid-*")))
        victim = int(next(tmp_path.glob("pid-*")).name.removeprefix("pid-"))
        os.kill(victim, signal.SIGKILL)
        await _until(lambda: pool.restarts == 1)
        (tmp_path / "go").touch()
        assert await job == "done"  # retried on another worker
        assert victim not in pool.pids and len(pool.pids) == 2
        assert await pool.run(host_jobs.echo, 1) == 1
    with_pool(test)


def test_a_job_that_kills_every_worker_it_runs_on_is_a_503_and_the_pool_recovers() -> None:
    async def test(pool: ProcessPool) -> None:
        with pytest.raises(NotReady, match="host work process died"):
            await pool.run(host_jobs.die)
        await _until(lambda: len(pool.pids) == 2)  # the second replacement starting
        assert pool.restarts == 2
        assert await asyncio.gather(*(pool.run(host_jobs.echo, i) for i in range(8))) == list(range(8))
    with_pool(test)


def test_close_ends_every_worker_and_answers_what_was_waiting(tmp_path: Path) -> None:
    async def body() -> None:
        pool = ProcessPool(1, MODULES)
        await pool.start()
        processes = list(pool._workers)
        busy = asyncio.ensure_future(pool.run(host_jobs.hold, str(tmp_path), "never"))  # never released
        queued = asyncio.ensure_future(pool.run(host_jobs.echo, "queued"))
        await _until(lambda: any(tmp_path.glob("pid-*")))
        pool.close(0.2)
        assert all(worker.process.poll() is not None for worker in processes)  # the busy one killed
        for job in (busy, queued):
            with pytest.raises(NotReady, match="shutting down"):
                await job
        with pytest.raises(NotReady):
            await pool.run(host_jobs.echo, 1)
    asyncio.run(body())


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_host_pool_runs_jobs_in_the_mode_it_is_set_to(mode: str) -> None:
    async def body() -> None:
        host = HostPool(make_settings(host_mode=mode, host_workers=2))
        await host.start()
        try:
            where = await host.run(host_jobs.pid)
            assert (where != os.getpid()) == (mode == "process")
            assert await host.run_local(host_jobs.pid) == os.getpid()
        finally:
            host.close()
        with pytest.raises(NotReady):
            await host.run_local(host_jobs.pid)
    asyncio.run(body())


def test_every_job_a_dead_worker_held_is_retried_in_order(tmp_path: Path) -> None:
    async def test(pool: ProcessPool) -> None:
        held = asyncio.ensure_future(pool.run(host_jobs.hold, str(tmp_path), "held"))
        behind = [asyncio.ensure_future(pool.run(host_jobs.echo, i)) for i in range(3)]  # queued on the one worker
        await _until(lambda: any(tmp_path.glob("pid-*")))
        os.kill(pool.pids[0], signal.SIGKILL)
        await _until(lambda: pool.restarts == 1)
        (tmp_path / "go").touch()
        assert await held == "held"
        assert await asyncio.gather(*behind) == [0, 1, 2]
    with_pool(test, size=1)


def test_a_job_that_kills_its_worker_takes_no_other_job_down_with_it(tmp_path: Path) -> None:
    """Jobs that crossed in the same frame as one that kills its worker are retried, each alone
    on a worker holding nothing else, so they get their answers; the killer gets its 503."""
    async def test(pool: ProcessPool) -> None:
        held = asyncio.ensure_future(pool.run(host_jobs.hold, str(tmp_path), "held"))
        await _until(lambda: any(tmp_path.glob("pid-*")))
        frame = [asyncio.ensure_future(pool.run(host_jobs.echo, i)) for i in range(3)]  # asked together
        killer = asyncio.ensure_future(pool.run(host_jobs.die))
        frame += [asyncio.ensure_future(pool.run(host_jobs.echo, i)) for i in range(3, 6)]
        (tmp_path / "go").touch()
        assert await held == "held"
        assert await asyncio.gather(*frame) == list(range(6))
        with pytest.raises(NotReady, match="host work process died"):
            await killer
        assert pool.restarts == 2  # the frame's worker, then the killer's alone
        assert await pool.run(host_jobs.echo, 7) == 7
    with_pool(test, size=1)
