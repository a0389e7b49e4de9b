"""Async HTTP load generator for the benchmarks: loopback only, bounded in requests and time.

Every in-flight request has its own keep-alive connection. The default client is a minimal
HTTP/1.1 client on asyncio streams (`RawConnection`, ~0.1 ms of CPU per request); `client="httpx"`
uses httpx.AsyncClient instead (one connection per client: a shared 64-connection httpx pool
costs ~5 ms of CPU per request, which on a small host is taken from the server under test).

Two modes:

- closed loop (`concurrency=N`): N clients, each sends its next request as soon as its last
  one is answered. Measures the throughput a server sustains with N requests in flight.
- open loop (`rate=R`): requests start on a fixed schedule, R per second, whether or not the
  earlier ones were answered (at most `max_in_flight` at once). Latency is measured from the
  scheduled start, so a server that falls behind is charged for the queue it builds
  (no coordinated omission).

Both stop issuing at `max_requests` or `duration_s`, whichever comes first, then wait up to
`drain_s` for the requests in flight; throughput counts every answer over the whole span,
first send to last answer. Bodies are pre-encoded bytes so the client spends as little CPU as
it can (on a shared 2-core host the client competes with the server).

    python -m bench.loadgen http://127.0.0.1:8000/v1/models/breast-cancer/explain \
        --body body.json --concurrency 16 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["LoadResult", "check_loopback", "percentile", "run_load"]


def check_loopback(url: str) -> None:
    """Raise ValueError unless `url` is http(s) to a loopback address (the load stays on this host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 80)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
            raise ValueError(f"refusing non-loopback target {host!r} ({address}): the load generator "
                             "only sends to this machine")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile `q` in [0, 100] of already sorted values (NaN if empty)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    frac = pos - low
    return sorted_values[low] * (1.0 - frac) + sorted_values[high] * frac


