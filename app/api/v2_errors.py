"""Errors on the Open Inference Protocol's routes: the protocol's `{"error": "<message>"}` body
(application/json) with the status, and headers, that the v1 routes give as problem+json.

Installed over the problem+json handlers of `app.api.problems`: a request under `/v2` gets the
protocol's body, every other request goes to the handler installed before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api.problems import problem_body, validation_error
from app.errors import ServiceError
from app.schemas_v2 import V2Error

logger = logging.getLogger(__name__)

PREFIX = "/v2"
V2_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/V2Error"}}}
Handler = Callable[[Request, Exception], Awaitable[Response]]


def is_v2(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(problem_body({"error": message}), status_code=status, media_type="application/json",
                    headers=headers)


def v2_error(request: Request, exc: Exception) -> Response:
    """The protocol's error answer for a domain, validation or routing error."""
    if isinstance(exc, ServiceError):
        if exc.status >= 500 and exc.status not in (503, 504):
            logger.error("server fault on %s %s: %s", request.method, request.url.path, exc.detail)
        return error_response(exc.status, exc.detail, dict(exc.headers))
    if isinstance(exc, RequestValidationError):
        errors = [{"loc": tuple(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]
        return error_response(422, validation_error(errors).detail)
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
        detail = f"no route {request.method} {request.url.path} (see GET /openapi.json)"
    return error_response(exc.status_code, detail, dict(exc.headers or {}))


def _v2_first(fallback: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if is_v2(request.url.path):
            return v2_error(request, exc)
        return await fallback(request, exc)

    return handle


def install(app: FastAPI) -> None:
    """Call after `problems.install(app)`."""
    for kind in (ServiceError, RequestValidationError, StarletteHTTPException):
        fallback = app.exception_handlers[kind]
        app.add_exception_handler(kind, _v2_first(fallback))  # type: ignore[arg-type]


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying",
                                 "schema": {"type": "integer", "minimum": 1}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the protocol's error body (429 and 503 carry Retry-After)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"description": HTTPStatus(status).phrase, "model": V2Error}
        if status in (429, 503):
            responses[status]["headers"] = _RETRY_AFTER
    return responses
