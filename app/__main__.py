"""`python -m app`: serve the catalog with settings from the environment.

On SIGTERM or SIGINT the service drains first: `/readyz` and new requests answer 503 while
accepted requests finish (at most SHUTDOWN_GRACE_S), then uvicorn stops and the process exits 0.
A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.config import get_settings
from app.logs import configure
from app.main import create_app

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self._app = app
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self.should_exit:
            super().handle_exit(sig, frame)  # second signal: stop now
            return
        logger.info("signal %s: draining before exit", sig)
        loop = asyncio.get_event_loop()
        self._drain_task = loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            finished = await self._app.state.begin_drain()
            if not finished:
                logger.warning("grace period ran out with work still in flight")
        finally:
            self.should_exit = True


def main() -> None:
    settings = get_settings()
    configure(settings.log_format, settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5)
    DrainingServer(config, app).run()


if __name__ == "__main__":
    main()
