"""Shutdown keeps its promise, whichever way the service was started (`python -m app` or
`explainserve serve`): on SIGTERM new work gets 503 while accepted work finishes; at the end of
SHUTDOWN_GRACE_S work still running is stopped and answered 503 with Retry-After (never 500);
idle and half-sent connections are closed; the process exits 0 within the grace.

The models come from `tests.fixtures.faulty`: a gate holds the worker while the test queues
requests, and a model that sleeps in every forward makes a computation of many forwards long,
so that what is measured does not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures import faulty
from tests.fixtures.faulty import GATE
from tests.fixtures.probes import total, wait_until
from tests.fixtures.process import SERVE_COMMANDS, ServerProcess

pytestmark = pytest.mark.anyio

N = 30
GRACE_S = 4
EXIT_MARGIN_S = 10.0
"""Process start-up and teardown beyond the grace; the computations in flight need far longer."""


def rows(i: int) -> list[list[float]]:
    return [[float(i), 1.0, -0.5 * i, 2.0]]


async def _metric(client: httpx.AsyncClient, name: str, model: str) -> float:
    return total((await client.get("/metrics")).text, name, model=model)


async def test_sigterm_drains_accepted_work_then_exits_0(tmp_path: Path) -> None:
    gate = tmp_path / "open"
    catalog = faulty.catalog(tmp_path, {"gated": {"gate_value": GATE, "gate_file": str(gate), "gate_timeout_s": 120}})
    server = ServerProcess({"MODELS": str(catalog), "SHUTDOWN_GRACE_S": "60", "MAX_BATCH_SIZE": "1",
                            "LOG_LEVEL": "WARNING"})
    try:
        await asyncio.to_thread(server.wait_ready)
        limits = httpx.Limits(max_connections=N + 20, max_keepalive_connections=N + 20)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            # the gate request holds the worker (sent first, it could still arrive after others
            # that the worker would then serve at once); N requests queue behind it
            holder = asyncio.create_task(client.post("/v1/models/gated/predict",
                                                     json={"instances": [[GATE, 0.0, 0.0, 0.0]]}))
            await wait_until(lambda: faulty.entered_markers(gate) or holder.done(), "the gate request at the worker")
            assert not holder.done(), holder.result().text
            deadline = time.monotonic() + 60
            tasks = [asyncio.create_task(client.post("/v1/models/gated/predict", json={"instances": rows(i)}))
                     for i in range(N)]
            while await _metric(client, "explainserve_queue_rows", "gated") < N:
                assert time.monotonic() < deadline, "the requests were never all queued"
                await asyncio.sleep(0.02)
            server.signal(signal.SIGTERM)
            # the server refuses new work while it drains (and keeps listening); the signal is
            # handled by the server's loop in its own time: once /readyz says so, work is refused
            while (ready := await client.get("/readyz")).status_code == 200:
                assert time.monotonic() < deadline, "the server never began to drain"
                await asyncio.sleep(0.02)
            refused = await client.post("/v1/models/gated/predict", json={"instances": rows(0)})
            for response in (refused, ready):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert int(response.headers["retry-after"]) >= 1
            assert not any(t.done() for t in tasks)
            gate.touch()  # release the worker: every accepted request gets its own answer
            answers = await asyncio.gather(holder, *tasks)
        code = await asyncio.to_thread(server.wait, 60)
        assert code == 0, "\n".join(server.lines[-30:])
    finally:
        server.stop()
    for i, response in enumerate(answers[1:]):
        assert response.status_code == 200, response.text
        probs = faulty.reference(rows(i))[0]
        scores = {e["index"]: e["score"] for e in response.json()["predictions"][0]["top_k"]}
        assert scores[0] == pytest.approx(probs[0], rel=1e-5, abs=1e-7)
    with pytest.raises(httpx.ConnectError):
        httpx.post(server.url + "/v1/models/gated/predict", json={"instances": rows(0)}, timeout=5)
    assert not any('"level": "ERROR"' in line or " ERROR " in line for line in server.lines), server.lines


def _half_sent(port: int) -> socket.socket:
    """A connection that sent its headers and 10 of its 1,000 body bytes, then stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"POST /v1/models/slow/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"instanc")
    return sock


