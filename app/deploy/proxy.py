"""Runs inside Ray Serve's HTTP proxies: the answers Ray makes itself keep the service's contract.

Serve's proxies load `middlewares()` through RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH (set by
`explainserve serve --ray` and the files in deploy/). Four things change, nothing else:

- a request whose replica stopped before answering (killed, crashed, its node lost) gets 503 with
  `Retry-After` instead of Ray's bare 500: the request is safe to send again, and another replica
  answers it (Ray only retries requests that no replica accepted yet);
- Ray's own refusals (429 when the proxy's queue is full, 503 while no replica is up) become
  `application/problem+json` with `Retry-After`, like the replicas' own; so does Ray's 404 for a
  path no application serves, as 503: the service is at "/", so that 404 means it is not deployed
  (being deployed, or deleted), and a client should come back rather than give up;
- a replica's 408 (its body did not arrive) for a request whose whole body this proxy had received
  becomes 503 with `Retry-After`: Serve lost the body, not the client. When a replica dies between
  accepting a request and Ray's router hearing that it did, the router sends the request to another
  replica, but the first had already taken the body from the proxy's queue (Ray 2.60's replicas
  fetch it as soon as they start); the second waits for a body that never comes until
  BODY_TIMEOUT_S. The client did nothing wrong and may send the request again;
- a response carries one `X-Request-ID`: Ray's proxy adds its id to the request, the replica
  echoes it, and the proxy would add it a second time.

Only Starlette and the standard library here: the proxies import nothing else of the service.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM = b"application/problem+json"
RETRY_AFTER = b"1"
LOST_DETAIL = "the replica serving this request stopped before answering; send it again"
NOT_DEPLOYED = "the service is not deployed on this cluster at the moment"
LOST_BODY = ("the request's body was lost between Serve's proxy and a replica (sent again after the first "
             "replica stopped); send the request again")
_RAYS = {404: 503, 429: 429, 503: 503}
"""Statuses of answers Ray makes itself (text, not problem+json) -> the status the client gets."""


def middlewares() -> list[Middleware]:
    """The callback Serve's proxies call (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH)."""
    return [Middleware(ProxyAnswers)]


def _problem(status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> tuple[Message, Message]:
    body = json.dumps({"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                       "detail": detail}).encode()
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
    if not any(k.lower() == b"retry-after" for k, _ in kept):
        kept.append((b"retry-after", RETRY_AFTER))
    kept += [(b"content-type", PROBLEM), (b"content-length", str(len(body)).encode())]
    return ({"type": "http.response.start", "status": status, "headers": kept},
            {"type": "http.response.body", "body": body, "more_body": False})


def _one_request_id(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    seen: set[bytes] = set()
    kept = []
    for key, value in headers:
        if key.lower() == b"x-request-id":
            if value in seen:
                continue
            seen.add(value)
        kept.append((key, value))
    return kept


class ProxyAnswers:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        held: Message | None = None  # the start of an answer to rewrite, until its body is in
        body = b""
        body_complete = False  # the client's whole body reached this proxy

        async def listen() -> Message:
            nonlocal body_complete
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_complete = True
            return message

        async def forward(message: Message) -> None:
            nonlocal started, held, body
            if message["type"] == "http.response.start":
                started = True
                headers = _one_request_id(list(message.get("headers", [])))
                message = {**message, "headers": headers}
                content_type = dict((k.lower(), v) for k, v in headers).get(b"content-type", b"")
                ours = content_type.startswith(PROBLEM)
                if (message["status"] in _RAYS and not ours) or (message["status"] == 408 and body_complete):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                body += message.get("body", b"")
                if message.get("more_body", False):
                    return
                if held["status"] == 408:
                    status, detail = 503, LOST_BODY
                    held["headers"] = [(k, v) for k, v in held["headers"] if k.lower() != b"connection"]
                else:
                    status = _RAYS[held["status"]]
                    detail = NOT_DEPLOYED if held["status"] == 404 else body.decode("utf-8", "replace").strip()
                start, end = _problem(status, detail or HTTPStatus(status).phrase, held["headers"])
                held = None
                await send(start)
                message = end
            await send(message)

        await self.app(scope, listen, forward)
        if not started:
            request_id = [(k, v) for k, v in scope.get("headers", []) if k.lower() == b"x-request-id"][:1]
            start, end = _problem(503, LOST_DETAIL, request_id)
            await send(start)
            await send(end)
