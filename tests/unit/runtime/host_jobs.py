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