@dataclass
class LoadResult:
    mode: str
    """"closed" (concurrency) or "open" (rate)."""
    concurrency: int | None
    rate: float | None
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Non-2xx answers by status, and transport failures by exception name."""
    unfinished: int = 0
    """Requests still in flight when the drain time ran out (cancelled, not counted)."""
    elapsed_s: float = 0.0
    throughput_rps: float = 0.0
    """Successful answers per second over the whole span."""
    rows_per_request: float = 0.0
    rows_per_s: float = 0.0
    """throughput_rps x rows_per_request: attribution rows (fwd+bwd rows of useful work) per second."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    """Of successful answers: p50, p90, p95, p99, mean, min, max."""
    bytes_per_response: float = 0.0
    bytes_per_request: float = 0.0
    client: str = "raw"
    time_bounded: bool = False
    """True when the duration, not the request count, ended the run."""
    sampled: dict[str, float] = field(default_factory=dict)
    """Means of the numeric fields of `sample_key` in sampled JSON answers (e.g. timings_ms)."""
    client_cpu_s: float | None = None
    """CPU time (user + system) the load generator itself spent on the run."""
    details: dict[str, Any] = field(default_factory=dict)
    """What only one client reports (bench/wrk.py: wrk's corrected latencies, its pinning)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    response_bytes: int = 0
    sent: int = 0
    first_start: float = math.inf
    last_end: float = 0.0
    sample_key: str | None = None
    sample_every: int = 10
    samples: list[dict[str, float]] = field(default_factory=list)

    def sample(self, content: bytes) -> None:
        if self.sample_key is None or (len(self.latencies) - 1) % self.sample_every:
            return
        try:
            value = json.loads(content).get(self.sample_key)
        except (ValueError, AttributeError):
            return
        if isinstance(value, dict):
            self.samples.append({k: float(v) for k, v in value.items() if isinstance(v, int | float)})


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: pre-built request bytes out,
    status and body in. About 0.1 ms of client CPU per request, against 1-2 ms for httpx (whose
    cost, on a small shared host, would be taken from the server under test)."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str], timeout_s: float):
        self.host, self.port, self.path = host, port, path
        self.timeout_s = timeout_s
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n{extra}content-length: "
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._exchange(body), self.timeout_s)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            await self._open()
        assert self._reader is not None and self._writer is not None
        self._writer.write(f"{self._head}{len(body)}\r\n\r\n".encode("latin-1") + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            content = await self._reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            content = b"".join(parts)
        else:
            content = await self._reader.read()
            self.close()
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, content


class _Client:
    """One request at a time over its own connection: raw or httpx (one connection each)."""

    def __init__(self, kind: str, url: str, headers: dict[str, str], timeout_s: float):
        self.url = url
        parts = urlsplit(url)
        self._headers = headers
        self._raw: RawConnection | None = None
        self._httpx: httpx.AsyncClient | None = None
        if kind == "raw":
            if parts.scheme != "http":
                raise ValueError("the raw client speaks plain http only; use client='httpx'")
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            self._raw = RawConnection(parts.hostname or "127.0.0.1", parts.port or 80, path or "/",
                                      headers, timeout_s)
        elif kind == "httpx":
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            self._httpx = httpx.AsyncClient(limits=limits, timeout=timeout_s, trust_env=False)
        else:
            raise ValueError(f"unknown client {kind!r}: raw or httpx")

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self._raw is not None:
            return await self._raw.post(body)
        assert self._httpx is not None
        response = await self._httpx.post(self.url, content=body, headers=self._headers)
        return response.status_code, response.content

    async def aclose(self) -> None:
        if self._raw is not None:
            self._raw.close()
        if self._httpx is not None:
            await self._httpx.aclose()


async def _one(client: _Client, body: bytes, tally: _Tally, started: float) -> None:
    tally.sent += 1
    tally.first_start = min(tally.first_start, started)
    try:
        status, content = await client.post(body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
            ValueError, httpx.HTTPError) as exc:
        tally.errors[type(exc).__name__] += 1
        tally.last_end = max(tally.last_end, time.perf_counter())
        return
    ended = time.perf_counter()
    tally.last_end = max(tally.last_end, ended)
    if 200 <= status < 300:
        tally.latencies.append(ended - started)
        tally.response_bytes += len(content)
        tally.sample(content)
    else:
        tally.errors[str(status)] += 1


async def run_load(url: str, bodies: Sequence[bytes], *, concurrency: int | None = None,
                   rate: float | None = None, max_requests: int = 1000, duration_s: float = 10.0,
                   drain_s: float = 60.0, rows_per_request: float = 1.0, timeout_s: float = 300.0,
                   headers: dict[str, str] | None = None, max_in_flight: int = 1024,
                   sample_key: str | None = None, sample_every: int = 10,
                   client: str = "raw") -> LoadResult:
    """Send POSTs of `bodies` (cycled) to `url`; exactly one of `concurrency` or `rate`.

    `client`: "raw" (a minimal keep-alive HTTP/1.1 client, the default: least client CPU) or
    "httpx" (httpx.AsyncClient, one connection per client). Either way every in-flight
    request has its own connection. With `sample_key`, every `sample_every`-th successful
    JSON answer is parsed and the numeric fields of that key averaged into `LoadResult.sampled`.
    """
    check_loopback(url)
    if (concurrency is None) == (rate is None):
        raise ValueError("give exactly one of concurrency (closed loop) or rate (open loop)")
    if not bodies:
        raise ValueError("no request bodies")
    if max_requests < 1 or duration_s <= 0 or (concurrency is not None and concurrency < 1):
        raise ValueError("max_requests, duration_s and concurrency must be positive")
    hdrs = {"content-type": "application/json", **(headers or {})}
    tally = _Tally(sample_key=sample_key, sample_every=max(1, sample_every))
    result = LoadResult("closed" if concurrency else "open", concurrency, rate)
    result.client = client
    result.bytes_per_request = sum(len(b) for b in bodies) / len(bodies)
    clients: list[_Client] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    stop_at = start + duration_s
    counter = iter(range(max_requests))

    def next_index() -> int | None:
        if time.perf_counter() >= stop_at:
            return None
        return next(counter, None)

    tasks: list[asyncio.Task[None]] = []
    try:
        if concurrency is not None:
            async def client_loop(c: _Client) -> None:
                while (i := next_index()) is not None:
                    await _one(c, bodies[i % len(bodies)], tally, time.perf_counter())

            clients = [_Client(client, url, hdrs, timeout_s) for _ in range(concurrency)]
            tasks = [asyncio.create_task(client_loop(c)) for c in clients]
        else:
            assert rate is not None and rate > 0
            interval = 1.0 / rate
            idle: list[_Client] = []
            in_flight: set[asyncio.Task[None]] = set()

            async def open_loop_one(body: bytes, scheduled: float) -> None:
                c = idle.pop() if idle else _Client(client, url, hdrs, timeout_s)
                if c not in clients:
                    clients.append(c)
                try:
                    await _one(c, body, tally, scheduled)
                finally:
                    idle.append(c)

            n = 0
            while (i := next_index()) is not None:
                scheduled = start + n * interval
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                while len(in_flight) >= max_in_flight:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(open_loop_one(bodies[i % len(bodies)], scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                tasks.append(task)
                n += 1
        wait_s = max(stop_at - time.perf_counter(), 0.0) + drain_s
        _, pending = await asyncio.wait(tasks, timeout=wait_s) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for c in clients:
            await c.aclose()
    result.client_cpu_s = time.process_time() - cpu_start
    result.unfinished = tally.sent - len(tally.latencies) - sum(tally.errors.values())
    result.time_bounded = time.perf_counter() >= stop_at and tally.sent < max_requests
    result.sent = tally.sent
    result.ok = len(tally.latencies)
    result.errors = dict(tally.errors)
    if tally.sent:
        result.elapsed_s = max(tally.last_end - tally.first_start, 1e-9)
        result.throughput_rps = result.ok / result.elapsed_s
    result.rows_per_request = rows_per_request
    result.rows_per_s = result.throughput_rps * rows_per_request
    lat = sorted(x * 1000.0 for x in tally.latencies)
    if lat:
        result.latency_ms = {
            "p50": percentile(lat, 50), "p90": percentile(lat, 90), "p95": percentile(lat, 95),
            "p99": percentile(lat, 99),
            "mean": sum(lat) / len(lat), "min": lat[0], "max": lat[-1]}
        result.bytes_per_response = tally.response_bytes / len(lat)
    if tally.samples:
        keys = sorted({k for sample in tally.samples for k in sample})
        result.sampled = {k: sum(s.get(k, 0.0) for s in tally.samples) / len(tally.samples) for k in keys}
    return result


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="POST target on this machine (loopback only)")
    parser.add_argument("--body", type=Path, required=True, help="file with the JSON body to send")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    mode.add_argument("--rate", type=float, help="open loop: requests started per second")
    parser.add_argument("--requests", type=int, default=1000, help="at most this many requests")
    parser.add_argument("--duration", type=float, default=10.0, help="stop issuing after this many seconds")
    parser.add_argument("--rows-per-request", type=float, default=1.0)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    args = parser.parse_args(argv)
    result = asyncio.run(run_load(
        args.url, [args.body.read_bytes()], concurrency=args.concurrency, rate=args.rate,
        max_requests=args.requests, duration_s=args.duration, rows_per_request=args.rows_per_request,
        client=args.client))
    json.dump(result.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(_main())
