"""Shared fixtures: a real uvicorn server (in-process thread) over the demo catalog, real HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from app.config import Settings
from app.main import create_app
from tests.fixtures.threaded import ThreadedServer
from tests.fixtures.threaded import free_port as free_port  # re-exported: tests import it from here

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "models" / "catalog.toml"


class LiveServer(ThreadedServer):
    """Our app over `settings`, served by uvicorn on a free loopback port in a thread of this process."""

    def __init__(self, settings: Settings):
        self.app: FastAPI = create_app(settings)
        super().__init__(self.app, "/readyz")

    def __enter__(self) -> LiveServer:
        super().__enter__()
        return self

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.app.state.service

    def on_server_loop(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run `coro` on the server's event loop (its queues and tasks live there); await the result."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.app.state.loop))


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"models": CATALOG, "device": "cpu", "log_level": "WARNING"}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def live() -> Iterator[LiveServer]:
    """The demo catalog served once for the whole session."""
    with LiveServer(make_settings()) as server:
        yield server


@pytest.fixture()
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=120) as c:
        yield c


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


def png_b64(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def image_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()
