"""The middleware Serve's proxies run (app/deploy/proxy.py), over real HTTP around an ASGI app that
answers as Ray's proxy does: its own plain-text refusals, nothing at all when the replica died."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from app.deploy.proxy import LOST_BODY, LOST_DETAIL, NOT_DEPLOYED, ProxyAnswers, middlewares
from tests.fixtures.threaded import ThreadedServer


async def _text(send: Send, status: int, text: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *headers]})
    await send({"type": "http.response.body", "body": text})


async def ray_like(scope: Scope, receive: Receive, send: Send) -> None:
    """What Ray's proxy sends on each path (after its request id middleware)."""
    rid = (b"x-request-id", b"rid-1")
    path = scope["path"]
    if path == "/ok":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), rid, rid, (b"x-replica", b"r1")]})
        await send({"type": "http.response.body", "body": b'{"a":', "more_body": True})
        await send({"type": "http.response.body", "body": b"1}"})
    elif path == "/busy":  # Ray: max_queued_requests reached (backpressure_config 429, retry_after_s 1)
        await _text(send, 429, b"Request dropped due to backpressure", [(b"retry-after", b"1"), rid])
    elif path == "/starting":  # Ray: no replica available yet
        await _text(send, 503, b"Deployment is unavailable", [rid])
    elif path == "/gone":  # Ray: no application at this path
        await _text(send, 404, b"Path '/gone' not found.", [rid])
    elif path == "/queue-full":  # the replica's own 429
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/problem+json"), (b"retry-after", b"1"), rid]})
        await send({"type": "http.response.body", "body": b'{"status":429,"detail":"queue is full"}'})
    elif path == "/died":  # Ray: the replica died mid-request; it sends nothing and returns
        return
    elif path in ("/body-lost", "/body-late"):  # the replica's 408: its body did not arrive in time
        if path == "/body-lost":  # the proxy received the whole body (the first replica took it)
            while (await receive()).get("more_body", False):
                pass
        await send({"type": "http.response.start", "status": 408,
                    "headers": [(b"content-type", b"application/problem+json"), (b"connection", b"close"), rid,
                                (b"x-replica", b"r2")]})
        await send({"type": "http.response.body", "body": b'{"status":408,"detail":"the body was not received"}'})
    elif path == "/readyz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def proxy() -> Iterator[httpx.Client]:
    with ThreadedServer(ProxyAnswers(ray_like), "/readyz", lifespan="off") as server, \
            httpx.Client(base_url=server.url, timeout=10, headers={"x-request-id": "rid-1"}) as client:
        yield client


def test_answers_of_replicas_pass_untouched_but_with_one_request_id(proxy: httpx.Client) -> None:
    response = proxy.get("/ok")
    assert response.status_code == 200 and response.json() == {"a": 1}
    assert response.headers.get_list("x-request-id") == ["rid-1"]
    assert response.headers["x-replica"] == "r1"
    queue_full = proxy.get("/queue-full")
    assert queue_full.status_code == 429 and queue_full.json() == {"status": 429, "detail": "queue is full"}


@pytest.mark.parametrize(("path", "status", "detail"), [
    ("/busy", 429, "Request dropped due to backpressure"),
    ("/starting", 503, "Deployment is unavailable"),
    ("/gone", 503, NOT_DEPLOYED),
    ("/died", 503, LOST_DETAIL),
])
def test_rays_own_answers_become_problems_with_retry_after(proxy: httpx.Client, path: str, status: int,
                                                           detail: str) -> None:
    response = proxy.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert response.headers.get_list("x-request-id") == ["rid-1"]
    assert response.json() == {"type": "about:blank", "title": response.reason_phrase, "status": status,
                               "detail": detail}


def test_the_callback_gives_starlette_middleware() -> None:
    from ray.serve._private.http_util import validate_http_proxy_callback_return

    (middleware,) = validate_http_proxy_callback_return(middlewares())
    assert middleware.cls is ProxyAnswers


def test_a_body_lost_inside_serve_is_503_with_retry_after_and_a_late_body_stays_408(proxy: httpx.Client) -> None:
    lost = proxy.post("/body-lost", json={"instances": [[1.0, 2.0]]})
    assert lost.status_code == 503 and lost.headers["retry-after"] == "1"
    assert lost.headers["content-type"] == "application/problem+json"
    assert lost.headers["x-replica"] == "r2" and lost.headers.get_list("x-request-id") == ["rid-1"]
    assert "connection" not in lost.headers  # the connection stays open for the request sent again
    assert lost.json() == {"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": LOST_BODY}
    # the replica answered before the proxy had the whole body: the client's own timeout
    late = proxy.post("/body-late", json={"instances": [[1.0, 2.0]]})
    assert late.status_code == 408 and late.json()["detail"] == "the body was not received"
