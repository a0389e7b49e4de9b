"""`python -m app`: the one way the service is served (the CLI's `explainserve serve` calls `serve`).

On SIGTERM or SIGINT the service drains: `/readyz` and new requests answer 503 while accepted
requests finish; at SHUTDOWN_GRACE_S minus a few seconds, work still running is stopped and its
requests answered 503 (with Retry-After); connections are closed and the process exits 0, all
within SHUTDOWN_GRACE_S. A second signal stops at once.

Slow clients hold nothing: a connection must send a request's headers within HEADER_TIMEOUT_S
(else it is closed) and its body within BODY_TIMEOUT_S (else 408).
"""

from __future__ import annotations

import asyncio
import logging
import os
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import Settings, get_settings
from app.logs import configure

logger = logging.getLogger(__name__)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection that does not send a request's headers
    within `header_timeout` seconds of opening or of starting that request (slowloris). uvicorn's
    own keep-alive timeout only covers connections that send nothing at all."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()


def apply_openmp(settings: Settings) -> None:
    """OMP_WAIT_POLICY for the OpenMP runtime torch loads, which reads it once, as it loads: this
    module imports torch only after (`serve`). PASSIVE: a thread waiting for its team sleeps
    rather than spins, which on a host whose cores are shared (host work processes, other
    services) cut integrated gradients' CPU per request 30% and tripled its throughput
    (bench/results/history.md)."""
    os.environ["OMP_WAIT_POLICY"] = settings.omp_wait_policy


def protocol_for(settings: Settings) -> type[HeaderTimeoutProtocol]:
    return type("GuardedHttp", (HeaderTimeoutProtocol,), {"header_timeout": settings.header_timeout_s})


class DrainingServer(uvicorn.Server):
    """uvicorn, draining the app (`app.state.shutdown`) before it stops."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self._app = app
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self.should_exit:
            super().handle_exit(sig, frame)  # second signal: stop now
            return
        logger.info("signal %s: draining before exit", sig)
        self._drain_task = asyncio.get_event_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            finished = await self._app.state.shutdown()
            if not finished:
                logger.warning("the grace period ran out: work still running was stopped and answered 503")
        finally:
            self.should_exit = True


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """How uvicorn serves `app`: loopback or not, the slow-client guard, and a short final wait
    (the app has drained by then)."""
    from app.runtime.drain import stop_grace

    return uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                          http=protocol_for(settings), timeout_keep_alive=5,
                          timeout_graceful_shutdown=max(1, round(stop_grace(settings))))


def serve(settings: Settings) -> None:
    configure(settings.log_format, settings.log_level)
    apply_openmp(settings)
    from app.main import create_app  # torch, and the OpenMP runtime with it, load here

    app = create_app(settings)
    DrainingServer(server_config(app, settings), app).run()


def main() -> None:
    serve(get_settings())


if __name__ == "__main__":
    main()
