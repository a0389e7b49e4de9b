"""Reading request bodies at a cost bounded by the limits, not by what the client sends.

- The body streams in under a size limit (413 as soon as it is over) and a read timeout (408), and
  stops with 503 when the service starts draining, so slow or stalled clients hold nothing.
- JSON is parsed only if it can hold no more values than a valid request (a count of its commas,
  at C speed): a body of millions of numbers is refused before it is parsed into millions of
  objects. Duplicate keys in an object are refused (422): which one counts would be a guess.
- The instances are counted before any of them is validated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from app.errors import (
    BadRequest,
    ClientClosed,
    ErrorItem,
    InvalidInput,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
    quoted,
)


@dataclass(frozen=True)
class BodyLimits:
    """What a request body may be (settings, and the catalog's widest instance)."""

    max_bytes: int
    max_instances: int
    max_values: int
    """Commas a JSON body may hold: MAX_INSTANCES instances of the widest model, and room for options."""
    read_timeout_s: float
    draining: Callable[[], bool] = lambda: False

    @staticmethod
    def values_for(max_instances: int, widest_instance: int) -> int:
        return max_instances * (widest_instance + 1) + 10_000


async def read_body(request: Request, limits: BodyLimits) -> bytes:
    """The whole body: 413 past `max_bytes`, 408 if it takes longer than `read_timeout_s`, 503 when
    the service starts draining while it is still arriving."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds MAX_BODY_BYTES={limits.max_bytes}")
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.read_timeout_s
    more = True
    while more:
        if limits.draining():
            raise NotReady("the service is shutting down", headers={"Retry-After": "5", "Connection": "close"})
        left = deadline - loop.time()
        if left <= 0:
            raise RequestTimeout(f"the body was not received within BODY_TIMEOUT_S={limits.read_timeout_s:g} s",
                                 headers={"Connection": "close"})
        try:  # wake up at least every second to notice a drain; a cancelled receive() loses nothing
            message = await asyncio.wait_for(request.receive(), min(1.0, left))
        except TimeoutError:
            continue
        if message["type"] == "http.disconnect":
            raise ClientClosed("the client closed the connection before the body was complete")
        chunk = message.get("body", b"")
        more = bool(message.get("more_body", False))
        size += len(chunk)
        if size > limits.max_bytes:
            raise PayloadTooLarge(f"body exceeds MAX_BODY_BYTES={limits.max_bytes}")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # lets Starlette's form parser reuse what was read
    return body


class _DuplicateKey(Exception):
    """Not a ValueError: json.loads must not report it as malformed JSON."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def parse_json(body: bytes, max_values: int | None = None) -> Any:
    """JSON with NaN and Infinity allowed in (rejected later as non-finite numbers, 422)."""
    if not body.strip():
        raise BadRequest("empty body: send a JSON object")
    if max_values is not None and body.count(b",") > max_values:
        raise PayloadTooLarge(f"the body holds more JSON values than a request of MAX_INSTANCES instances can "
                              f"({max_values} commas at most)")
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise InvalidInput(f"duplicate key {quoted(exc.key)} in a JSON object",
                           [ErrorItem(("body",), f"duplicate key {quoted(exc.key)}")]) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and integers of over 4300 digits
        raise BadRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


def check_instance_count(data: dict[str, Any], files: int, max_instances: int) -> None:
    """413 for too many instances, before any of them is validated."""
    instances = data.get("instances")
    count = (len(instances) if isinstance(instances, list) else 0) + files
    if count > max_instances:
        raise PayloadTooLarge(f"{count} instances exceed MAX_INSTANCES={max_instances}")
