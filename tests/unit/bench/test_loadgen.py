"""bench/loadgen.py against a real loopback HTTP server whose answers, delays and statuses the test
controls (tests/unit/bench/controlled.py)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.loadgen import LoadResult, _main, check_loopback, percentile, run_load
from tests.conftest import free_port
from tests.unit.bench.controlled import BODIES, OK_BODY_BYTES, Controlled, assert_nothing_answered, status_for

CLIENTS = ["raw", "httpx"]


def load(url: str, bodies: list[bytes] = BODIES, **kwargs: Any) -> LoadResult:
    return asyncio.run(run_load(url, bodies, **kwargs))


# --------------------------------------------------------------------------- percentile and loopback


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy_linear_interpolation(q: float) -> None:
    values = sorted(np.random.default_rng(7).exponential(10.0, size=100).tolist())
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


def test_percentile_on_known_data() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([10.0, 20.0], 99) == pytest.approx(19.9)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://localhost:8000/v1", "http://[::1]:8000/"])
def test_loopback_targets_are_accepted(url: str) -> None:
    check_loopback(url)


@pytest.mark.parametrize(("url", "message"), [
    ("http://10.1.2.3:8000/v1", "non-loopback"),
    ("http://192.0.2.7/", "non-loopback"),
    ("ftp://127.0.0.1/file", "not an http"),
    ("http:///no-host", "not an http"),
])
def test_other_targets_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_loopback(url)


def test_run_load_refuses_a_remote_target_before_sending() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        load("http://10.1.2.3:8000/v1", concurrency=1, max_requests=1)


@pytest.mark.parametrize("kwargs", [
    {},  # neither mode
    {"concurrency": 2, "rate": 10.0},  # both modes
    {"concurrency": 0},
    {"concurrency": 1, "max_requests": 0},
    {"concurrency": 1, "duration_s": 0.0},
])
def test_bad_arguments_are_refused(server: Controlled, kwargs: dict[str, Any]) -> None:
    url, seen = server.route()
    with pytest.raises(ValueError):
        load(url, **kwargs)
    assert seen.count == 0


def test_no_bodies_and_unknown_client_are_refused(server: Controlled) -> None:
    url, seen = server.route()
    with pytest.raises(ValueError, match="no request bodies"):
        load(url, [], concurrency=1)
    with pytest.raises(ValueError, match="unknown client"):
        load(url, concurrency=1, max_requests=2, client="curl")
    with pytest.raises(ValueError, match="plain http"):
        load(url.replace("http://", "https://"), concurrency=1, max_requests=2, client="raw")
    assert seen.count == 0


# --------------------------------------------------------------------------- closed loop


@pytest.mark.parametrize("client", CLIENTS)
def test_closed_loop_counts_requests_statuses_bytes_and_bounds_concurrency(server: Controlled, client: str) -> None:
    url, seen = server.route(delay_ms=20, every_503=5, every_429=7)
    total, concurrency = 40, 4
    result = load(url, concurrency=concurrency, max_requests=total, duration_s=30, rows_per_request=32,
                  client=client)

    expected = Counter(status_for(n, 5, 7) for n in range(total))
    assert seen.count == total
    assert result.mode == "closed" and result.concurrency == concurrency and result.rate is None
    assert result.client == client
    assert result.sent == total
    assert result.ok == expected[200] == 28
    assert result.errors == {"503": expected[503], "429": expected[429]} == {"503": 8, "429": 4}
    assert result.unfinished == 0
    assert not result.time_bounded
    # The bodies are cycled: each sent as often as its turn comes up.
    assert Counter(seen.bodies) == Counter(BODIES[i % len(BODIES)] for i in range(total))
    assert result.bytes_per_request == pytest.approx(sum(map(len, BODIES)) / len(BODIES))
    # Only successful answers count for size (error bodies are 7 bytes).
    assert result.bytes_per_response == OK_BODY_BYTES
    # Never more in flight than the concurrency, and the clients really do overlap.
    assert 2 <= seen.max_in_flight <= concurrency
    # 40 requests of at least 20 ms each, at most 4 at a time: at least 0.2 s.
    assert result.elapsed_s >= 0.2 * 0.99
    assert result.throughput_rps == pytest.approx(result.ok / result.elapsed_s)
    assert result.rows_per_request == 32
    assert result.rows_per_s == pytest.approx(result.throughput_rps * 32)
    lat = result.latency_ms
    assert set(lat) == {"p50", "p90", "p95", "p99", "mean", "min", "max"}
    assert 20 * 0.99 <= lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]


@pytest.mark.parametrize("client", CLIENTS)
def test_reported_percentiles_follow_the_server_delays(server: Controlled, client: str) -> None:
    # Request n waits 5 + 5 * (n % 10) ms; one at a time, so each latency is its delay plus overhead.
    url, seen = server.route(delay_ms=5, step_ms=5, cycle=10)
    delays = [5.0 + 5.0 * (n % 10) for n in range(20)]
    result = load(url, concurrency=1, max_requests=20, duration_s=30, client=client)
    assert result.ok == seen.count == 20
    lat = result.latency_ms
    for q in (50, 95, 99):
        reference = float(np.percentile(delays, q))
        # Each latency is at least its delay, so each order statistic is too (overhead depends on the host).
        assert reference * 0.99 <= lat[f"p{q}"], q
    assert lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] >= 5.0 * 0.99
    assert lat["max"] >= 50.0 * 0.99
    assert lat["mean"] >= float(np.mean(delays)) * 0.99


def test_closed_loop_stops_at_its_duration(server: Controlled) -> None:
    url, seen = server.route(delay_ms=20)
    result = load(url, concurrency=2, max_requests=10_000, duration_s=0.3)
    assert result.time_bounded
    assert result.sent == seen.count == result.ok
    # Each client sends at most one request per 20 ms, and one more started before the bound.
    assert 2 <= result.sent <= 2 * (math.ceil(0.3 / 0.02) + 1)
    assert result.elapsed_s >= 0.25
    assert seen.max_in_flight <= 2


def test_requests_still_in_flight_after_the_drain_are_unfinished(server: Controlled) -> None:
    url, seen = server.route(delay_ms=1500)
    result = load(url, concurrency=2, max_requests=100, duration_s=0.1, drain_s=0.2)
    assert seen.count == 2
    assert_nothing_answered(result, 2)


@pytest.mark.parametrize(("client", "error"), [("raw", "ConnectionRefusedError"), ("httpx", "ConnectError")])
def test_transport_failures_are_counted_by_exception_name(client: str, error: str) -> None:
    result = load(f"http://127.0.0.1:{free_port()}/nothing", concurrency=1, max_requests=3, client=client)
    assert result.sent == 3
    assert result.errors == {error: 3}
    assert result.ok == 0 and result.unfinished == 0


@pytest.mark.parametrize("close", [False, True])
def test_raw_client_reads_chunked_bodies_and_reconnects_after_close(server: Controlled, close: bool) -> None:
    url, seen = server.route(chunked=1, size=5000, **({"close": 1} if close else {}))
    result = load(url, concurrency=1, max_requests=5, client="raw")
    assert result.ok == seen.count == 5
    assert result.errors == {}
    assert result.bytes_per_response == 5000


def test_sampled_answers_are_averaged(server: Controlled) -> None:
    url, _ = server.route(sample=1)
    result = load(url, concurrency=1, max_requests=10, sample_key="timings_ms", sample_every=2)
    # One client: answers arrive in request order; answers 0, 2, 4, 6, 8 are parsed.
    assert result.sampled == {"fixed": 2.5, "n": 4.0}
    plain = load(url, concurrency=1, max_requests=4)
    assert plain.sampled == {}


# --------------------------------------------------------------------------- open loop


@pytest.mark.parametrize("client", CLIENTS)
def test_open_loop_issues_on_schedule_whatever_the_answers(server: Controlled, client: str) -> None:
    # 25 requests at 50/s: the last is scheduled 0.48 s after the first. Each takes 200 ms, so a
    # schedule that waited for answers would keep at most one in flight.
    url, seen = server.route(delay_ms=200)
    began = time.perf_counter()
    result = load(url, rate=50.0, max_requests=25, duration_s=30, client=client)
    assert result.mode == "open" and result.rate == 50.0 and result.concurrency is None
    assert result.sent == result.ok == seen.count == 25
    # Request k is not sent before its turn, k * 20 ms: never faster than the rate...
    for k, arrived in enumerate(seen.arrivals):
        assert arrived - began >= k * 0.02 - 1e-3, k
    # ... and without waiting for answers: requests overlap (each takes 200 ms, one every 20 ms).
    assert 5 <= seen.max_in_flight <= 25
    assert result.latency_ms["min"] >= 200 * 0.99
    assert result.elapsed_s >= 0.48 + 0.2 - 0.05


def test_open_loop_caps_in_flight_and_charges_the_queue(server: Controlled) -> None:
    # 12 requests scheduled 5 ms apart, at most 3 in flight, 100 ms each: request k starts near
    # (k // 3) * 100 ms, but its latency counts from k * 5 ms.
    url, seen = server.route(delay_ms=100)
    result = load(url, rate=200.0, max_requests=12, duration_s=30, max_in_flight=3)
    assert result.ok == seen.count == 12
    assert seen.max_in_flight <= 3
    assert result.latency_ms["min"] >= 100 * 0.99
    # The last group waits ~300 ms behind its schedule: a send-time clock would say ~100 ms.
    assert result.latency_ms["max"] >= 300.0


def test_open_loop_stops_at_its_duration(server: Controlled) -> None:
    url, seen = server.route()
    result = load(url, rate=40.0, max_requests=10_000, duration_s=0.3)
    assert result.time_bounded
    assert result.ok == seen.count == result.sent
    # Scheduled at 0, 25, 50, ... ms: at most 13 start before 0.3 s (fewer if the host is slow).
    assert 3 <= result.sent <= 13


# --------------------------------------------------------------------------- command line


def test_command_line_prints_the_result(server: Controlled, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    url, seen = server.route(size=321)
    body = tmp_path / "body.json"
    body.write_bytes(b'{"instances": [1]}')
    assert _main([url, "--body", str(body), "--concurrency", "2", "--requests", "6",
                  "--rows-per-request", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sent"] == out["ok"] == seen.count == 6
    assert out["bytes_per_response"] == 321
    assert out["rows_per_s"] == pytest.approx(out["throughput_rps"] * 8)
    assert set(seen.bodies) == {b'{"instances": [1]}'}

    failing, _ = server.route(every_503=1)
    assert _main([failing, "--body", str(body), "--rate", "100", "--requests", "3"]) == 1
    assert json.loads(capsys.readouterr().out)["errors"] == {"503": 3}
