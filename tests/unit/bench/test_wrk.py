"""bench/wrk.py (wrk driven by bench/wrk_post.lua) against a real loopback HTTP server whose answers,
delays and statuses the test controls (tests/unit/bench/controlled.py)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.loadgen import LoadResult
from bench.wrk import WrkError, _main, client_cpu, run_wrk, wrk_path
from tests.conftest import free_port
from tests.fixtures.threaded import ThreadedServer
from tests.unit.bench.controlled import (
    BODIES,
    OK_BODY_BYTES,
    Controlled,
    Seen,
    assert_nothing_answered,
    make_app,
    status_for,
)


def wrk(url: str, bodies: list[bytes] = BODIES, **kwargs: Any) -> LoadResult:
    return run_wrk(url, bodies, **{"duration_s": 30.0, **kwargs})


def test_wrk_is_installed() -> None:
    # `make install` installs it; the benchmark must not silently fall back to the Python client.
    assert Path(wrk_path()).is_file()


def test_counts_statuses_bytes_and_bounds_concurrency(server: Controlled) -> None:
    url, seen = server.route(delay_ms=20, every_503=5, every_429=7)
    total, concurrency = 40, 4
    result = wrk(url, concurrency=concurrency, max_requests=total, rows_per_request=32)

    expected = Counter(status_for(n, 5, 7) for n in range(total))
    assert seen.count == total
    assert result.mode == "closed" and result.concurrency == concurrency and result.client == "wrk"
    assert result.sent == total
    assert result.ok == expected[200] == 28
    assert result.errors == {"429": 4, "503": 8}
    assert result.unfinished == 0
    assert not result.time_bounded
    # The bodies are posted in turn, with wrk's -H content type.
    assert Counter(seen.bodies) == Counter(BODIES[i % len(BODIES)] for i in range(total))
    assert set(seen.content_types) == {"application/json"}
    assert result.bytes_per_request == pytest.approx(sum(map(len, BODIES)) / len(BODIES))
    assert result.bytes_per_response == OK_BODY_BYTES  # successful answers' bodies only
    assert 2 <= seen.max_in_flight <= concurrency
    # 40 requests of at least 20 ms each, at most 4 at a time: at least 0.2 s.
    assert result.elapsed_s >= 0.2 * 0.99
    assert result.throughput_rps == pytest.approx(result.ok / result.elapsed_s)
    assert result.rows_per_s == pytest.approx(result.throughput_rps * 32)
    lat = result.latency_ms
    assert set(lat) == {"p50", "p90", "p95", "p99", "mean", "min", "max", "stdev"}
    assert 20 * 0.99 <= lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert result.client_cpu_s is not None and result.client_cpu_s >= 0.0
    assert result.details["wrk_threads"] == 1 and result.details["pinned_cpu"] is None


def test_percentiles_are_the_measured_ones_not_wrks_corrected_ones(server: Controlled) -> None:
    # One at a time; request n waits 10 ms, and every tenth 300 ms. The mean interval is about
    # 40 ms, so wrk's correction adds synthetic samples below each 300 ms one (at 260, 220, ...
    # ms); the script undoes that: as many latencies as answers, the slow tenth at p95 and above.
    url, seen = server.route(delay_ms=10, slow_every=10, slow_ms=290)
    result = wrk(url, concurrency=1, max_requests=40)
    assert result.ok == seen.count == 40
    lat, corrected = result.latency_ms, result.details["latency_ms_corrected"]
    delays = [300.0 if n % 10 == 9 else 10.0 for n in range(40)]
    for q in (50, 90, 95, 99):
        # Each latency is at least its delay, so each order statistic (nearest rank) is too.
        reference = float(np.percentile(delays, q, method="inverted_cdf"))
        assert reference * 0.99 <= lat[f"p{q}"] <= reference + 250.0, q
    assert lat["p90"] < 300.0 <= lat["p95"]
    assert lat["min"] >= 10 * 0.99 and lat["max"] >= 300 * 0.99
    assert lat["mean"] == pytest.approx(sum(delays) / 40, abs=60.0)
    # wrk's own figures have the synthetic samples: its p90 lies between the fast and slow ones.
    assert result.details["correction_interval_ms"] > 0
    assert corrected["p90"] > lat["p90"]
    assert corrected["mean"] > lat["mean"]


def test_stops_issuing_at_its_duration_and_drains(server: Controlled) -> None:
    url, seen = server.route(delay_ms=100)
    began = time.monotonic()
    result = wrk(url, concurrency=2, max_requests=1_000_000, duration_s=1.0, drain_s=30.0)
    assert result.time_bounded
    # The requests in flight when the window closed were answered and counted.
    assert result.sent == seen.count == result.ok and result.unfinished == 0
    # Each connection sends at most one request per 100 ms in about 1 s.
    assert 2 <= result.sent <= 2 * 12
    assert result.elapsed_s >= 0.9
    # Drained, it stopped itself: long before wrk's own ceiling (duration + drain + 5 s).
    assert time.monotonic() - began < 30.0


def test_requests_unanswered_at_the_ceiling_are_unfinished(server: Controlled) -> None:
    url, seen = server.route(delay_ms=20_000)
    result = wrk(url, concurrency=2, max_requests=100, duration_s=1.0, drain_s=0.0)
    assert seen.count == 2
    assert_nothing_answered(result, 2)


def test_sampled_answers_are_averaged(server: Controlled) -> None:
    url, _ = server.route(sample=1)
    result = wrk(url, concurrency=1, max_requests=10, sample_key="timings_ms", sample_every=2)
    # One connection: answers arrive in request order; answers 0, 2, 4, 6, 8 are parsed.
    assert result.sampled == {"fixed": 2.5, "n": 4.0}
    assert wrk(url, concurrency=1, max_requests=4).sampled == {}


def test_headers_and_a_pinned_client(server: Controlled) -> None:
    url, seen = server.route()
    cpu = sorted(os.sched_getaffinity(0))[0]
    result = wrk(url, [b"\x89PNG raw bytes"], concurrency=1, max_requests=3, headers={"content-type": "image/png"},
                 pin_cpu=cpu)
    assert result.ok == 3 and seen.bodies == [b"\x89PNG raw bytes"] * 3
    assert seen.content_types == ["image/png"] * 3
    assert result.details["pinned_cpu"] == cpu


def test_a_server_that_is_not_there_fails_the_cell() -> None:
    # wrk checks it can connect before it starts: a cell against no server is an error, not zeros.
    with pytest.raises(WrkError, match="unable to connect"):
        wrk(f"http://127.0.0.1:{free_port()}/nothing", concurrency=1, max_requests=3, duration_s=1.0)


def test_connections_the_server_closes_are_reopened(server: Controlled) -> None:
    url, seen = server.route(close=1, chunked=1, size=5000)
    result = wrk(url, concurrency=2, max_requests=10)
    assert result.ok == seen.count == 10 and result.errors == {}
    assert result.bytes_per_response == 5000


@pytest.fixture(scope="module")
def brief_keep_alive() -> Iterator[Controlled]:
    """The controlled server closing connections idle for 0.3 s (uvicorn's keep-alive timeout)."""
    seen: defaultdict[str, Seen] = defaultdict(Seen)
    with ThreadedServer(make_app(seen), "/healthz", lifespan="off", graceful_shutdown_s=5,
                        keep_alive_s=0.3) as threaded:
        yield Controlled(threaded.url, seen)


def test_a_parked_connection_the_server_closes_is_not_an_error(brief_keep_alive: Controlled) -> None:
    # Two connections, three requests: request 1 takes 3 s, 0 and 2 are quick, so the connection
    # of 0 and 2 is parked (the request bound reached) and idle while 1 runs; the server closes it
    # after 0.3 s, and wrk counts a read error for it. Every request was answered: not an error.
    url, seen = brief_keep_alive.route(slow_every=2, slow_ms=3000)
    result = wrk(url, concurrency=2, max_requests=3)
    assert result.sent == seen.count == result.ok == 3 and result.unfinished == 0
    assert result.errors == {}
    assert result.details["idle_connections_closed"] == 1


def test_a_read_that_fails_under_a_request_is_an_error(brief_keep_alive: Controlled) -> None:
    # The server drops the connection half-way through its first answer; wrk re-sends on a new
    # connection and the second attempt is answered. The failed read was under a request: an
    # error, though the request was answered in the end.
    url, seen = brief_keep_alive.route(truncate=1)
    result = wrk(url, concurrency=1, max_requests=1, duration_s=1.0, drain_s=2.0)
    assert seen.count == 2 and result.sent == 1
    assert result.ok == 1 and result.unfinished == 0
    assert result.errors == {"socket read": 1}
    assert result.details["idle_connections_closed"] == 0


def test_client_cpu_choices() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert client_cpu("none") is None
    assert client_cpu("auto") == (allowed[-1] if len(allowed) >= 4 else None)  # taskset is installed here
    assert client_cpu(str(allowed[0])) == allowed[0]
    with pytest.raises(ValueError, match="not one this process may use"):
        client_cpu(str(max(allowed) + 1000))


@pytest.mark.parametrize("kwargs", [
    {"concurrency": 0},
    {"concurrency": 1, "max_requests": 0},
    {"concurrency": 1, "duration_s": 0.0},
    {"concurrency": 1, "drain_s": -1.0},
])
def test_bad_arguments_are_refused(server: Controlled, kwargs: dict[str, Any]) -> None:
    url, seen = server.route()
    with pytest.raises(ValueError):
        wrk(url, **kwargs)
    with pytest.raises(ValueError, match="no request bodies"):
        wrk(url, [], concurrency=1)
    assert seen.count == 0


def test_a_remote_target_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        wrk("http://10.1.2.3:8000/v1", concurrency=1)


def test_a_missing_wrk_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, server: Controlled) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    url, seen = server.route()
    with pytest.raises(WrkError, match="make install"):
        wrk(url, concurrency=1)
    assert seen.count == 0


def test_command_line_prints_the_result(server: Controlled, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    url, seen = server.route(size=321)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_bytes(b'{"instances": [1]}')
    second.write_bytes(b'{"instances": [2]}')
    assert _main([url, "--body", str(first), "--body", str(second), "--concurrency", "2", "--requests", "6",
                  "--pin", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sent"] == out["ok"] == seen.count == 6
    assert out["bytes_per_response"] == 321
    assert Counter(seen.bodies) == {b'{"instances": [1]}': 3, b'{"instances": [2]}': 3}
