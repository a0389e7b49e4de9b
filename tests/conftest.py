"""Shared fixtures: a real uvicorn server (in-process thread) over the demo catalog, real HTTP."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image

from app.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "models" / "catalog.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A uvicorn server on a free loopback port, in a thread of this process."""

    def __init__(self, settings: Settings):
        self.app: FastAPI = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.server.started:
                try:
                    if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            if not self.thread.is_alive():
                raise RuntimeError("server thread exited during start-up")
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.app.state.service


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
