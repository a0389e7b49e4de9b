"""Closed-loop cells driven by wrk, a load generator in C, so the client takes little of the
cores the servers under test share with it.

`run_wrk` POSTs the cell's bodies in turn over `concurrency` keep-alive connections from one wrk
thread (optionally pinned to one CPU with taskset), through `wrk_post.lua`: the same semantics as
`bench.loadgen.run_load`'s closed loop (stop issuing at the duration or the request bound, drain
what is in flight, throughput = successful answers over first send to last answer), per-status
counts from wrk's `response` hook, latency percentiles from wrk's histogram (as measured: the
script undoes wrk's coordinated-omission correction, and keeps wrk's corrected figures in
`details`), and the means of a sampled JSON object of the answers (e.g. `timings_ms`). The
client's own CPU time comes from the kernel's accounting of the wrk process (`wait4`).

A connection parked after the window closed may sit idle past the server's keep-alive timeout
while the last answers are awaited; the server closes it and wrk counts a read error. Read errors
beyond the requests written (the script's, and wrk's own re-sends after a connection failed under
one) that got no answer are those: no request's failure, reported apart
(`details["idle_connections_closed"]`), not as errors.

Differences from bench/loadgen.py: wrk's latencies cover every answer whatever its status (the
Python client's cover successful answers only); wrk has no open loop (`--rate`), which stays with
the Python client.

    python -m bench.wrk http://127.0.0.1:8000/v1/models/shapes/explain --body body.json --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, check_loopback

__all__ = ["SCRIPT", "WrkError", "client_cpu", "run_wrk", "wrk_path"]

SCRIPT = Path(__file__).with_name("wrk_post.lua")
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


class WrkError(RuntimeError):
    """wrk is missing, failed, or gave no results."""


def wrk_path() -> str:
    """The wrk executable; `make install` installs Debian's (`apt-get install wrk`)."""
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: run `make install` (it installs Debian's wrk with apt-get), "
                       "or use --loadgen python")
    return found


def client_cpu(choice: str) -> int | None:
    """The CPU to pin wrk to: "none"; a CPU number; or "auto": the last CPU this process may use
    when there are at least 4 and taskset is there (a small host's cores are all needed by the
    server under test, and pinning only moves the client's CPU between them)."""
    if choice == "none":
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if choice == "auto":
        return allowed[-1] if len(allowed) >= 4 and shutil.which("taskset") else None
    cpu = int(choice)
    if cpu not in allowed:
        raise ValueError(f"CPU {cpu} is not one this process may use ({allowed})")
    return cpu


def _lua_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def _config(bodies: Sequence[Path], out: Path, *, concurrency: int, duration_s: float, drain_s: float,
            max_requests: int, sample_key: str | None, sample_every: int) -> str:
    paths = ", ".join(_lua_string(str(p)) for p in bodies)
    sample = _lua_string(sample_key) if sample_key else "nil"
    return (f"return {{ bodies = {{ {paths} }}, out = {_lua_string(str(out))}, connections = {concurrency},\n"
            f"  duration_s = {duration_s!r}, drain_s = {drain_s!r}, max_requests = {max_requests},\n"
            f"  sample_key = {sample}, sample_every = {sample_every} }}\n")


