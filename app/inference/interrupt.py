"""Stopping running work: a worker computing a batch registers why it should stop (every item's
client gone or past its deadline, the service shutting down), and the compute path calls
`checkpoint()` between chunks (every forward of the explained function, every chunk of a method),
which raises `Interrupted` then. The replica is free at once; nobody waits for that work."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.errors import ServiceError

StopReason = Callable[[], ServiceError | None]
"""None to go on, else the answer the batch's items get."""

_local = threading.local()


class Interrupted(Exception):
    """The work was stopped; `error` is what its requests are answered (504, 499, 503)."""

    def __init__(self, error: ServiceError):
        super().__init__(error.detail)
        self.error = error


@contextmanager
def watching(reason: StopReason) -> Iterator[None]:
    """Checkpoints on this thread consult `reason` until the block ends."""
    previous = getattr(_local, "reason", None)
    _local.reason = reason
    try:
        yield
    finally:
        _local.reason = previous


def current() -> StopReason | None:
    """What checkpoints on this thread consult now (to watch for the same on another thread)."""
    reason: StopReason | None = getattr(_local, "reason", None)
    return reason


def checkpoint() -> None:
    reason: StopReason | None = getattr(_local, "reason", None)
    if reason is not None:
        error = reason()
        if error is not None:
            raise Interrupted(error)
