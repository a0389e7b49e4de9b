"""ASGI middleware: request ids (echoed or made) on every response, and per-request metrics."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Collection

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response
from app.context import InFlight, request_id_var
from app.errors import BadRequest, Forbidden, InternalError
from app.metrics import Metrics

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[\w.:/+=@-]{1,128}$")
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """32 hex digits, unique in this process (a random prefix and a counter): as unique as a
    uuid4 here, without a getrandom system call per request."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"
LABELS_KEY = "explainserve.labels"


class RequestContext:
    """Sets `X-Request-ID` and records request counts and latency by route, model, method, status.

    Model and method labels come from the request; names the service does not know are recorded
    as "unknown", so clients cannot grow the metrics without bound by inventing names.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, in_flight: InFlight,
                 models: Callable[[], Collection[str]] = tuple, methods: Collection[str] = ()):
        self.app = app
        self.metrics = metrics
        self.in_flight = in_flight
        self.models = models
        self.methods = methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _SAFE_ID.match(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        labels: dict[str, str] = {}
        scope[LABELS_KEY] = labels
        status = 500
        started = time.perf_counter()

        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        self.in_flight.count += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # A bug, not a client error: log it with the request id and answer problem+json
            # carrying X-Request-ID (Starlette's last-resort handler sits outside this middleware).
            if status_sent:
                raise
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await problem_response(InternalError("internal server error"))(scope, receive, send_with_id)
        finally:
            self.in_flight.count -= 1
            route = labels.get("route", "other")
            model = labels.get("model", "")
            if model and model not in self.models():
                model = "unknown"
            method = labels.get("method", "")
            if method and method not in self.methods:
                method = "unknown"
            self.metrics.requests.labels(route, model, method, str(status)).inc()
            if route != "other":
                self.metrics.latency.labels(route, model, "request").observe(time.perf_counter() - started)
            request_id_var.reset(token)


class CrossOriginGuard:
    """Without API keys, a web page from another origin must not spend the service's compute: a
    browser sends its page's `Origin` with every cross-origin POST (a simple multipart form needs
    no preflight, so CORS alone does not stop it). Such a request is refused (403) unless its
    origin is the service's own or listed in CORS_ORIGINS. Clients other than browsers send no
    `Origin` and are not affected; with API keys configured the key protects the service instead."""

    def __init__(self, app: ASGIApp, allowed: Collection[str]):
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._allowed(origin.rstrip("/"), scope, headers):
                refused = Forbidden("requests from web pages of other origins are refused: list the page's origin "
                                    "in CORS_ORIGINS, or configure API_KEYS")
                await problem_response(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, scope: Scope, headers: Headers) -> bool:
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        return origin == own or origin in self.allowed


class ProblemCORS(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered in problem+json like every error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = problem_response(BadRequest(bytes(response.body).decode()))
        for name, value in response.headers.items():
            if name not in ("content-type", "content-length"):
                refused.headers[name] = value
        return refused