def _idle(port: int) -> socket.socket:
    """A keep-alive connection between requests."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _read_response(sock).startswith(b"HTTP/1.1 200")
    return sock


def _read_response(sock: socket.socket) -> bytes:
    """One whole response (head, then Content-Length bytes of body), however the server split its
    writes: what is left unread would look like a later answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed mid-body: {data!r}"
        body += chunk
    assert len(body) == length, f"more than one response: {data!r}"
    return head + b"\r\n\r\n" + body


def _read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


@pytest.mark.parametrize("command", list(SERVE_COMMANDS))
async def test_at_the_end_of_the_grace_running_work_is_stopped_and_answered_503(tmp_path: Path,
                                                                                 command: str) -> None:
    # each forward sleeps 50 ms and a chunk holds 4 rows: IG with 1,000 steps is 250 forwards, 12.5 s
    catalog = faulty.catalog(tmp_path, {"slow": {"sleep_s": 0.05}})
    server = ServerProcess({"MODELS": str(catalog), "SHUTDOWN_GRACE_S": str(GRACE_S), "MAX_BATCH_ROWS": "4",
                            "LOG_LEVEL": "WARNING"}, command=command)
    try:
        await asyncio.to_thread(server.wait_ready)
        long = {"instances": rows(1), "method": "integrated_gradients", "params": {"n_steps": 1000}}
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            tasks = [asyncio.create_task(client.post("/v1/models/slow/explain", json=long)) for _ in range(3)]
            deadline = time.monotonic() + 60
            while await _metric(client, "explainserve_batch_requests_count", "slow") < 1:
                assert time.monotonic() < deadline, "the computation never started"
                await asyncio.sleep(0.02)
            half, idle = _half_sent(server.port), _idle(server.port)
            signalled = time.monotonic()
            server.signal(signal.SIGTERM)
            answers = await asyncio.gather(*tasks)
            half_answer, idle_answer = await asyncio.gather(asyncio.to_thread(_read_all, half),
                                                            asyncio.to_thread(_read_all, idle))
        code = await asyncio.to_thread(server.wait, 60)
        exited = time.monotonic() - signalled
    finally:
        server.stop()
    assert code == 0, "\n".join(server.lines[-30:])
    assert exited < GRACE_S + EXIT_MARGIN_S, f"exited {exited:.1f} s after SIGTERM (grace {GRACE_S} s)"
    for response in answers:  # one was running, two were queued: all stopped, none computed for nobody
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) >= 1
    assert half_answer.startswith(b"HTTP/1.1 503"), half_answer[:200]  # its body will never be read
    assert idle_answer == b""  # closed without a word
    assert not any(" 500 " in line or "Traceback" in line for line in server.lines), server.lines[-30:]


async def test_slow_clients_hold_no_connection(tmp_path: Path) -> None:
    catalog = faulty.catalog(tmp_path, {"slow": {}})
    server = ServerProcess({"MODELS": str(catalog), "HEADER_TIMEOUT_S": "1", "BODY_TIMEOUT_S": "1",
                            "LOG_LEVEL": "WARNING"})
    try:
        await asyncio.to_thread(server.wait_ready)
        # headers that never end (slowloris): the connection is closed with 408
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        sock.sendall(b"POST /v1/models/slow/predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        answer = await asyncio.to_thread(_read_all, sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started >= 1.0 - 0.05
        # a body that never ends: 408 problem+json once BODY_TIMEOUT_S has passed
        answer = await asyncio.to_thread(_read_all, _half_sent(server.port))
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"application/problem+json" in answer and b"BODY_TIMEOUT_S=1" in answer
        # the service is not held up meanwhile
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.post("/v1/models/slow/predict", json={"instances": rows(1)})).status_code == 200
    finally:
        server.stop()
