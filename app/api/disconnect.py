"""Cancel a request's work when its client goes away, so queued work is dropped before compute."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from app.errors import ClientClosed

T = TypeVar("T")


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it (call after the body was read).

    The disconnect ends the request with `ClientClosed` (499, which nobody receives) rather than
    a bare CancelledError, which the server would log as an exception in the application.
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone.set()
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if gone.is_set() and current is not None and not current.cancelling():
            raise ClientClosed("the client closed the connection before the answer was ready") from None
        raise
    finally:
        watcher.cancel()
