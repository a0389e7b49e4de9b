"""Jobs for the host work process tests: module-level, so a worker process can import them."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from app.errors import ErrorItem, InvalidInput


def echo(value: object) -> object:
    return value


def pid() -> int:
    return os.getpid()


def loaded(module: str) -> bool:
    return module in sys.modules


def refuse() -> None:
    raise InvalidInput("instance 0: not an image", [ErrorItem(("instances", 0), "not an image")])


def crash() -> None:
    raise ValueError("a bug in a job")


def die() -> None:
    os._exit(3)


def hold(folder: str, value: object) -> object:
    """Write this process's pid to `folder`/pid-<pid>, then wait until `folder`/go exists."""
    Path(folder, f"pid-{os.getpid()}").touch()
    while not Path(folder, "go").exists():
        time.sleep(0.01)
    return value


def niceness() -> int:
    return os.nice(0)


def refault_pages(blocks: int = 160, block_bytes: int = 100 << 10) -> int:
    """Page faults of writing `blocks` heap blocks (below glibc's first mmap threshold, 128 KiB)
    after the same blocks were written and freed once: none where freed memory is kept, about a
    page per 4 KiB where the heap's free top was returned to the system in between."""
    import resource

    def write_and_free() -> None:
        held = [bytearray(block_bytes) for _ in range(blocks)]
        for block in held:
            block[::4096] = b"\x01" * len(block[::4096])
        del held

    write_and_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    write_and_free()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def unpicklable() -> object:
    """A value that cannot be sent back (a lambda)."""
    return lambda: None
