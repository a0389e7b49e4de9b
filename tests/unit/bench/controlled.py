"""A real loopback HTTP server whose answers, delays and statuses a test controls, for the
load generator tests (bench/loadgen.py, bench/wrk.py).

The server counts, per test key, the requests it receives, the bodies and content types, their
arrival times and how many are in flight at once, so every number a load generator reports is
checked against what the server saw or against expectations computed in the test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bench.loadgen import LoadResult

OK_BODY_BYTES = 1234
ERROR_BODY = b"failed!"


@dataclass
class Seen:
    """What the server saw for one test key (all touched on the server's event loop only)."""

    count: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: list[float] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)


@dataclass
class Controlled:
    url: str
    seen: defaultdict[str, Seen]

    def route(self, **params: object) -> tuple[str, Seen]:
        """A fresh key's URL with these answer parameters, and what the server will see for it."""
        key = uuid.uuid4().hex
        query = "&".join(f"{k}={v}" for k, v in {"key": key, **params}.items())
        return f"{self.url}/answer?{query}", self.seen[key]


def status_for(n: int, every_503: int, every_429: int) -> int:
    """The status the server gives its n-th request (0-based) for a key."""
    if every_503 and n % every_503 == every_503 - 1:
        return 503
    if every_429 and n % every_429 == every_429 - 1:
        return 429
    return 200


class _Truncated(Response):
    """Headers promising OK_BODY_BYTES, half of them, then the connection dropped (the app fails
    mid-answer: uvicorn closes the connection)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(OK_BODY_BYTES).encode())]})
        await send({"type": "http.response.body", "body": b"x" * (OK_BODY_BYTES // 2), "more_body": True})
        raise ConnectionAbortedError("the answer dropped half-way, on purpose")


def make_app(seen: defaultdict[str, Seen]) -> Starlette:
    async def answer(request: Request) -> Response:
        q = request.query_params
        record = seen[q["key"]]
        body = await request.body()
        n = record.count
        record.count += 1
        record.arrivals.append(time.perf_counter())
        record.bodies.append(body)
        record.content_types.append(request.headers.get("content-type", ""))
        record.in_flight += 1
        record.max_in_flight = max(record.max_in_flight, record.in_flight)
        try:
            delay_ms = float(q.get("delay_ms", 0)) + (n % int(q.get("cycle", 1))) * float(q.get("step_ms", 0))
            slow_every = int(q.get("slow_every", 0))
            if slow_every and n % slow_every == slow_every - 1:
                delay_ms += float(q.get("slow_ms", 0))
            # At least the delay in real time: an event loop's timers may fire a little early
            # (uvloop's clock is the time its iteration began).
            end = time.perf_counter() + delay_ms / 1000
            while (left := end - time.perf_counter()) > 0:
                await asyncio.sleep(left)
        finally:
            record.in_flight -= 1
        if n < int(q.get("truncate", 0)):
            return _Truncated()
        status = status_for(n, int(q.get("every_503", 0)), int(q.get("every_429", 0)))
        if status != 200:
            return Response(ERROR_BODY, status_code=status)
        if q.get("sample"):
            return JSONResponse({"timings_ms": {"n": n, "fixed": 2.5, "text": "not a number"}})
        size = int(q.get("size", OK_BODY_BYTES))
        headers = {"connection": "close"} if q.get("close") else None
        if q.get("chunked"):
            async def chunks() -> AsyncIterator[bytes]:
                third = size // 3
                for part in (b"a" * third, b"b" * third, b"c" * (size - 2 * third)):
                    yield part

            return StreamingResponse(chunks(), headers=headers)
        return Response(b"x" * size, headers=headers)

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/answer", answer, methods=["POST"]), Route("/healthz", healthz)])


BODIES = [b'{"a": 1}', b'{"bb": 22}', b'{"ccc": 333, "pad": "' + b"z" * 40 + b'"}']


def assert_nothing_answered(result: LoadResult, sent: int) -> None:
    """`sent` requests went out and none was answered before the run gave up on them."""
    assert result.sent == sent
    assert result.unfinished == sent
    assert result.ok == 0 and result.errors == {}
    assert result.latency_ms == {} and result.bytes_per_response == 0.0 and result.throughput_rps == 0.0