def _wait(proc: subprocess.Popen[bytes], limit_s: float) -> float:
    """Wait for wrk and return its CPU time (user + system); kill it after `limit_s`."""
    watchdog = threading.Timer(limit_s, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return float(usage.ru_utime + usage.ru_stime)


def _latency_ms(stats: dict[str, float] | None) -> dict[str, float]:
    keys = ("p50", "p90", "p95", "p99", "mean", "min", "max", "stdev")
    return {k: float(stats[k]) / 1000.0 for k in keys if k in stats} if stats else {}


def _result(raw: dict[str, Any], *, concurrency: int, max_requests: int, rows_per_request: float,
            bytes_per_request: float, cpu_s: float, pinned: int | None) -> LoadResult:
    result = LoadResult("closed", concurrency, None, client="wrk")
    statuses = {int(k): int(v) for k, v in raw["statuses"].items()}
    result.errors = {str(status): n for status, n in sorted(statuses.items()) if not 200 <= status < 300}
    socket_errors = {name: int(raw["errors"].get(name, 0)) for name in SOCKET_ERRORS}
    result.sent = int(raw["issued"])
    answered = int(raw["answered"])
    # A failed read under a request leaves that request (written, by the script or by wrk's own
    # re-send after the failure) without an answer; failed reads beyond those were on idle
    # connections: parked after the window closed, then closed by the server's keep-alive timeout.
    idle_closed = max(socket_errors["read"] - max(int(raw["written"]) - answered, 0), 0)
    socket_errors["read"] -= idle_closed
    result.errors.update({f"socket {name}": n for name, n in socket_errors.items() if n})
    result.ok = int(raw["ok"])
    lost = socket_errors["connect"] + socket_errors["read"] + socket_errors["write"]
    result.unfinished = max(result.sent - answered - lost, 0)
    result.elapsed_s = float(raw["span_s"])
    result.throughput_rps = result.ok / result.elapsed_s if result.elapsed_s > 0 else 0.0
    result.rows_per_request = rows_per_request
    result.rows_per_s = result.throughput_rps * rows_per_request
    result.latency_ms = _latency_ms(raw.get("latency_us"))
    result.bytes_per_response = raw["ok_bytes"] / result.ok if result.ok else 0.0
    result.bytes_per_request = bytes_per_request
    result.time_bounded = result.sent < max_requests
    count = int(raw.get("sample_count", 0))
    result.sampled = {k: float(v) / count for k, v in sorted(raw.get("samples", {}).items())} if count else {}
    result.client_cpu_s = max(cpu_s - float(raw.get("done_cpu_s", 0.0)), 0.0)
    result.details = {"latency_ms_corrected": _latency_ms(raw.get("latency_us_corrected")),
                      "correction_interval_ms": raw.get("correction_interval_us", 0) / 1000.0,
                      "wrk_threads": int(raw["threads"]), "pinned_cpu": pinned,
                      "idle_connections_closed": idle_closed}
    return result


def run_wrk(url: str, bodies: Sequence[bytes], *, concurrency: int, duration_s: float, max_requests: int = 1_000_000,
            drain_s: float = 60.0, rows_per_request: float = 1.0, headers: dict[str, str] | None = None,
            sample_key: str | None = None, sample_every: int = 10, pin_cpu: int | None = None) -> LoadResult:
    """One closed-loop cell with wrk (one thread): POST `bodies` in turn to `url` (loopback only)."""
    check_loopback(url)
    if not bodies:
        raise ValueError("no request bodies")
    if concurrency < 1 or max_requests < 1 or duration_s <= 0 or drain_s < 0:
        raise ValueError("concurrency, max_requests and duration_s must be positive, drain_s not negative")
    argv = [wrk_path()]
    if pin_cpu is not None:
        taskset = shutil.which("taskset")
        if taskset is None:
            raise WrkError("taskset (util-linux) is needed to pin wrk to a CPU")
        argv = [taskset, "-c", str(pin_cpu), *argv]
    # wrk's own clock ends the run at the latest here; the script normally ends it sooner.
    ceiling_s = math.ceil(duration_s + drain_s) + 5
    hdrs = {"content-type": "application/json", **(headers or {})}
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        folder = Path(tmp)
        paths = []
        for i, body in enumerate(bodies):
            paths.append(folder / f"body-{i}")
            paths[-1].write_bytes(body)
        out = folder / "out.json"
        config = folder / "config.lua"
        config.write_text(_config(paths, out, concurrency=concurrency, duration_s=float(duration_s),
                                  drain_s=float(drain_s), max_requests=max_requests, sample_key=sample_key,
                                  sample_every=max(1, sample_every)), encoding="utf-8")
        argv += ["-t1", f"-c{concurrency}", f"-d{ceiling_s}s", f"--timeout={ceiling_s + 5}s", "-s", str(SCRIPT)]
        for name, value in hdrs.items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        log = folder / "wrk.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                    env={**os.environ, "WRK_BENCH_CONFIG": str(config)})
            cpu_s = _wait(proc, ceiling_s + 60)
        text = log.read_text(encoding="utf-8", errors="replace")
        if proc.returncode != 0 or not out.is_file():
            raise WrkError(f"wrk exited with {proc.returncode} and no results:\n{text[-2000:]}")
        raw = json.loads(out.read_text(encoding="utf-8"))
    return _result(raw, concurrency=concurrency, max_requests=max_requests, rows_per_request=rows_per_request,
                   bytes_per_request=sum(len(b) for b in bodies) / len(bodies), cpu_s=cpu_s, pinned=pin_cpu)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="POST target on this machine (loopback only)")
    parser.add_argument("--body", type=Path, action="append", required=True, help="a body file (repeatable)")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, default=1_000_000, help="at most this many requests")
    parser.add_argument("--duration", type=float, default=10.0, help="stop issuing after this many seconds")
    parser.add_argument("--drain", type=float, default=60.0)
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    parser.add_argument("--pin", default="auto", help="CPU for wrk: auto, none or a number")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    result = run_wrk(args.url, [p.read_bytes() for p in args.body], concurrency=args.concurrency,
                     duration_s=args.duration, max_requests=args.requests, drain_s=args.drain,
                     headers={k.strip(): v.strip() for k, v in headers.items()}, pin_cpu=client_cpu(args.pin))
    json.dump(result.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(_main())
