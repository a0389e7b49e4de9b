"""Shutting down within SHUTDOWN_GRACE_S, whichever way the service was started.

Refuse new work (503), let accepted requests finish; a few seconds before the grace runs out,
stop the work still running (answered 503 with Retry-After) and let the answers be written. The
server closes its connections in the last seconds of the grace.
"""

from __future__ import annotations

import asyncio
import logging

from app.config import Settings
from app.context import InFlight
from app.runtime.registry import Registry

logger = logging.getLogger(__name__)


def stop_grace(settings: Settings) -> float:
    """The end of SHUTDOWN_GRACE_S kept for stopping work, and again for closing connections."""
    return min(2.0, settings.shutdown_grace_s / 4)


class Drain:
    def __init__(self, settings: Settings, registry: Registry, in_flight: InFlight):
        self.settings = settings
        self.registry = registry
        self.in_flight = in_flight
        self._result: bool | None = None
        self._lock = asyncio.Lock()

    async def _until(self, done: object, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        while not done():  # type: ignore[operator]
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def run(self) -> bool:
        """Drain once (later calls wait for the first); True if nothing had to be stopped."""
        async with self._lock:
            if self._result is None:
                self._result = await self._drain()
            return self._result

    async def _drain(self) -> bool:
        loop = asyncio.get_running_loop()
        grace = self.settings.shutdown_grace_s
        last = stop_grace(self.settings)
        started = loop.time()
        logger.info("draining (grace %.0f s)", grace)
        self.registry.refuse_new()
        work_deadline = started + grace - 2 * last
        await self._until(lambda: self.in_flight.count == 0 and self.registry.idle, work_deadline)
        finished = await self.registry.drain(work_deadline - loop.time(), last)
        answered = await self._until(lambda: self.in_flight.count == 0, started + grace - last)
        logger.info("drained in %.1f s%s", loop.time() - started,
                    "" if finished and answered else " (work still running was stopped)")
        return finished and answered
