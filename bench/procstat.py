"""Server CPU time by thread group and by child process, from /proc.

`sample(pid)` reads, for a server process and all its descendants, user + system CPU time per
thread (`/proc/<pid>/task/<tid>/stat`) with the thread's name (`.../comm`), the process's own
total (its exited threads included) and the CPU of children it has already reaped. `usage(before,
after)` turns two samples into CPU seconds per group:

- `event loop`: the process's main thread (uvicorn's event loop in both servers)
- `workers`: threads named `worker*` (our service's device workers)
- `host work`: threads named `host*` (our service's pool decoding images and rendering answers)
- `request threads`: `AnyIO worker thread`s (the thread pool FastAPI runs a plain `def` route in:
  the naive server's requests)
- `other`: every other thread, and threads that exited during the interval
- `child processes`: every descendant process (live, or exited and reaped during the interval),
  also broken down by process name in `children` (our service's host work processes as `host-work`)

A thread's name in /proc is the OS-level name: torch's intra-op threads inherit the name of the
thread that started them (so a worker's compute threads count as `workers`), and Python threads
get their `threading` name at the OS level only when `bench/threadnames/sitecustomize.py` is on
their PYTHONPATH (Python 3.11 does not set it; bench/servers.py arranges it).

Times are the kernel's clock-tick accounting (1/SC_CLK_TCK s, usually 10 ms, per thread): use
intervals of seconds, not milliseconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GROUPS", "TreeSample", "group_of", "sample", "usage"]

GROUPS = ("event loop", "workers", "host work", "request threads", "other", "child processes")
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def group_of(name: str, main_thread: bool) -> str:
    """The group of a thread of the server process, by its OS-level name."""
    if main_thread:
        return "event loop"
    for prefix, group in (("worker", "workers"), ("host", "host work"), ("AnyIO worker", "request threads")):
        if name.startswith(prefix):
            return group
    return "other"


@dataclass
class TreeSample:
    at: float
    """time.monotonic() when read."""
    threads: dict[int, tuple[str, float]] = field(default_factory=dict)
    """tid -> (OS-level name, CPU s) of the server process's live threads."""
    process_s: float = 0.0
    """The server process's CPU s, exited threads included."""
    children: dict[int, tuple[str, float]] = field(default_factory=dict)
    """pid -> (name, CPU s including its own reaped children) of every live descendant."""
    reaped_s: float = 0.0
    """CPU s of the server's children it has waited for (cutime + cstime)."""
    alive: bool = True


def _stat_fields(path: Path) -> list[str]:
    # The name in parentheses may hold spaces and parentheses: split after the last ')'.
    return path.read_text().rsplit(")", 1)[1].split()


def _cpu(fields: list[str], with_children: bool = False) -> float:
    # fields[0] is the state (field 3 of proc(5)): utime is field 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks * TICK_S


def _name(path: Path) -> str:
    return path.read_text().rstrip("\n")


HOST_WORKER = b"app.runtime.host_worker"
"""In the command line of our service's host work processes (`python -c ...`, named `python3.x`)."""


def _process_name(pid: int) -> str:
    """A child's name: `host-work` for our service's host work processes, else its `comm`."""
    if HOST_WORKER in (PROC / str(pid) / "cmdline").read_bytes():
        return "host-work"
    return _name(PROC / str(pid) / "comm")


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry / "stat")[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sample(pid: int) -> TreeSample:
    """CPU so far of `pid`'s threads and of its descendants (a process that is gone: alive=False)."""
    out = TreeSample(at=time.monotonic())
    base = PROC / str(pid)
    try:
        for task in (base / "task").iterdir():
            try:
                out.threads[int(task.name)] = (_name(task / "comm"), _cpu(_stat_fields(task / "stat")))
            except (OSError, IndexError, ValueError):
                continue  # the thread exited while we read
        fields = _stat_fields(base / "stat")
    except (OSError, IndexError, ValueError):
        out.alive = False
        return out
    # Read after the threads, so the total is never below their sum by more than what ran in between.
    out.process_s = _cpu(fields)
    out.reaped_s = _cpu(fields, with_children=True) - out.process_s
    for child in _descendants(pid):
        try:
            out.children[child] = (_process_name(child),
                                   _cpu(_stat_fields(PROC / str(child) / "stat"), with_children=True))
        except (OSError, IndexError, ValueError):
            continue
    return out


def usage(before: TreeSample, after: TreeSample, pid: int) -> dict[str, Any]:
    """CPU seconds of each group between two samples of the same server, the wall time between
    them, and the cores busy on average (all groups' CPU over the wall time)."""
    groups = dict.fromkeys(GROUPS, 0.0)
    counted = 0.0
    for tid, (name, cpu) in after.threads.items():
        spent = cpu - before.threads.get(tid, (name, 0.0))[1]
        groups[group_of(name, tid == pid)] += spent
        counted += spent
    # Threads that exited in between: what the process total gained beyond its live threads.
    groups["other"] += max((after.process_s - before.process_s) - counted, 0.0)
    children: dict[str, float] = {}
    for child, (name, cpu) in after.children.items():
        spent = cpu - before.children.get(child, (name, 0.0))[1]
        children[name] = children.get(name, 0.0) + spent
    gone = sum(cpu for child, (_, cpu) in before.children.items() if child not in after.children)
    reaped = (after.reaped_s - before.reaped_s) - gone
    if abs(reaped) > 1e-9:
        children["(exited)"] = children.get("(exited)", 0.0) + reaped
    groups["child processes"] = sum(children.values())
    wall = after.at - before.at
    total = sum(groups.values())
    return {"wall_s": wall, "total_s": total, "groups_s": groups, "children_s": children,
            "cores_busy": total / wall if wall > 0 else None}
